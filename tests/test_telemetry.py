"""Telemetry events and metric names: pure, no Airflow."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from drillkit.telemetry import (
    LOGGER_NAME,
    emit,
    report_metrics,
    stat_slug,
    timeline,
    transition_event,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def _event(name: str, payload: dict, seconds: float, tier: str | None = "primary") -> dict:
    return transition_event(
        name,
        payload,
        drill_id="d-1",
        dag_id="drill_orders",
        run_id="manual__1",
        tier=tier,
        started_at=T0,
        at=T0 + timedelta(seconds=seconds),
    )


def test_an_event_names_the_run_the_tier_and_keeps_only_figures():
    manifest = {
        "context": {"value": "v1.secret-bearing-context"},
        "services": {"db": {"resolved_by": "provisioned"}, "api": {"resolved_by": "override"}},
    }
    event = _event("routed", manifest, 1.5)
    assert event == {
        "schema": "drillkit.event/v1",
        "event": "routed",
        "drill_id": "d-1",
        "dag_id": "drill_orders",
        "run_id": "manual__1",
        "tier": "primary",
        "at": "2026-11-21T06:00:01.500000Z",
        "started_at": "2026-11-21T06:00:00Z",
        "duration_seconds": 1.5,
        "figures": {"services": 2, "resolved_by": ["override", "provisioned"]},
    }
    assert "secret-bearing" not in json.dumps(event)


def test_unknown_transitions_are_refused():
    with pytest.raises(ValueError, match="unknown transition 'restored'"):
        _event("restored", {}, 1)


def test_emit_logs_one_json_line_with_the_event_attached():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(f"{LOGGER_NAME}.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    event = _event("checked", {"status": "passed", "results": [{"status": "passed"}]}, 2)
    emit(event, logger)
    logger.removeHandler(handler)
    assert json.loads(records[0].getMessage()) == event
    assert records[0].drillkit_event == event


def test_timeline_orders_by_time_then_transition_and_drops_missing_events():
    gate = _event("gate", {"decision": "fallback"}, 3)
    fallback = _event("fallback", {"decision": "fallback"}, 3)
    selected = _event("selected", {"backup_id": "b1"}, 1)
    assert [e["event"] for e in timeline([fallback, None, gate, selected])] == [
        "selected",
        "gate",
        "fallback",
    ]


def test_report_metrics_count_the_verdict_fallbacks_and_time_rto_and_data_loss():
    report = {
        "drill": "orders-eu",
        "dag_id": "drill_orders_eu",
        "verdict": "COULD NOT VERIFY",
        "tiers": [{"decision": "fallback"}, {"decision": "fallback"}, {"decision": "exhausted"}],
        "rto_seconds": 1.25,
        "data_loss_seconds": None,
    }
    metrics = {(m.kind, m.name): m.value for m in report_metrics(report)}
    assert metrics == {
        ("incr", "drillkit.verdict.orders-eu.could_not_verify"): 1,
        ("incr", "drillkit.fallback.orders-eu"): 2,
        ("timing", "drillkit.rto.orders-eu"): 1250.0,
    }


@pytest.mark.parametrize(
    ("text", "slug"),
    [("PASS", "pass"), ("DRY RUN", "dry_run"), ("a.b/c", "a_b_c"), ("", "unknown")],
)
def test_stat_slug(text, slug):
    assert stat_slug(text) == slug


def test_events_carry_no_password_even_when_a_reason_quotes_one():
    event = _event("gate", {"reason": "cannot reach postgresql://app:pw-123@db/app"}, 1)
    assert event["figures"]["reason"] == "cannot reach postgresql://app:***@db/app"
