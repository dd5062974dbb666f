"""PITR checks against a real PostgreSQL: ground truth and marker, each failing on either side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from drillkit.checks import run_checks
from drillkit.exceptions import InvalidInputError

pytestmark = pytest.mark.integration

# The restored table as it should be at the target 2026-11-21T08:00:00Z: rows up to id 41 and
# created_at 07:59:30 were committed before it; id 42 (08:00:30) after it.
MAX_CREATED = "2026-11-21T07:59:30Z"


@pytest.fixture(scope="module")
def restored_db(pg: Any) -> str:
    database = pg.create_database("pitr")
    pg.execute(
        "CREATE SCHEMA shop; "
        "CREATE TABLE shop.orders (id bigint PRIMARY KEY, created_at timestamptz NOT NULL); "
        "INSERT INTO shop.orders SELECT g, timestamptz '2026-11-21 07:59:30+00' "
        "  - (41 - g) * interval '1 second' FROM generate_series(1, 41) g; "
        "CREATE TABLE events (ref text PRIMARY KEY, at timestamp NOT NULL); "
        "INSERT INTO events VALUES ('evt-41', '2026-11-21 07:59:30'); "
        "CREATE TABLE empty_table (created_at timestamptz)",
        database,
    )
    return database


@pytest.fixture
def manifest(pg: Any, restored_db: str, make_manifest: Callable[..., Any], pg_service: Any) -> Any:
    return make_manifest({"orders-db": pg_service(pg.endpoint(restored_db))})


def truth(name: str, **values: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "pitr",
        "target": "orders-db",
        "truth": {"table": "shop.orders", "id_column": "id", **values},
    }


def marker(
    name: str, query: str = "select max(created_at) from shop.orders", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "kind": "pitr", "target": "orders-db", "marker_query": query, **extra}


def one(document: dict[str, Any]) -> dict[str, Any]:
    [result] = document["results"]
    return result


def test_ground_truth_passes_when_before_is_there_and_after_is_not(manifest: Any) -> None:
    document = run_checks([truth("rp", before=41, after=42)], manifest)
    result = one(document)
    assert result["status"] == "passed", result
    assert result["observed"] == {"before_present": True, "after_present": False}
    assert result["expectation"] == "id=41 present; id=42 absent"
    assert document["status"] == "passed"


def test_ground_truth_fails_when_the_restore_stopped_short(manifest: Any) -> None:
    document = run_checks([truth("rp", before=43, after=44)], manifest)
    result = one(document)
    assert result["status"] == "failed"
    assert result["observed"] == {"before_present": False, "after_present": False}
    assert "id=43, committed before the target, is missing" in result["detail"]
    assert "stopped short" in result["detail"]
    assert [f["code"] for f in document["findings"]] == ["RECOVERY_POINT_MISMATCH"]
    assert document["status"] == "failed"


def test_ground_truth_fails_when_the_restore_went_past_the_target(manifest: Any) -> None:
    document = run_checks([truth("rp", before=40, after=41)], manifest)
    result = one(document)
    assert result["status"] == "failed"
    assert result["observed"] == {"before_present": True, "after_present": True}
    assert "id=41, committed after the target, is present" in result["detail"]
    assert "replayed past" in result["detail"]


def test_string_ids_compare_with_the_column_type(manifest: Any) -> None:
    check = truth("rp", before="41", after="42")
    assert one(run_checks([check], manifest))["status"] == "passed"
    check = {
        "name": "rp-text",
        "kind": "pitr",
        "target": "orders-db",
        "truth": {"table": "events", "id_column": "ref", "before": "evt-41", "after": "evt-42"},
    }
    assert one(run_checks([check], manifest))["status"] == "passed"


def test_without_after_only_one_side_is_proven_and_said(manifest: Any) -> None:
    document = run_checks([truth("rp", before=41)], manifest)
    result = one(document)
    assert result["status"] == "passed"
    assert "after side was not checked" in result["detail"]
    assert [(f["code"], f["severity"]) for f in document["findings"]] == [
        ("RECOVERY_POINT_ONE_SIDED", "warning")
    ]
    assert document["status"] == "passed"


def test_ground_truth_ids_given_at_run_time(manifest: Any) -> None:
    check = truth("rp")
    assert one(run_checks([check], manifest, params={"before": 41, "after": 42}))["status"] == (
        "passed"
    )
    per_check = {"checks": {"rp": {"before": 41, "after": 41}}}
    assert one(run_checks([check], manifest, params=per_check))["status"] == "failed"


def test_marker_within_target_and_tolerance_passes(manifest: Any) -> None:
    check = marker("rp", target_time="2026-11-21T08:00:00Z", tolerance="1m")
    result = one(run_checks([check], manifest))
    assert result["status"] == "passed", result
    assert result["observed"] == MAX_CREATED
    assert result["expectation"] == "marker <= 2026-11-21T08:00:00Z and >= 2026-11-21T07:59:00Z"


def test_marker_after_the_target_fails(manifest: Any) -> None:
    document = run_checks([marker("rp", target_time="2026-11-21T07:59:00Z")], manifest)
    result = one(document)
    assert result["status"] == "failed"
    assert "is 30 s after the target 2026-11-21T07:59:00Z" in result["detail"]
    assert "replayed past" in result["detail"]
    assert [f["code"] for f in document["findings"]] == ["RECOVERY_POINT_MISMATCH"]


def test_marker_too_far_before_the_target_fails(manifest: Any) -> None:
    check = marker("rp", target_time="2026-11-21T09:00:00Z", tolerance="5m")
    result = one(run_checks([check], manifest))
    assert result["status"] == "failed"
    assert "is 60.5 min before the target" in result["detail"]
    assert "more than the tolerance of 5.0 min" in result["detail"]
    assert "stopped short" in result["detail"]


def test_marker_target_time_given_at_run_time(manifest: Any) -> None:
    check = marker("rp", tolerance="1m")
    params = {"target_time": "2026-11-21T10:00:00+02:00"}
    assert one(run_checks([check], manifest, params=params))["status"] == "passed"
    params = {"target_time": "2026-11-21T07:00:00Z"}
    assert one(run_checks([check], manifest, params=params))["status"] == "failed"


def test_marker_null_fails_and_a_naive_timestamp_is_an_error(manifest: Any) -> None:
    empty = marker("empty", "select max(created_at) from empty_table", target_time=MAX_CREATED)
    naive = marker("naive", "select max(at) from events", target_time=MAX_CREATED)
    document = run_checks([empty, naive], manifest)
    results = {r["name"]: r for r in document["results"]}
    assert results["empty"]["status"] == "failed"
    assert "NULL" in results["empty"]["detail"]
    assert results["naive"]["status"] == "error"
    assert "timestamptz" in results["naive"]["detail"]


@pytest.mark.parametrize(
    ("check", "params", "fragment"),
    [
        (truth("rp"), None, "has no 'before' id"),
        (marker("rp"), None, "has no target_time"),
        (
            marker("rp", target_time="2026-11-21T08:00:00Z"),
            {"target_time": "2026-11-21T09:00:00Z"},
            "disagrees with check 'rp'",
        ),
        (truth("rp", before=1), {"checks": {"rp": {"before": 2}}}, "params.checks.rp.before"),
        (truth("rp", before=1), {"target": "x"}, "unknown key(s) ['target']"),
        (truth("rp", before=1), {"checks": {"other": {}}}, "not a pitr check of this drill"),
        (truth("rp", before=1), {"checks": {"rp": {"target_time": "x"}}}, "do not apply"),
        (marker("rp"), {"target_time": "last tuesday"}, "params.target_time"),
    ],
)
def test_bad_run_time_inputs_are_refused_before_any_io(
    check: dict[str, Any], params: Any, fragment: str, make_manifest: Callable[..., Any]
) -> None:
    # An empty manifest: a refusal that came after any I/O would look different.
    with pytest.raises(InvalidInputError) as info:
        run_checks([check], make_manifest({}), params=params)
    assert fragment in str(info.value)
