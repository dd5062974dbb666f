"""``drillkit run SPEC``: the drill's own Airflow DAG, run in process with ``dag.test()``.

Same DAG, same operators as in Airflow: not a second implementation. Runs in a private Airflow
home (SQLite) so it never touches a production Airflow's metadata or bundles.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from drillkit.exceptions import DrillError

EXIT = {"PASS": 0, "DRY RUN": 0, "FAIL": 1, "COULD NOT VERIFY": 2}
Say = Callable[[str], None]


def prepare_airflow_home(spec_path: Path, home: Path) -> Path:
    """Point Airflow at a private home and a dags folder holding only this spec's loader.

    Must run before airflow is imported: Airflow reads its configuration once.
    """
    from drillkit.spec import loader_source  # no airflow import before the env

    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for old in dags.glob("drill_*.py"):
        old.unlink()
    # A fixed loader name: the spec file's own name may hold anything (the DAG is found by id).
    (dags / "drill_spec.py").write_text(loader_source(str(spec_path)))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    return dags


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) for the block; other holders wait."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def private_home(root: Path, *, keep: int = 20) -> Path:
    """A new Airflow home of its own under ``root`` for one run: concurrent runs never share a
    metadata database or a dags folder. The newest ``keep`` homes stay for their logs."""
    import tempfile
    import time

    homes = root / "homes"
    homes.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"), dir=homes))
    old = sorted((p for p in homes.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[:-keep]:
        if stale != home and not (stale / ".running").exists():
            import shutil

            shutil.rmtree(stale, ignore_errors=True)
    return home


def _migrate_once(home: Path, template_root: Path | None = None) -> None:
    """A migrated metadata database in ``home``: migrated once per Airflow version into
    ``template_root`` (under a lock, so concurrent first runs migrate once) and copied from
    there, which keeps start-up fast; or migrated in place without a template."""
    import shutil
    import subprocess

    from airflow import __version__

    marker = home / f".migrated-{__version__}"
    if marker.exists():
        return
    airflow = Path(sys.executable).parent / "airflow"
    target = home if template_root is None else template_root / f"template-{__version__}"
    target.mkdir(parents=True, exist_ok=True)
    with locked(target / ".lock"):
        if not (target / f".migrated-{__version__}").exists():
            env = dict(os.environ)
            env["AIRFLOW_HOME"] = str(target)
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{target / 'airflow.db'}"
            result = subprocess.run(
                [str(airflow), "db", "migrate"], capture_output=True, text=True, env=env
            )
            if result.returncode != 0:
                raise DrillError(
                    f"airflow db migrate failed in {target}: {result.stderr[-2000:]}",
                    code="AIRFLOW_DB_MIGRATE_FAILED",
                )
            (target / f".migrated-{__version__}").touch()
        if target != home:
            shutil.copyfile(target / "airflow.db", home / "airflow.db")
    marker.touch()


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send Airflow's own output (task logs, tracebacks of expected failures) to a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _task_lines(run_id: str, dag_id: str) -> list[tuple[str, str, float | None]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .all()
        )
        ordered = sorted(tis, key=lambda t: (t.start_date is None, t.start_date or 0, t.task_id))
        return [(ti.task_id, str(ti.state), ti.duration) for ti in ordered]


def _report(run_id: str, dag_id: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id="report", key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


def run_spec(
    spec_path: Path,
    *,
    home: Path,
    conf: dict[str, Any],
    json_out: Path | None = None,
    junit_out: Path | None = None,
    say: Say = print,
    template_root: Path | None = None,
) -> int:
    """Run the spec's DAG once; print a line per stage and the report; return the exit code.

    ``home`` is this run's own Airflow home; with ``template_root`` its metadata database is a
    copy of one migrated there once (see :func:`_migrate_once`)."""
    from drillkit.report import junit_xml

    prepare_airflow_home(spec_path, home)
    _migrate_once(home, template_root)
    from airflow.dag_processing.dagbag import DagBag

    from drillkit.spec import load_spec

    spec = load_spec(spec_path)
    log_path = home / "last-run.log"
    log_path.write_text("")
    with _output_to(log_path):
        bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        dag = bag.get_dag(spec.dag_id)
        if dag is None:
            errors = "; ".join(str(e) for e in bag.import_errors.values())
            raise DrillError(
                f"the drill's DAG {spec.dag_id} did not load from {spec_path}: "
                f"{errors or 'no DAG with that id'} (Airflow's log: {log_path})",
                code="DAG_IMPORT_FAILED",
            )
        run = dag.test(logical_date=None, run_conf=conf)
    say(f"drill {spec.name}: DAG {spec.dag_id}, run {run.run_id} ({run.state})")
    for task_id, state, duration in _task_lines(run.run_id, spec.dag_id):
        took = f"{duration:7.2f} s" if duration is not None else "      -  "
        say(f"  {task_id:<34} {state:<16} {took}")
    report = _report(run.run_id, spec.dag_id)
    if report is None:
        say(f"no report was written; Airflow's log: {log_path}")
        return EXIT["COULD NOT VERIFY"]
    say("")
    say(format_report(report))
    say(f"  (Airflow log of this run: {log_path})")
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, default=str))
    if junit_out:
        junit_out.write_text(junit_xml(report))
    return EXIT.get(report["verdict"], 2)


def format_report(report: dict[str, Any]) -> str:
    """The report as a person reads it at a terminal."""
    target = report.get("target") or {}
    lines = [f"VERDICT: {report['verdict']}  ({report['summary']})", "tiers tried:"]
    for tier in report["tiers"]:
        lines.append(f"  - {tier['tier']}: {tier['status']} - {tier['reason']}")
    if not report["tiers"]:
        lines.append("  (none)")
    lines += [
        f"backup used:            {report.get('backup_id')}",
        f"recovery target:        {target.get('requested') or 'newest restorable point'}"
        f" (mode {target.get('mode')})",
        f"{'planned' if report.get('dry_run') else 'achieved'} recovery point: "
        f"{target.get('recovery_point')}",
        f"data loss (expected):   {target.get('expected_data_loss_seconds')} s",
        f"RTO (restore to ready): {report.get('rto_seconds')} s",
        "checks:",
    ]
    for check in report.get("checks", []):
        lines.append(
            f"  - {check['name']} ({check['kind']}): {check['status']}"
            f" observed={check.get('observed')!r} expected {check.get('expectation')}"
        )
    for finding in report.get("findings", []):
        lines.append(f"  ! {finding.get('code')}: {finding.get('message')}")
    if report.get("files"):
        lines.append(f"report files: {report['files']}")
    return "\n".join(lines)
