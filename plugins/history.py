"""The drill run history, read from Airflow's own records: DAG runs and their report XCom.

A restore drill DAG is tagged ``restore-drill`` by the DAG factory; a run's report is the
``return_value`` XCom of its ``report`` task. Nothing here decides who may see what: callers pass
the DAG ids the user may read. Every report leaves this module redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from drillkit.redaction import redact
from drillkit.report import SCHEMAS
from drillkit.timeutil import isoformat, parse_iso

REPORT_TASK_ID = "report"
DRILL_TAG = "drillkit"
RESTORE_DRILL_TAG = "restore-drill"
DRILL_DAG_PREFIX = "drill_"
NO_REPORT = "NO REPORT"
RUNNING = "RUNNING"
DEFAULT_LIMIT = 500
# A run in these states has not written its report yet: it is shown as RUNNING, not NO REPORT.
UNFINISHED_RUN_STATES = ("queued", "running")
# Task states of the stage a running drill is at (waiting for a slot or a retry counts too).
ACTIVE_TASK_STATES = (
    "running",
    "deferred",
    "queued",
    "scheduled",
    "up_for_retry",
    "up_for_reschedule",
    "restarting",
)


@dataclass(frozen=True)
class RunFilter:
    """What the runs table shows: all filters optional; dates are inclusive UTC days."""

    dag_ids: frozenset[str] = frozenset()
    verdict: str | None = None
    since: date | None = None
    until: date | None = None
    limit: int = DEFAULT_LIMIT
    # Keyset paging: only runs older than this row's (run_after, id), as ``cursor`` gives it.
    before: tuple[datetime, int] | None = None


def cursor_of(run_after: datetime, run_pk: int) -> str:
    """The ``before`` value that pages on from a row: ``<run_after ISO>~<dag_run id>``."""
    return f"{isoformat(run_after)}~{run_pk}"


def parse_cursor(text: str) -> tuple[datetime, int]:
    """``before`` as :func:`cursor_of` writes it; ValueError names the expected shape."""
    stamp, sep, pk = text.rpartition("~")
    try:
        if not sep:
            raise ValueError
        at = parse_iso(stamp)
        if at is None:
            raise ValueError
        return at, int(pk)
    except ValueError:
        raise ValueError(
            f"before={text!r} is not a page cursor; use the 'Older runs' link (or the "
            "`cursor` of the last run an /api/runs page returned)"
        ) from None


def drill_dag_ids(session: Session) -> list[str]:
    """Every restore drill DAG, whether or not it has run.

    The DAG factory tags them ``restore-drill``; other DAGs tagged ``drillkit`` (or named
    ``drill_*``) count only once a run left a report, so routing-chain and maintenance DAGs stay
    out of the view.
    """
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.xcom import XComModel

    tagged = set(session.scalars(select(DagTag.dag_id).where(DagTag.name == RESTORE_DRILL_TAG)))
    related = select(DagModel.dag_id).where(
        or_(
            DagModel.dag_id.in_(select(DagTag.dag_id).where(DagTag.name == DRILL_TAG)),
            DagModel.dag_id.startswith(DRILL_DAG_PREFIX),
        )
    )
    reporting = select(XComModel.dag_id).where(
        XComModel.dag_id.in_(related),
        XComModel.task_id == REPORT_TASK_ID,
        XComModel.key == "return_value",
    )
    return sorted(tagged | set(session.scalars(reporting.distinct())))


def _report_of(xcom: Any) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel

    if xcom is None:
        return None
    value = XComModel.deserialize_value(xcom)
    if not isinstance(value, dict) or value.get("schema") not in SCHEMAS:
        return None  # not a drillkit report (a DAG that only looks like a drill)
    return redact(value)


def _runs_query(dag_ids: list[str], run_id: str | None = None) -> Any:
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel

    report = and_(
        XComModel.dag_run_id == DagRun.id,
        XComModel.task_id == REPORT_TASK_ID,
        XComModel.key == "return_value",
        XComModel.map_index == -1,
    )
    stmt = (
        select(DagRun, XComModel)
        .outerjoin(XComModel, report)
        .where(DagRun.dag_id.in_(dag_ids))
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
    )
    if run_id is not None:
        stmt = stmt.where(DagRun.run_id == run_id)
    return stmt


SUMMARY_FIELDS = (
    "drill",
    "verdict",
    "dry_run",
    "target",
    "recovery_point",
    "tier_reached",
    "tiers_tried",
    "tier_passed",
    "backup_id",
    "data_loss_seconds",
    "rto_seconds",
    "rto_budget_seconds",
    "rpo_seconds",
    "findings",
)


def progress(session: Session, dag_run: Any) -> dict[str, Any]:
    """Where an unfinished run is: its current task and tier, and how long it has been going.

    The current task is the latest-started active one (else the latest started at all); its
    tier is its task group (``secondary.sandbox_ready`` -> ``secondary``)."""
    from datetime import UTC

    from airflow.models.taskinstance import TaskInstance

    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.state, TaskInstance.start_date).where(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
    ).all()
    started = dag_run.start_date or dag_run.run_after
    oldest = datetime.min.replace(tzinfo=UTC)
    active = [r for r in rows if str(r.state) in ACTIVE_TASK_STATES]
    pool = active or [r for r in rows if r.start_date is not None]
    current = max(pool, key=lambda r: (r.start_date or oldest, r.task_id), default=None)
    task_id = current.task_id if current is not None else None
    elapsed = None
    if started is not None:
        elapsed = max(0.0, round((datetime.now(UTC) - started).total_seconds(), 1))
    return {
        "current_task": task_id,
        "current_tier": task_id.split(".", 1)[0] if task_id and "." in task_id else None,
        "elapsed_seconds": elapsed,
    }


def summarize(
    dag_run: Any, report: dict[str, Any] | None, session: Session | None = None
) -> dict[str, Any]:
    """One row of the runs table; with ``session``, an unfinished run's progress too."""
    base = {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "run_state": str(dag_run.state),
        "run_after": isoformat(dag_run.run_after),
        # When it ran: its start (a backfilled run's run_after is its logical date's interval).
        "ran_at": isoformat(dag_run.start_date or dag_run.run_after),
        "cursor": cursor_of(dag_run.run_after, dag_run.id),
        "logical_date": isoformat(dag_run.logical_date),
        "start_date": isoformat(dag_run.start_date),
        "end_date": isoformat(dag_run.end_date),
    }
    if report is None:
        unfinished = str(dag_run.state) in UNFINISHED_RUN_STATES
        row = {
            **base,
            **dict.fromkeys(SUMMARY_FIELDS),
            "drill": drill_from_dag_id(dag_run.dag_id),
            "verdict": RUNNING if unfinished else NO_REPORT,
            "tiers_tried": [],
            "findings": [],
        }
        if unfinished and session is not None:
            row["progress"] = progress(session, dag_run)
            row["tier_reached"] = row["progress"]["current_tier"]
        return row
    target = report.get("target") or {}
    tiers = report.get("tiers") or []
    deciding = report.get("deciding_tier")
    return {
        **base,
        "drill": report.get("drill"),
        "verdict": report.get("verdict"),
        "dry_run": report.get("dry_run"),
        "target": target.get("requested") or "newest",
        "recovery_point": target.get("recovery_point"),
        "tier_reached": deciding,
        "tiers_tried": [t.get("tier") for t in tiers],
        "tier_passed": next((t.get("tier") for t in tiers if t.get("status") == "passed"), None),
        "backup_id": report.get("backup_id"),
        "data_loss_seconds": report.get("data_loss_seconds"),
        "rto_seconds": report.get("rto_seconds"),
        "rto_budget_seconds": report.get("rto_budget_seconds"),
        "rpo_seconds": report.get("rpo_seconds"),
        "findings": [f.get("code") for f in report.get("findings") or []],
    }


