"""Strict parsing of recovery targets and durations.

A target time ends up in PostgreSQL's configuration, so only a timestamp's exact shape is accepted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from drillkit.exceptions import InvalidInputError

_TARGET_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"\s?(Z|UTC|[+-](?:0\d|1[0-5])(?::?[0-5]\d)?)$"
)
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_target_time(value: str | datetime) -> datetime:
    """Parse a recovery target into an aware UTC datetime.

    Accepts ``2026-11-21T08:00:00Z``, ``2026-11-21 08:00:00.123+02:00`` and aware datetimes.
    Anything else (a naive time, words, SQL) raises InvalidInputError with code TARGET_INVALID.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInputError(
                f"target time {value.isoformat()} has no time zone: add an offset such as Z or "
                "+02:00 so the recovery point is unambiguous",
                code="TARGET_INVALID",
            )
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise _out_of_range(value.isoformat()) from exc
    text = str(value).strip()
    match = _TARGET_RE.match(text)
    if not match:
        raise InvalidInputError(
            f"target time {value!r} is not a timestamp: use ISO 8601 with a time zone, "
            "e.g. 2026-11-21T08:00:00Z or 2026-11-21 08:00:00+02:00",
            code="TARGET_INVALID",
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone in ("Z", "UTC"):
        offset = timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    try:
        naive = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError as exc:
        raise InvalidInputError(
            f"target time {value!r} is not a valid date or time ({exc})", code="TARGET_INVALID"
        ) from exc
    try:
        return (naive - offset).replace(tzinfo=UTC)
    except OverflowError as exc:
        raise _out_of_range(repr(value)) from exc


def _out_of_range(shown: str) -> InvalidInputError:
    return InvalidInputError(
        f"target time {shown} is outside the calendar once converted to UTC (years 1-9999); "
        "give a time within it",
        code="TARGET_INVALID",
    )


def format_pg_timestamp(value: datetime) -> str:
    """Render an aware datetime in the one format written into recovery settings."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def parse_duration(value: str | int | float, *, field: str = "duration") -> timedelta:
    """Parse ``15m``, ``90s``, ``2h``, ``1d`` or a number of seconds."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{field}: {value!r} is not a duration; use e.g. 15m, 90s, 2h")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInputError(f"{field}: {value!r} is not a finite number of seconds")
        if value < 0:
            raise InvalidInputError(f"{field}: {value} is negative; durations are >= 0")
        try:
            return timedelta(seconds=value)
        except OverflowError as exc:
            raise InvalidInputError(f"{field}: {value!r} is too large for a duration") from exc
    match = _DURATION_RE.match(str(value).strip())
    if not match:
        raise InvalidInputError(
            f"{field}: {value!r} is not a duration; use a number and a unit: ms, s, m, h, d or w "
            "(e.g. 15m)"
        )
    try:
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError as exc:
        raise InvalidInputError(f"{field}: {value!r} is too large for a duration") from exc


def human_span(seconds: float) -> str:
    """A duration a person reads at a glance: ``3.25 s``, ``12.5 min``, ``2.0 h``, ``3.1 days``."""
    size = abs(seconds)
    if size < 120:
        return f"{round(seconds, 3):g} s"
    if size < 7200:
        return f"{seconds / 60:.1f} min"
    if size < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def utcnow() -> datetime:
    return datetime.now(UTC)
