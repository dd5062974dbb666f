"""Real drill runs for the view's tests: two drills, nine runs, built once per test session.

Shared by tests/plugins and tests/e2e (both put this folder on sys.path): a session builds the
history once, whichever tier asks first.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ALPHA, BETA = "drill_ui_alpha", "drill_ui_beta"
# A production DSN password in the spec: it must never reach a page or a download.
SPEC_SECRET = "hunter2-spec-secret"
HOSTILE_KEY = "<script>alert('drill')</script>"
USERS = {"admin": "admin", "viewer": "viewer", "auditor": "viewer", "nobody": ""}


@dataclass
class History:
    runs: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (dag_id, run_id)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # strings no page may show
    url_reports: Path | None = None


def _write_spec(dags: Path, name: str, spec: dict[str, Any]) -> None:
    from drillkit.spec import loader_name, loader_source

    drills = dags / "drills"
    drills.mkdir(exist_ok=True)
    path = drills / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**spec, "drill": name}, sort_keys=False))
    (dags / loader_name(path)).write_text(loader_source(f"drills/{path.name}"))


def _run(
    name: str, spec: dict[str, Any], conf: dict[str, Any], when: datetime
) -> tuple[str, str, Any]:
    from airflow.dag_processing.dagbag import DagBag
    from drillkit.operators.runner import _report

    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    _write_spec(dags, name, spec)
    dag_id = f"drill_{name.replace('-', '_')}"
    dag = DagBag(str(dags)).get_dag(dag_id)
    assert dag is not None, f"{dag_id} did not load"
    # A distinct logical date per run: dag.test replaces an earlier run with the same one.
    run = dag.test(run_after=when, logical_date=when, run_conf=conf)
    return dag_id, run.run_id, _report(run.run_id, dag_id)


def _running(name: str, when: datetime, *, started: datetime, at_task: str) -> tuple[str, str]:
    """A run the scheduler is in the middle of: created as the scheduler creates one (the DAG's
    serialized version, every task instance), its earlier stages done, ``at_task`` running."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag_id = f"drill_{name.replace('-', '_')}"
    dag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(dag_id)
    assert dag is not None
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    run_id = DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=when, run_after=when)
    done = {"check_conf", "primary.pitr_select"}
    with create_session() as session:
        run = get_or_create_dagrun(
            dag=scheduler_dag,
            run_id=run_id,
            logical_date=when,
            data_interval=(when, when),
            run_after=when,
            conf={},
            triggered_by=DagRunTriggeredByType.TEST,
            triggering_user_name="test",
            start_date=started,
            session=session,
        )
        run.state = DagRunState.RUNNING
        run.start_date = started
        for ti in run.get_task_instances(session=session):
            if ti.task_id in done:
                ti.state, ti.start_date = TaskInstanceState.SUCCESS, started
            elif ti.task_id == at_task:
                ti.state = TaskInstanceState.RUNNING
                ti.start_date = started + timedelta(seconds=5)
        session.commit()
    return dag_id, run_id


def _route_context(dag_id: str, run_id: str, tier: str) -> str:
    """The full signed context (with its MAC) that the route task keeps in XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=dag_id,
                run_id=run_id,
                task_id=f"{tier}.apply_drill_route",
                key="return_value",
            )
            .one()
        )
        return XComModel.deserialize_value(row)["context"]["value"]


_BUILT: dict[Path, History] = {}


def drill_history(clean_scenario: tuple[Path, dict], work_root: Path) -> History:
    """Eight real runs of two drills over five days: PASS on the first tier, PASS after a
    fallback, FAIL (every tier), a scheduled FAIL whose selection failed, a dry run, and a
    refused configuration with markup in it; and one run still running.

    Needs a migrated Airflow database (the ``airflow_db`` fixture)."""
    if work_root in _BUILT:
        return _BUILT[work_root]
    from drillkit.scenario import ScenarioOptions, apply_damage

    repo, truth = clean_scenario
    damaged = work_root / "ui-damaged" / "repo"
    damaged.parent.mkdir()
    damaged.parent.chmod(0o755)
    subprocess.run(["cp", "-a", str(repo), str(damaged)], check=True)
    apply_damage(damaged, truth, ScenarioOptions(corrupt_newest=True), lambda _m: None)

    base = yaml.safe_load((repo.parent / "drill.yaml").read_text())
    base["production"]["dsns"].append(f"postgresql://app:{SPEC_SECRET}@db.prod.internal/app")
    history = History(secrets=[SPEC_SECRET])
    history.url_reports = work_root / "ui-url-reports"
    alpha = {**base, "report": {"path": f"file://{history.url_reports}"}}
    beta = {**base, "report": {"path": str(work_root / "ui-local-reports")}}
    impossible = {
        "name": "impossible",
        "kind": "sql",
        "target": "app-db",
        "query": "select count(*) from orders",
        "expect": {"lt": 0},
    }
    targets = [t["target"] for t in truth["targets"]]
    alpha_damaged = {**alpha, "catalog": {**alpha["catalog"], "path": str(damaged)}}
    beta_failing = {**beta, "checks": [*beta["checks"], impossible]}
    # Runs on different days (a drill history), oldest first; the day decides the heatmap column.
    plan = [
        ("pass", "ui-alpha", alpha, {"target_time": targets[2]}, 4),
        ("pass-2", "ui-alpha", alpha, {"target_time": targets[-1]}, 3),
        ("fail", "ui-beta", beta_failing, {"target_time": targets[-1]}, 3),
        ("beta-pass", "ui-beta", beta, {"target_time": targets[1]}, 2),
        ("fallback", "ui-alpha", alpha_damaged, {"target_time": targets[-1]}, 1),
        ("dry", "ui-beta", beta, {"dry_run": True, "target_time": targets[0]}, 1),
        # A scheduled drill's target is its logical date, before every backup: selection fails
        # on every tier, and the target it asked for is still the one shown.
        ("scheduled-fail", "ui-beta", {**beta, "target": "logical_date"}, {}, 1),
        # Airflow accepts unknown conf keys; drillkit refuses them and names the key in a finding,
        # so markup reaches the report: every page must show it as text.
        ("hostile", "ui-beta", beta, {HOSTILE_KEY: 1}, 0),
    ]
    today = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    for index, (label, name, spec, conf, days_ago) in enumerate(plan):
        when = today - timedelta(days=days_ago) + timedelta(minutes=7 * index)
        dag_id, run_id, report = _run(name, spec, conf, when)
        assert report is not None, f"{label}: no report"
        history.runs[label] = (dag_id, run_id)
        history.reports[label] = report
        tier = report["deciding_tier"]
        if tier and report.get("manifest"):
            history.secrets.append(_route_context(dag_id, run_id, tier).rsplit(".", 1)[-1])
    # One drill still running: started 95 s ago, its primary tier waiting for the sandbox.
    now = datetime.now(UTC).replace(microsecond=0)
    history.runs["running"] = _running(
        "ui-alpha", now, started=now - timedelta(seconds=95), at_task="primary.sandbox_ready"
    )
    _BUILT[work_root] = history
    return history
