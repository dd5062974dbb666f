"""The runner: warm-up, verdict rules, manifest refusals, concurrency bound and the run deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from drillkit.checks import DEFAULT_CONCURRENCY, parse_checks, run_checks
from drillkit.exceptions import InvalidInputError
from drillkit.timeutil import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def api(http_server: Callable[..., Any], routes: Any) -> Any:
    return http_server(
        {
            "/warm": routes.json({"ok": True}),
            "/health": routes.json({"ok": True}),
            "/slow": routes.json({"ok": True}, delay=0.3),
            "/broken": routes.json({}, status=503),
        }
    )


@pytest.fixture
def manifest(api: Any, make_manifest: Callable[..., Any]) -> dict[str, Any]:
    return make_manifest(
        {"orders-api": {"kind": "http", "resolved_by": "override", "endpoint": {"url": api.url}}}
    )


def get(name: str, path: str, **extra: Any) -> dict[str, Any]:
    base = {"name": name, "kind": "http", "target": "orders-api", "path": path}
    return base | {"expect": {"status": 200}} | extra


def codes(document: dict[str, Any]) -> list[str]:
    return [f["code"] for f in document["findings"]]


def test_warmup_runs_first_and_is_reported_apart(api: Any, manifest: Any) -> None:
    document = run_checks([get("health", "/health"), get("warm", "/warm", warmup=True)], manifest)
    assert [r.path for r in api.requests] == ["/warm", "/health"]
    assert [r["name"] for r in document["results"]] == ["health"]
    assert [(r["name"], r["warmup"]) for r in document["warmup"]] == [("warm", True)]
    assert document["results"][0]["warmup"] is False
    assert document["status"] == "passed"


def test_a_failing_or_slow_warmup_does_not_decide_the_verdict(api: Any, manifest: Any) -> None:
    document = run_checks(
        [
            get("cold", "/broken", warmup=True),
            get("cold-slow", "/slow", warmup=True, timeout="0.1s"),
            get("health", "/health"),
        ],
        manifest,
    )
    assert [r["status"] for r in document["warmup"]] == ["failed", "error"]
    assert document["status"] == "passed"
    assert [(f["code"], f["severity"]) for f in document["findings"]] == [
        ("CHECK_TIMED_OUT", "warning")
    ]


def test_an_unreachable_warmup_still_makes_the_run_an_error(
    api: Any, manifest: Any, closed_port: int
) -> None:
    manifest["services"]["cache"] = {
        "kind": "tcp",
        "resolved_by": "override",
        "endpoint": {"host": "127.0.0.1", "port": closed_port},
    }
    document = run_checks(
        [
            {"name": "cache-warm", "kind": "tcp", "target": "cache", "warmup": True},
            get("health", "/health"),
        ],
        manifest,
    )
    assert document["results"][0]["status"] == "passed"
    assert codes(document) == ["SANDBOX_UNREACHABLE"]
    assert document["findings"][0]["severity"] == "error"
    assert document["status"] == "error"


@pytest.mark.parametrize("only_warmup", [False, True])
def test_no_timed_checks_is_an_error(api: Any, manifest: Any, only_warmup: bool) -> None:
    checks = [get("warm", "/warm", warmup=True)] if only_warmup else []
    document = run_checks(checks, manifest)
    assert document["results"] == []
    assert document["status"] == "error"
    assert codes(document) == ["NO_CHECKS_RAN"]


def test_target_not_in_manifest_is_refused_without_any_io(api: Any, manifest: Any) -> None:
    document = run_checks(
        [
            get("elsewhere", "/health", target="billing-api"),
            {
                "name": "db",
                "kind": "sql",
                "target": "orders",
                "query": "select 1",
                "expect": {"equals": 1},
            },
        ],
        manifest,
    )
    assert [r["status"] for r in document["results"]] == ["error", "error"]
    assert all(r["latency_ms"] is None for r in document["results"])
    assert [(f["code"], f["subject"]) for f in document["findings"]] == [
        ("TARGET_NOT_IN_MANIFEST", "billing-api"),
        ("TARGET_NOT_IN_MANIFEST", "orders"),
    ]
    assert "orders-api" in document["findings"][0]["message"]
    assert document["status"] == "error"
    assert api.requests == []


def test_concurrency_bound_is_respected(api: Any, manifest: Any) -> None:
    checks = [get(f"slow-{i}", "/slow") for i in range(6)]
    started = time.monotonic()
    bounded = run_checks(checks, manifest, concurrency=2)
    bounded_seconds = time.monotonic() - started
    assert bounded["status"] == "passed"
    assert api.max_in_flight == 2
    assert bounded_seconds >= 0.85  # three waves of 0.3 s

    api.max_in_flight = 0
    started = time.monotonic()
    unbounded = run_checks(checks, manifest)
    assert unbounded["status"] == "passed"
    assert api.max_in_flight == 6
    assert time.monotonic() - started < 0.85
    assert DEFAULT_CONCURRENCY >= 200


def test_run_deadline_stops_everything_and_nothing_passes_late(api: Any, manifest: Any) -> None:
    checks = [get(f"slow-{i}", "/slow", timeout="5s") for i in range(4)]
    started = time.monotonic()
    document = run_checks(
        checks, manifest, concurrency=1, deadline=utcnow() + timedelta(seconds=0.45)
    )
    assert time.monotonic() - started < 1.2
    statuses = [r["status"] for r in document["results"]]
    assert statuses[0] == "passed"
    assert statuses[1:] == ["error", "error", "error"]
    details = [r["detail"] for r in document["results"][1:]]
    assert details[0].startswith("timed out after")
    assert "not started: the run's deadline had passed" in details[-1]
    assert document["status"] == "error"


def test_parsed_specs_are_accepted_and_bad_arguments_refused(api: Any, manifest: Any) -> None:
    specs = parse_checks([get("health", "/health")])
    assert run_checks(specs, manifest)["status"] == "passed"
    with pytest.raises(InvalidInputError, match="concurrency"):
        run_checks(specs, manifest, concurrency=0)
    with pytest.raises(InvalidInputError, match="routing_manifest/v1"):
        run_checks(specs, {"services": manifest["services"]})
    with pytest.raises(InvalidInputError, match=r"checks\[0\]\.expect"):
        run_checks(
            [{"name": "x", "kind": "sql", "target": "orders-api", "query": "select 1"}], manifest
        )
    assert len(api.requests) == 1
