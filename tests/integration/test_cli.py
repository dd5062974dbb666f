"""The command line on a real scenario: catalog, restore with proof, exit codes, gc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def drillkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DRILLKIT, *args], capture_output=True, text=True, timeout=300)


def test_catalog_lists_every_backup_with_its_window(clean_scenario):
    repo, truth = clean_scenario
    result = drillkit("catalog", str(repo), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["backup_id"] for r in rows] == [b["backup_id"] for b in truth["backups"]]
    assert all(r["verification"] == "verified" and r["usable"] for r in rows)
    assert {r["pg_major"] for r in rows} == {18}  # the embedded wheel's own major
    assert all(r["restorable_from"] < r["restorable_to"] for r in rows)
    table = drillkit("catalog", str(repo))
    assert truth["backups"][0]["backup_id"] in table.stdout and "restorable window" in table.stdout


def test_scenario_create_takes_tar_gz_backups_the_catalog_lists(work_root: Path):
    directory = work_root / "cli-tar"
    created = drillkit(
        "scenario", "create", str(directory), "--backup-format", "tar.gz", "--batches", "2",
        "--backups-after", "0", "--initial-mb", "0", "--rows-per-batch", "20",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "pg_basebackup b01-" in created.stderr and "(tar.gz)" in created.stderr
    backup = directory / "repo" / "base" / json.loads(created.stdout)["backups"][0]["backup_id"]
    assert (backup / "base.tar.gz").is_file() and not (backup / "backup_label").exists()
    rows = json.loads(drillkit("catalog", str(directory / "repo"), "--json").stdout)
    assert [(r["format"], r["verification"], r["usable"]) for r in rows] == [
        ("tar.gz", "verified", True)
    ]
    refused = drillkit("scenario", "create", str(work_root / "cli-lz4"), "--backup-format", "lz4")
    assert refused.returncode == 2 and "invalid choice: 'lz4'" in refused.stderr


def test_catalog_names_a_wal_gap(damaged_scenario):
    repo, truth = damaged_scenario(remove_wal_after_batch=1)
    rows = json.loads(drillkit("catalog", str(repo), "--json").stdout)
    assert rows[0]["wal_gap"] == truth["batches"][1]["segment_after"]


def test_restore_proves_the_ground_truth_and_exits_0(clean_scenario):
    repo, truth = clean_scenario
    target = truth["targets"][1]
    result = drillkit(
        "restore",
        str(repo),
        "--target-time",
        target["target"],
        "--truth",
        str(repo.parent / "truth.json"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PASS")
    assert f"id={target['max_id']} present; id={target['absent_id']} absent" in result.stdout


def test_bad_target_exits_2_with_the_fix(clean_scenario):
    repo, _ = clean_scenario
    result = drillkit("restore", str(repo), "--target-time", "last tuesday")
    assert result.returncode == 2
    assert "TARGET_INVALID" in result.stderr and "ISO 8601" in result.stderr


def test_target_before_every_backup_exits_1(clean_scenario):
    repo, _ = clean_scenario
    result = drillkit("restore", str(repo), "--target-time", "2020-01-01T00:00:00Z")
    assert result.returncode == 1
    assert "TARGET_BEFORE_OLDEST_RESTORABLE" in result.stderr


def test_run_refuses_a_bad_spec_with_exit_2(workdir: Path):
    spec = workdir / "bad.yaml"
    spec.write_text("drill: x\ncatalog: {kind: local, path: /nowhere}\nteirs: []\n")
    result = drillkit("run", str(spec))
    assert result.returncode == 2
    assert "bad.yaml: teirs: unknown key" in result.stderr


def test_run_names_a_routing_chain_spec_for_what_it_is():
    chain = Path(__file__).resolve().parents[2] / "dags" / "drills" / "checkout-routing.yaml"
    result = drillkit("run", str(chain))
    assert result.returncode == 2
    assert "checkout-routing.yaml: kind: routing_chain marks a routing-chain drill" in result.stderr
    assert "`drillkit run` runs restore drills only" in result.stderr


def test_gc_dry_run_reports_and_removes_nothing():
    result = drillkit("gc", "--dry-run")
    assert result.returncode == 0
    assert "would remove" in result.stdout


def test_catalog_of_a_relative_path_verifies_like_an_absolute_one(clean_scenario):
    repo, truth = clean_scenario
    result = subprocess.run(
        [DRILLKIT, "catalog", repo.name, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo.parent,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["verification"] for r in rows] == ["verified"] * len(truth["backups"])


@pytest.mark.parametrize(
    ("flags", "damage"),
    [
        (["--pg-bin-dir", "/usr/lib/postgresql/15/bin", "--corrupt-newest", "--tablespace"],
         "corrupt"),
        (["--pg-major", "15", "--truncate-newest", "--remove-wal-after-batch", "1"], "truncate"),
    ],
)  # fmt: skip
def test_scenario_of_another_major_with_its_damage(work_root: Path, flags, damage):
    directory = work_root / f"cli-pg15-{damage}"
    created = drillkit(
        "scenario", "create", str(directory), "--batches", "3", "--backups-after", "0,1",
        "--initial-mb", "0", "--rows-per-batch", "20", *flags,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    truth = json.loads(created.stdout)
    assert truth["postgres"]["major"] == 15 and "PostgreSQL 15." in created.stderr
    result = drillkit("catalog", str(directory / "repo"), "--json")
    rows = {r["backup_id"]: r for r in json.loads(result.stdout)}
    oldest, newest = (rows[b["backup_id"]] for b in truth["backups"])
    assert {oldest["pg_major"], newest["pg_major"]} == {15}
    assert (
        newest["verification"] == {"corrupt": "checksum_mismatch", "truncate": "incomplete"}[damage]
    )
    assert oldest["verification"] == "verified"
    if damage == "truncate":
        assert oldest["wal_gap"] == truth["batches"][1]["segment_after"]
    else:
        assert oldest["usable"] and oldest["wal_gap"] is None
        spec = (directory / "drill.yaml").read_text()
        assert "postgres_bin_dirs:" in spec and "/usr/lib/postgresql/15/bin" in spec


def test_scenario_refuses_a_bin_dir_without_postgres(work_root: Path):
    result = drillkit("scenario", "create", str(work_root / "cli-nobin"), "--pg-bin-dir", "/tmp")
    assert result.returncode == 2
    assert "--pg-bin-dir /tmp" in result.stderr and "holds no postgres binary" in result.stderr


def test_doctor_exits_0_and_lists_the_majors():
    result = drillkit("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {15, 18} <= set(report["usable_majors"])
    text = drillkit("doctor").stdout
    assert "/usr/lib/postgresql/15/bin (debian)" in text and "can drill PostgreSQL" in text
