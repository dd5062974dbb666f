"""`drillkit scenario create --history 3d`: three past days of commits and backups, and a daily
drill whose three backfilled runs pass, each restoring to its own day's 06:00."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from drillkit.scenario_history import libfaketime
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


@pytest.fixture
def short_dir(work_root: Path) -> Path:
    """A short path: the production's unix socket path must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="h-", dir=work_root))
    path.chmod(0o755)
    return path


def test_a_history_scenario_backfills_three_days_to_three_passes(short_dir, airflow_db):
    if libfaketime() is None:
        pytest.fail("libfaketime is missing: `apt-get install -y libfaketime`")
    from airflow.dag_processing.dagbag import DagBag
    from drillkit.operators.runner import _report

    scenario = short_dir / "history"
    result = subprocess.run(
        [DRILLKIT, "scenario", "create", str(scenario), "--history", "3d", "--initial-mb", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    truth = json.loads((scenario / "truth.json").read_text())
    history = truth["history"]
    assert "airflow backfill create --dag-id drill_history" in history["backfill"]
    days = sorted({b["committed_at"][:10] for b in truth["batches"]})
    assert len(days) == 3 and days[0] == history["days"][0] and days[-1] == history["days"][1]
    spec = yaml.safe_load((scenario / "drill.yaml").read_text())
    assert spec["drill"] == "history" and spec["schedule"] == "0 6 * * *"
    assert spec["target"] == "logical_date"

    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (dags / "drills").mkdir(exist_ok=True)
    spec["report"] = {"path": str(short_dir / "reports")}
    # dag.test() runs a task only at or after the DAG's start_date; a backfill does not ask
    # (the e2e tier backfills such a spec through the real scheduler).
    assert spec["start_date"] == "2100-01-01T00:00:00Z"
    spec["start_date"] = f"{history['days'][0]}T00:00:00Z"
    (dags / "drills" / "history.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    from drillkit.spec import loader_source

    (dags / "drill_history.py").write_text(loader_source("drills/history.yaml"))
    dag = DagBag(str(dags)).get_dag("drill_history")
    assert dag is not None
    requested = []
    for target in history["targets"]:
        # What a backfill creates: a run whose logical date is that day's 06:00.
        run = dag.test(logical_date=parse_iso(target), run_conf={})
        report = _report(run.run_id, "drill_history")
        assert report["verdict"] == "PASS", report["escalation"]
        assert parse_iso(report["target"]["requested"]) == parse_iso(target)
        assert report["target"]["source"] == "logical date"
        pitr = next(c for c in report["checks"] if c["kind"] == "pitr")
        assert pitr["observed"] == {"before_present": True, "after_present": False}
        requested.append(report["target"]["requested"])
    assert len(set(requested)) == 3
