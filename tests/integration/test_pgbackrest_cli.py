"""pgBackRest through the command line and the drill DAG (``drillkit run``, Airflow dag.test)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from restorekit import tree_digest

from drillkit.scenario import ScenarioOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest is not installed"),
]
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def drillkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DRILLKIT, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def test_catalog_shows_types_references_verification_and_windows(pgbackrest_stanza):
    _directory, truth = pgbackrest_stanza
    result = drillkit("catalog", "--stanza", "demo", "--config", truth["config"], "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["backup_id"]: row for row in json.loads(result.stdout)}
    full, incr = (b["backup_id"] for b in truth["backups"])
    assert rows[full]["type"] == "full" and rows[full]["depends_on"] == []
    assert rows[incr]["type"] == "incr" and rows[incr]["depends_on"] == [full]
    assert {r["verification"] for r in rows.values()} == {"verified"}
    assert all(r["usable"] and r["restorable_from"] and r["restorable_to"] for r in rows.values())
    text = drillkit("catalog", "--stanza", "demo", "--config", truth["config"])
    assert f"references: {full}" in text.stdout


def test_drillkit_run_falls_back_from_a_damaged_set_with_credentials_from_a_connection(
    pgbackrest_stanza, workdir: Path
):
    """The repository path reaches pgBackRest only through the connection named by
    pgbackrest_conn_id (PGBACKREST_REPO1_PATH): had it not, pgBackRest would read the
    undamaged original and the primary tier would pass."""
    from drillkit.scenario_pgbackrest import apply_pgbackrest_damage

    directory, truth = pgbackrest_stanza
    subprocess.run(["cp", "-a", str(directory / "repo"), str(workdir / "repo")], check=True)
    apply_pgbackrest_damage(
        workdir, truth, ScenarioOptions(tool="pgbackrest", corrupt_newest=True), lambda _m: None
    )
    before = tree_digest(workdir / "repo")
    spec = yaml.safe_load((directory / "drill.yaml").read_text())
    spec["catalog"]["pgbackrest_conn_id"] = "pgbr_test"
    spec["report"] = {"path": str(workdir / "reports")}
    spec_path = workdir / "drill.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    connection = {"conn_type": "generic", "extra": {"repo1-path": str(workdir / "repo")}}
    result = drillkit(
        "run",
        str(spec_path),
        "--json",
        str(workdir / "report.json"),
        env={
            "AIRFLOW_CONN_PGBR_TEST": json.dumps(connection),
            "DRILLKIT_RUN_HOME": str(workdir / "airflow"),
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["verdict"] == "PASS"
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert tiers["primary"]["status"] == "failed"
    assert "BACKUP_CHECKSUM_MISMATCH" in json.dumps(tiers["primary"])
    assert tiers["secondary"]["status"] == "passed"
    assert tiers["secondary"]["backup_id"] == truth["backups"][0]["backup_id"]
    text = json.dumps(report)
    for quoted in (f'{workdir / "repo"}"', f"{workdir / 'repo'}/"):  # the connection's value
        assert quoted not in text
    assert tree_digest(workdir / "repo") == before
