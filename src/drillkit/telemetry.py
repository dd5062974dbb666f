"""Drill telemetry: one structured event per transition of a run, and the metrics a report yields.

Pure and Airflow-free: the adapter (``drillkit.operators.telemetry``) adds the run's identity,
pushes events to XCom for the report's timeline and sends metrics to Airflow's Stats.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drillkit.redaction import redact
from drillkit.timeutil import isoformat, parse_iso, utcnow

SCHEMA = "drillkit.event/v1"
LOGGER_NAME = "drillkit.telemetry"
SELECTED, PROVISIONED, ROUTED, CHECKED, GATE, FALLBACK, TEARDOWN, VERDICT = (
    "selected",
    "provisioned",
    "routed",
    "checked",
    "gate",
    "fallback",
    "teardown",
    "verdict",
)
TRANSITIONS = (SELECTED, PROVISIONED, ROUTED, CHECKED, GATE, FALLBACK, TEARDOWN, VERDICT)
METRIC_PREFIX = "drillkit"
_SLUG_RE = re.compile(r"[^a-z0-9_-]+")

log = logging.getLogger(LOGGER_NAME)


def _figures(name: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers and ids of a transition worth a log line and a timeline row."""
    if name == SELECTED:
        target = payload.get("target") or {}
        return {
            "backup_id": payload.get("backup_id"),
            "policy": payload.get("policy"),
            "target": target.get("requested"),
            "recovery_point": payload.get("recovery_point"),
            "expected_data_loss_seconds": payload.get("expected_data_loss_seconds"),
        }
    if name == PROVISIONED:
        return {
            "sandbox_id": payload.get("id"),
            "backend": payload.get("backend"),
            "restore_seconds": payload.get("restore_seconds"),
            "achieved_recovery_point": payload.get("achieved_recovery_point"),
            "dry_run": bool(payload.get("dry_run")),
        }
    if name == ROUTED:
        services = payload.get("services") or {}
        return {
            "services": len(services),
            "resolved_by": sorted({str(s.get("resolved_by")) for s in services.values()}),
        }
    if name == CHECKED:
        results = payload.get("results") or []
        counts: dict[str, int] = {}
        for result in results:
            status = str(result.get("status"))
            counts[status] = counts.get(status, 0) + 1
        return {
            "status": payload.get("status"),
            "checks": counts,
            "findings": [f.get("code") for f in payload.get("findings") or []],
        }
    if name in (GATE, FALLBACK):
        return {
            "status": payload.get("status"),
            "decision": payload.get("decision"),
            "backup_id": payload.get("backup_id"),
            "reason": payload.get("reason"),
        }
    if name == TEARDOWN:
        return {
            "sandbox_id": payload.get("id"),
            "removed": payload.get("removed"),
            "kept_until": payload.get("kept_until"),
        }
    if name == VERDICT:
        return {
            "verdict": payload.get("verdict"),
            "deciding_tier": payload.get("deciding_tier"),
            "backup_id": payload.get("backup_id"),
            "rto_seconds": payload.get("rto_seconds"),
            "data_loss_seconds": payload.get("data_loss_seconds"),
        }
    raise ValueError(f"unknown transition {name!r}: one of {', '.join(TRANSITIONS)}")


def transition_event(
    name: str,
    payload: Mapping[str, Any] | None,
    *,
    drill_id: str,
    dag_id: str,
    run_id: str,
    tier: str | None,
    started_at: datetime | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One JSON-safe, redacted event: who (drill, run, tier), what (``name``), when, figures."""
    now = at or utcnow()
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "event": name,
        "drill_id": drill_id,
        "dag_id": dag_id,
        "run_id": run_id,
        "tier": tier,
        "at": isoformat(now),
        "figures": _figures(name, payload or {}),
    }
    if started_at is not None:
        event["started_at"] = isoformat(started_at)
        event["duration_seconds"] = round((now - started_at).total_seconds(), 3)
    return redact(json.loads(json.dumps(event, default=str)))


def emit(event: Mapping[str, Any], logger: logging.Logger | None = None) -> None:
    """Log the event as one JSON line; handlers also get the dict as ``record.drillkit_event``."""
    (logger or log).info(
        json.dumps(event, sort_keys=True, default=str), extra={"drillkit_event": dict(event)}
    )


def timeline(events: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The run's events in the order they happened (events missing from XCom are left out)."""
    present = [dict(e) for e in events if e]
    return sorted(present, key=lambda e: (parse_iso(e["at"]), TRANSITIONS.index(e["event"])))


def stat_slug(text: str) -> str:
    """A name part StatsD accepts: ``COULD NOT VERIFY`` -> ``could_not_verify``."""
    return _SLUG_RE.sub("_", str(text).strip().lower()).strip("_") or "unknown"


@dataclass(frozen=True)
class Metric:
    """One metric call: ``kind`` is ``incr`` (a counter) or ``timing`` (milliseconds)."""

    kind: str
    name: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


def report_metrics(report: Mapping[str, Any]) -> list[Metric]:
    """What a finished run adds to the drill's metrics.

    ``drillkit.verdict.<drill>.<verdict>`` counts runs per verdict; ``drillkit.fallback.<drill>``
    counts tiers that fell back; ``drillkit.rto.<drill>`` and ``drillkit.data_loss.<drill>`` time
    the measured restore and the achieved data loss (only when something was restored).
    """
    drill = stat_slug(report["drill"])
    verdict = stat_slug(report["verdict"])
    tags = {"drill": drill, "verdict": verdict, "dag_id": str(report.get("dag_id"))}
    metrics = [Metric("incr", f"{METRIC_PREFIX}.verdict.{drill}.{verdict}", 1, tags)]
    fallbacks = sum(1 for t in report.get("tiers", []) if t.get("decision") == "fallback")
    if fallbacks:
        metrics.append(Metric("incr", f"{METRIC_PREFIX}.fallback.{drill}", fallbacks, tags))
    for key, metric in (("rto_seconds", "rto"), ("data_loss_seconds", "data_loss")):
        seconds = report.get(key)
        if seconds is not None:
            metrics.append(
                Metric("timing", f"{METRIC_PREFIX}.{metric}.{drill}", float(seconds) * 1000, tags)
            )
    return metrics
