"""Expectation evaluation, the JSONPath subset, JSON-safe observed values and the verdict rules."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from drillkit.checks import (
    CheckResult,
    build_validation,
    idempotency_key,
    parse_expectation,
    parse_json_path,
    resolve_json_path,
)
from drillkit.checks.results import json_safe
from drillkit.exceptions import InvalidInputError
from drillkit.findings import Finding

pytestmark = pytest.mark.unit


def judge(expect: dict[str, Any], value: Any) -> str | None:
    return parse_expectation(expect, allow_rows=True).check_value(value)


@pytest.mark.parametrize(
    ("expect", "value"),
    [
        ({"gte": 1000}, 1000),
        ({"gte": 1000}, Decimal("1000.0")),
        ({"gt": 1, "lt": 2}, 1.5),
        ({"eq": 3}, Decimal("3")),
        ({"ne": 3}, 4),
        ({"between": [1, 10]}, 10),
        ({"between": [0.5, 1.5]}, Decimal("0.5")),
        ({"equals": "ok"}, "ok"),
        ({"equals": 5}, Decimal("5.00")),
        ({"equals": True}, True),
        ({"equals": None}, None),
        ({"equals": "2026-11-21T08:00:00Z"}, datetime(2026, 11, 21, 8, tzinfo=UTC)),
        ({"regex": "^v1[.]"}, "v1.2.3"),
        (
            {"regex": "^2026-11-21T"},
            datetime(2026, 11, 21, 10, tzinfo=timezone(timedelta(hours=2))),
        ),
        ({"regex": "^42$"}, 42),
    ],
)
def test_values_that_meet_the_expectation(expect: dict[str, Any], value: Any) -> None:
    assert judge(expect, value) is None


@pytest.mark.parametrize(
    ("expect", "value", "why"),
    [
        ({"gte": 1000}, 999, "observed 999, expected >= 1000"),
        ({"gt": 1, "lt": 2}, 2, "observed 2, expected < 2"),
        ({"gte": 1}, None, "observed NULL is not a number"),
        ({"gte": 1}, "1000", "observed '1000' is not a number"),
        ({"gte": 1}, True, "observed True is not a number"),
        ({"between": [1, 10]}, 11, "expected between 1 and 10"),
        ({"equals": "ok"}, "OK", "observed 'OK', expected == 'ok'"),
        ({"equals": 1}, True, "expected == 1"),
        ({"equals": True}, 1, "expected == True"),
        ({"equals": None}, 0, "expected is NULL"),
        ({"equals": 5}, "5", "observed '5', expected == 5"),
        ({"regex": "^ok$"}, "not ok", "does not match /^ok$/"),
        ({"regex": "x"}, None, "observed NULL"),
    ],
)
def test_values_that_miss_say_why(expect: dict[str, Any], value: Any, why: str) -> None:
    result = judge(expect, value)
    assert result is not None and why in result


def test_rows_expectation() -> None:
    expectation = parse_expectation({"rows": 0}, allow_rows=True)
    assert not expectation.judges_value
    assert expectation.check_rows(0) is None
    assert expectation.check_rows(2) == "query returned 2 rows, expected 0"


def test_describe_is_a_human_sentence() -> None:
    assert parse_expectation({"gte": 1000}, allow_rows=False).describe() == ">= 1000"
    assert parse_expectation({"gt": 0, "lte": 1.5}, allow_rows=False).describe() == "> 0 and <= 1.5"
    assert parse_expectation({"between": [1, 2]}, allow_rows=False).describe() == "between 1 and 2"
    assert parse_expectation({"equals": None}, allow_rows=False).describe() == "is NULL"
    assert parse_expectation({"regex": "^a", "rows": 1}, allow_rows=True).describe() == (
        "matches /^a/; rows == 1"
    )


def test_rows_is_refused_where_there_are_no_rows() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_expectation({"rows": 1}, allow_rows=False)
    assert info.value.details == {"field": "rows"}


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.a", ("a",)),
        ("$.data.items[0].id", ("data", "items", 0, "id")),
        ('$["odd key"][12]', ("odd key", 12)),
        ("$['x-y'].z_1", ("x-y", "z_1")),
    ],
)
def test_json_path_subset(path: str, steps: tuple[Any, ...]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["a.b", "$.", "$..a", "$[-1]", "$[*]", "$.a[?(@.x)]", "$['a]"])
def test_json_path_outside_the_subset_is_refused(path: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_json_path(path)


def test_resolve_json_path_and_where_it_stops() -> None:
    document = json.loads('{"data": {"items": [{"id": 7}], "odd key": null}}')
    assert resolve_json_path(document, parse_json_path("$.data.items[0].id")) == 7
    assert resolve_json_path(document, parse_json_path('$.data["odd key"]')) is None
    assert resolve_json_path(document, ()) == document
    with pytest.raises(LookupError, match=r"no item \[1\] at \$\.data\.items"):
        resolve_json_path(document, parse_json_path("$.data.items[1]"))
    with pytest.raises(LookupError, match=r"no key 'x' at \$\.data\.items\[0\]"):
        resolve_json_path(document, parse_json_path("$.data.items[0].x"))
    with pytest.raises(LookupError):
        resolve_json_path(document, parse_json_path("$.data[0]"))


def test_idempotency_key_is_deterministic_per_drill_and_check() -> None:
    key = idempotency_key("drill-1", "create-order")
    assert key == idempotency_key("drill-1", "create-order")
    assert key != idempotency_key("drill-1", "cancel-order")
    assert key != idempotency_key("drill-2", "create-order")
    assert uuid.UUID(key).version == 5


def test_json_safe_observed_values() -> None:
    value = {
        "when": datetime(2026, 11, 21, 10, tzinfo=timezone(timedelta(hours=2))),
        "count": Decimal("1000"),
        "ratio": Decimal("0.25"),
        "id": uuid.UUID(int=1),
        "raw": b"\x01\xff",
        "long": "x" * 5000,
        "nested": [(1, 2)],
    }
    safe = json_safe(value)
    json.dumps(safe)
    assert safe["when"] == "2026-11-21T08:00:00Z"
    assert safe["count"] == 1000 and isinstance(safe["count"], int)
    assert safe["ratio"] == 0.25
    assert safe["id"] == "00000000-0000-0000-0000-000000000001"
    assert safe["raw"] == "\\x01ff"
    assert len(safe["long"]) < 1100 and safe["long"].endswith("(5000 characters)")
    assert safe["nested"] == [[1, 2]]


def result(status: str, *, warmup: bool = False) -> CheckResult:
    return CheckResult(
        name=f"c-{status}",
        kind="sql",
        target="db",
        status=status,  # type: ignore[arg-type]
        latency_ms=1.0,
        observed=None,
        expectation="",
        detail="",
        warmup=warmup,
    )


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        (["passed", "passed"], "passed"),
        (["passed", "skipped"], "passed"),
        (["passed", "failed"], "failed"),
        (["failed", "error"], "error"),
        (["passed", "error"], "error"),
    ],
)
def test_overall_status(statuses: list[str], overall: str) -> None:
    document = build_validation(results=[result(s) for s in statuses], warmup=[], findings=[])
    assert document["status"] == overall
    assert document["schema"] == "drillkit.validation/v1"


@pytest.mark.parametrize("statuses", [[], ["skipped"]])
def test_nothing_ran_is_an_error_never_a_pass(statuses: list[str]) -> None:
    document = build_validation(
        results=[result(s) for s in statuses], warmup=[result("passed", warmup=True)], findings=[]
    )
    assert document["status"] == "error"
    assert [f["code"] for f in document["findings"]] == ["NO_CHECKS_RAN"]


def test_findings_are_deduplicated_per_code_and_subject() -> None:
    finding = Finding(code="SANDBOX_UNREACHABLE", message="down", subject="db")
    document = build_validation(
        results=[result("error")], warmup=[], findings=[finding, finding, finding]
    )
    assert len(document["findings"]) == 1