def drill_from_dag_id(dag_id: str) -> str:
    return dag_id.removeprefix(DRILL_DAG_PREFIX)


def list_runs(session: Session, readable: list[str], flt: RunFilter) -> list[dict[str, Any]]:
    """Drill runs of the ``readable`` DAGs, newest first, with their report summaries."""
    from airflow.models.dagrun import DagRun

    dag_ids = [d for d in readable if not flt.dag_ids or d in flt.dag_ids]
    if not dag_ids:
        return []
    stmt = _runs_query(dag_ids)
    if flt.since:
        stmt = stmt.where(DagRun.run_after >= _day_start(flt.since))
    if flt.until:
        stmt = stmt.where(DagRun.run_after < _day_start(flt.until) + timedelta(days=1))
    if flt.before:
        at, pk = flt.before
        stmt = stmt.where(or_(DagRun.run_after < at, and_(DagRun.run_after == at, DagRun.id < pk)))
    if not flt.verdict:  # the verdict lives in the report: filter it after reading
        stmt = stmt.limit(flt.limit)
    rows = []
    for dag_run, xcom in session.execute(stmt):
        row = summarize(dag_run, _report_of(xcom), session)
        if flt.verdict and row["verdict"] != flt.verdict:
            continue
        rows.append(row)
        if len(rows) >= flt.limit:
            break
    # A run without a report shows its drill's name as the drill's reports spell it.
    names = {r["dag_id"]: r["drill"] for r in rows if r["verdict"] not in (NO_REPORT, RUNNING)}
    for row in rows:
        row["drill"] = names.get(row["dag_id"]) or row["drill"]
    return rows


def get_run(session: Session, dag_id: str, run_id: str) -> tuple[dict[str, Any], Any] | None:
    """``(summary, report or None)`` of one run, or None when there is no such drill run."""
    from airflow.models.xcom import XComModel

    found = session.execute(_runs_query([dag_id], run_id=run_id)).first()
    if found is None:
        return None
    dag_run, xcom = found
    report = _report_of(xcom)
    summary = summarize(dag_run, report, session)
    if report is None:  # the drill's name as its reports spell it, not the DAG id's
        reported = session.execute(
            _runs_query([dag_id]).where(XComModel.dag_run_id.is_not(None))
        ).first()
        named = _report_of(reported[1]) if reported else None
        summary["drill"] = (named or {}).get("drill") or summary["drill"]
    return summary, report


def _day_start(day: date) -> datetime:
    from datetime import UTC

    return datetime.combine(day, time.min, tzinfo=UTC)
