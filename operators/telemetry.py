"""Airflow side of drill telemetry: each transition logged and kept in XCom, metrics to Stats.

The events and metric names come from ``drillkit.telemetry``; this module only knows where the
run's identity lives in the task context and how Airflow 3 exposes Stats.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from drillkit.operators._common import run_identity

from drillkit.telemetry import Metric, emit, log, report_metrics, transition_event

EVENT_KEY_PREFIX = "event."


def event_key(name: str) -> str:
    """The XCom key under which a task keeps its ``name`` event, for the report's timeline."""
    return f"{EVENT_KEY_PREFIX}{name}"


def record_transition(context: Any, name: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """Log the ``name`` transition of the running task as one structured event, and keep it in
    XCom (key ``event.<name>``) for the report's timeline."""
    ti = context["ti"]
    dag_id, run_id, drill_id = run_identity(context)
    task_id = str(ti.task_id)
    event = transition_event(
        name,
        payload,
        drill_id=drill_id,
        dag_id=dag_id,
        run_id=run_id,
        # Tier tasks live in the tier's TaskGroup: ``primary.gate`` belongs to ``primary``.
        tier=task_id.split(".", 1)[0] if "." in task_id else None,
        started_at=getattr(ti, "start_date", None),
    )
    emit(event)
    try:
        ti.xcom_push(key=event_key(name), value=event)
    except Exception:  # the event is logged; a missing timeline row must not fail the drill
        log.warning("could not keep the %s event in XCom", name, exc_info=True)
    return event


def send_metrics(report: Mapping[str, Any]) -> list[Metric]:
    """Send the run's verdict counter, fallback count, RTO and data-loss timers to Stats."""
    from airflow.sdk.observability import stats

    metrics = report_metrics(report)
    for metric in metrics:
        if metric.kind == "incr":
            stats.incr(metric.name, count=int(metric.value), tags=metric.tags)
        else:
            stats.timing(metric.name, timedelta(milliseconds=metric.value), tags=metric.tags)
    return metrics
