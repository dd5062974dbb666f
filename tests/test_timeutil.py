"""Unit tests of drillkit.timeutil: strict recovery targets, PostgreSQL formatting, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from drillkit.exceptions import InvalidInputError
from drillkit.timeutil import (
    format_pg_timestamp,
    isoformat,
    parse_duration,
    parse_iso,
    parse_target_time,
)

pytestmark = pytest.mark.unit

EIGHT = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T08:00:00Z", EIGHT),
        ("2026-11-21 08:00:00Z", EIGHT),
        ("2026-11-21T08:00Z", EIGHT),
        ("2026-11-21T08:00:00 UTC", EIGHT),
        ("2026-11-21T10:00:00+02:00", EIGHT),
        ("2026-11-21 10:00:00+0200", EIGHT),
        ("2026-11-21 10:00:00+02", EIGHT),
        ("2026-11-21T02:30:00-05:30", EIGHT),
        ("2026-11-21 08:00:00.123+00:00", EIGHT + timedelta(microseconds=123000)),
        ("2026-11-21T08:00:00.000001Z", EIGHT + timedelta(microseconds=1)),
        ("  2026-11-21T08:00:00Z\n", EIGHT),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse_target_time_accepts_timestamps_with_a_zone(text: str, expected: datetime) -> None:
    parsed = parse_target_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21T08:00:00",  # naive: which 08:00?
        "2026-11-21 08:00:00.5",
        "2026-11-21",
        "now",
        "yesterday",
        "today 08:00",
        "epoch",
        "infinity",
        "",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T08:60:00Z",
        "2026-11-21T08:00:00Z'; DROP TABLE orders; --",
        "2026-11-21T08:00:00Z'; DROP",
        "2026-11-21 08:00:00+00'\nrestore_command = 'rm -rf /",
        "'2026-11-21T08:00:00Z'",
        "2026-11-21T08:00:00 CET",
        "2026-11-21T08:00:00 Europe/Paris",
        "2026-11-21T08:00:00z",
        "2026-11-21T08:00:00.1234567Z",
        "1700000000",
        "2026-11-21T08:00:00Z\x00",
    ],
)
def test_parse_target_time_rejects_everything_else(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_target_time(text)
    assert info.value.code == "TARGET_INVALID"
    assert "e.g." in str(info.value) or "valid date" in str(info.value)


@pytest.mark.parametrize(
    "text", ["2026-11-21T08:00:00+25:00", "2026-11-21T08:00:00+05:99", "2026-11-21T08:00:00+99"]
)
def test_parse_target_time_rejects_impossible_offsets(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_target_time(text)
    assert info.value.code == "TARGET_INVALID"


def test_parse_target_time_takes_aware_datetimes() -> None:
    paris = timezone(timedelta(hours=1))
    parsed = parse_target_time(datetime(2026, 11, 21, 9, 0, tzinfo=paris))
    assert parsed == EIGHT
    assert parsed.tzinfo is UTC


def test_parse_target_time_refuses_naive_datetimes() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_target_time(datetime(2026, 11, 21, 8, 0))
    assert info.value.code == "TARGET_INVALID"
    assert "time zone" in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (EIGHT, "2026-11-21 08:00:00.000000+00"),
        (EIGHT + timedelta(microseconds=7), "2026-11-21 08:00:00.000007+00"),
        (
            datetime(2026, 11, 21, 10, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-21 08:00:00.000000+00",
        ),
    ],
)
def test_format_pg_timestamp_is_utc_with_microseconds(value: datetime, text: str) -> None:
    assert format_pg_timestamp(value) == text
    assert parse_target_time(text) == value  # what drillkit writes, it reads back


def test_isoformat_and_parse_iso_round_trip_in_utc() -> None:
    assert isoformat(None) is None
    assert parse_iso(None) is None
    moment = datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    text = isoformat(moment)
    assert text == "2026-11-21T08:00:00.250000Z"
    assert parse_iso(text) == moment
    assert parse_iso(text).tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        (" 5 m ", timedelta(minutes=5)),
        (0, timedelta(0)),
        (30, timedelta(seconds=30)),
        (2.5, timedelta(seconds=2.5)),
    ],
)
def test_parse_duration(value: str | float, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["15", "15 minutes", "-5m", "m", "1h30m", "", -1, True, "PT15M"])
def test_parse_duration_rejects_with_the_field_name(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_duration(value, field="rpo")  # type: ignore[arg-type]
    assert str(info.value).startswith("rpo: ")
