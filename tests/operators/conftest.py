"""Run drill DAGs for real with dag.test(): a spec in the test dags folder, its loader, a run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml


def _dags() -> Path:
    return Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def write_spec(name: str, spec: dict[str, Any]) -> Path:
    from drillkit.spec import loader_name, loader_source

    drills = _dags() / "drills"
    drills.mkdir(exist_ok=True)
    path = drills / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**spec, "drill": name}, sort_keys=False))
    (_dags() / loader_name(path)).write_text(loader_source(f"drills/{path.name}"))
    return path


def scenario_spec(repo: Path, truth_dir: Path, **changes: Any) -> dict[str, Any]:
    """The scenario builder's own spec, pointed at ``repo``, with ``changes`` applied."""
    spec = yaml.safe_load((truth_dir / "drill.yaml").read_text())
    spec["catalog"]["path"] = str(repo)
    spec["report"] = {"path": str(repo.parent / "reports")}
    spec.update(changes)
    return spec


class DrillRun:
    def __init__(self, dag_run: Any, dag_id: str) -> None:
        from drillkit.operators.runner import _report, _task_lines

        self.state = str(dag_run.state)
        self.tasks = {t: s for t, s, _ in _task_lines(dag_run.run_id, dag_id)}
        self.report = _report(dag_run.run_id, dag_id)

    @property
    def verdict(self) -> str | None:
        return self.report["verdict"] if self.report else None

    def failed_tasks(self) -> list[str]:
        """Task instances Airflow counts as failures (what its failure alerts fire on)."""
        return sorted(t for t, s in self.tasks.items() if s in ("failed", "upstream_failed"))

    def tier(self, name: str) -> dict[str, Any]:
        return next(t for t in self.report["tiers"] if t["tier"] == name)


@pytest.fixture
def make_spec():
    return scenario_spec


@pytest.fixture
def spec_writer():
    return write_spec


@pytest.fixture
def run_drill(airflow_db):
    """Write the spec, load the dags folder like the dag-processor, run one DAG run."""
    from airflow.dag_processing.dagbag import DagBag

    def run(name: str, spec: dict[str, Any], conf: dict[str, Any] | None = None) -> DrillRun:
        write_spec(name, spec)
        bag = DagBag(str(_dags()))
        dag_id = f"drill_{name.replace('-', '_')}"
        dag = bag.get_dag(dag_id)
        assert dag is not None, bag.import_errors
        return DrillRun(dag.test(logical_date=None, run_conf=conf or {}), dag_id)

    return run


@pytest.fixture
def no_sandboxes_left():
    """Teardown on every path: after the test nothing is left in the sandbox root."""
    yield
    root = Path(os.environ["DRILLKIT_SANDBOX_ROOT"])
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    assert left == [], f"sandboxes left behind: {left}"
