"""A PostgreSQL 15 drill through its Airflow DAG: `drillkit run` passes it with the right data, the
postgres_bin_dirs settings reach the workers, and a worker without 15 says COULD NOT VERIFY."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")
PG15_BIN = "/usr/lib/postgresql/15/bin"


def test_drillkit_run_passes_a_pg15_drill_with_the_right_data(
    pg15_scenario, make_spec, workdir: Path
):
    repo, truth = pg15_scenario
    target = truth["targets"][1]
    spec = workdir / "pg15.yaml"
    spec.write_text(yaml.safe_dump({**make_spec(repo, repo.parent), "drill": "pg15-cli"}))
    report_path = workdir / "report.json"
    result = subprocess.run(
        [DRILLKIT, "run", str(spec), "--target-time", target["target"], "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DRILLKIT_RUN_HOME": str(workdir / "home")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "PASS"
    assert report["postgres"]["major"] == 15 and report["postgres"]["version"].startswith("15.")
    assert "PostgreSQL 15" in report["summary"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["recovery-point"]["status"] == "passed"
    assert checks["recovery-point"]["observed"] == {"before_present": True, "after_present": False}
    assert checks["full-read"]["observed"]["amcheck"] == "passed"
    assert report["coordinate"]["backup"]["pg_major"] == 15


def test_spec_postgres_bin_dirs_reach_the_drill(
    pg15_scenario, run_drill, make_spec, monkeypatch, no_sandboxes_left
):
    repo, truth = pg15_scenario
    monkeypatch.setenv("DRILLKIT_PG_DISCOVER", "off")  # only the spec can say where 15 is
    spec = make_spec(repo, repo.parent, postgres_bin_dirs={15: PG15_BIN})
    run = run_drill("pg15-spec-bindir", spec, {"target_time": truth["targets"][0]["target"]})
    assert run.verdict == "PASS", run.report["escalation"]
    assert run.report["postgres"]["source"] == "postgres_bin_dirs"
    assert run.report["postgres"]["bindir"] == PG15_BIN


def test_connection_postgres_bin_dirs_reach_the_drill(
    pg15_scenario, run_drill, make_spec, monkeypatch, no_sandboxes_left
):
    repo, truth = pg15_scenario
    monkeypatch.setenv("DRILLKIT_PG_DISCOVER", "off")
    connection = {"conn_type": "generic", "extra": {"postgres_bin_dirs": {"15": PG15_BIN}}}
    monkeypatch.setenv("AIRFLOW_CONN_DRILLKIT_POSTGRES", json.dumps(connection))
    run = run_drill(
        "pg15-conn-bindir",
        make_spec(repo, repo.parent),
        {"target_time": truth["targets"][0]["target"]},
    )
    assert run.verdict == "PASS", run.report["escalation"]
    assert run.report["postgres"]["bindir"] == PG15_BIN


def test_a_worker_without_pg15_is_could_not_verify_in_every_tier(
    pg15_scenario, run_drill, make_spec, workdir: Path, monkeypatch, no_sandboxes_left
):
    repo, truth = pg15_scenario
    empty = workdir / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("DRILLKIT_PG_DISCOVER", "off")
    monkeypatch.setenv("DRILLKIT_PG_BINDIR_15", str(empty))
    run = run_drill(
        "pg15-missing", make_spec(repo, repo.parent), {"target_time": truth["targets"][0]["target"]}
    )
    assert run.verdict == "COULD NOT VERIFY"
    assert [t["status"] for t in run.report["tiers"]] == ["error", "error", "error"]
    codes = {f["code"] for f in run.report["findings"]}
    assert codes == {"PG_BINARIES_MISSING"}, codes
    message = run.report["findings"][0]["message"]
    assert "postgresql-15" in message and "DRILLKIT_PG_BINDIR_15" in message
    assert "FAIL" not in run.report["summary"]
