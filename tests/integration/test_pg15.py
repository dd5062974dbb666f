"""The integration tier on PostgreSQL 15 (Debian's postgresql-15): each backup read, verified and
restored with its own major's binaries; a missing major is COULD NOT VERIFY, never damage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import assert_every_target_restores_exactly, query, select

from drillkit import pgbin
from drillkit.catalog import LocalCatalog
from drillkit.exceptions import NoRestorableBackupError
from drillkit.gate import ERROR, judge_tier, overall_verdict
from drillkit.restore import restore_and_prove
from drillkit.sandbox.local import LocalSandboxBackend
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def _is_15(coordinate: dict, record: dict) -> None:
    assert coordinate["backup"]["pg_major"] == 15
    assert coordinate["postgres"]["major"] == 15
    assert record["postgres"]["version"].startswith("15.")
    ((version,),) = query(record["endpoints"]["postgres"], "show server_version_num")
    assert version.startswith("15")


def test_pg15_every_target_restores_exactly_the_ground_truth(pg15_scenario):
    repo, truth = pg15_scenario
    assert truth["postgres"]["major"] == 15
    # Each target lies between two batches: the earlier batch is there, the later one is not.
    assert_every_target_restores_exactly(repo, truth, name="pg15", also=_is_15)


def test_pg15_catalog_reads_the_major_and_its_wal(pg15_scenario):
    repo, truth = pg15_scenario
    snapshot = LocalCatalog(repo).snapshot()
    assert {b.pg_major for b in snapshot.backups} == {15}
    assert {b.verification.status for b in snapshot.backups} == {"verified"}
    assert {s.major for s in snapshot.archive.segments.values()} == {15}
    assert all(index.error is None for index in snapshot.segments.values())
    assert snapshot.installations[15].version.startswith("15.")
    result = subprocess.run(
        [DRILLKIT, "catalog", str(repo)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    first = truth["backups"][0]["backup_id"]
    line = next(row for row in result.stdout.splitlines() if row.startswith(first))
    assert line.split()[1] == "15"  # the pg column


def test_pg15_corrupt_newest_falls_back_to_the_older_backup(damaged_pg15_scenario):
    repo, truth = damaged_pg15_scenario(corrupt_newest=True)
    newest = truth["backups"][-1]["backup_id"]
    target = truth["targets"][-1]
    coordinate = select(repo, target["target"])
    rejected = {c["backup_id"]: c for c in coordinate["candidates"]}[newest]
    assert rejected["code"] == "BACKUP_CHECKSUM_MISMATCH"
    assert coordinate["backup_id"] == truth["backups"][0]["backup_id"]
    backend = LocalSandboxBackend()
    record = backend.provision(coordinate, drill_id="t", name="pg15-fb", ttl=timedelta(hours=1))
    try:
        endpoint = record["endpoints"]["postgres"]
        assert query(endpoint, "select max(id) from orders") == [(target["max_id"],)]
    finally:
        backend.teardown(record["id"])


def test_pg15_wal_gap_is_named(damaged_pg15_scenario):
    repo, truth = damaged_pg15_scenario(remove_wal_after_batch=1)
    missing = truth["batches"][1]["segment_after"]
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, truth["targets"][1]["target"])
    assert caught.value.code == "WAL_GAP"
    assert missing in str(caught.value)
    earlier = select(repo, truth["targets"][0]["target"])
    assert earlier["backup_id"] == truth["backups"][0]["backup_id"]


def test_pg15_target_after_the_archive_end(pg15_scenario):
    repo, truth = pg15_scenario
    after = parse_iso(truth["end"]) + timedelta(seconds=30)
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, after.isoformat(), now=after + timedelta(minutes=1))
    assert caught.value.code == "TARGET_AFTER_ARCHIVE_END"


def test_pg15_integrity_with_amcheck(pg15_scenario):
    repo, truth = pg15_scenario
    target = truth["targets"][1]
    result = restore_and_prove(
        repo=repo,
        target=target["target"],
        policy="latest",
        rpo="0s",
        truth_path=repo.parent / "truth.json",
        keep=False,
        say=lambda _m: None,
    )
    assert result["verdict"] == "PASS", result["summary"]
    assert result["sandbox"]["postgres"]["major"] == 15
    checks = {c["name"]: c for c in result["validation"]["results"]}
    assert checks["recovery-point"]["status"] == "passed"
    integrity = checks["full-read"]
    assert integrity["status"] == "passed"
    assert integrity["observed"]["amcheck"] == "passed"
    assert integrity["observed"]["indexes_checked"] >= 2


def test_hidden_pg15_binaries_are_could_not_verify_not_fail(pg15_scenario, workdir, monkeypatch):
    repo, truth = pg15_scenario
    empty = workdir / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("DRILLKIT_PG_DISCOVER", "off")
    monkeypatch.setenv("DRILLKIT_PG_BINDIR_15", str(empty))
    snapshot = LocalCatalog(repo).snapshot()
    assert 15 in snapshot.missing_majors
    for backup in snapshot.backups:
        code, sentence = backup.problems[0]
        assert code == "PG_BINARIES_MISSING"
        for words in ("PostgreSQL 15", "postgresql-15", "postgresql15-server", str(empty)):
            assert words in sentence
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, truth["targets"][0]["target"])
    assert caught.value.code == "PG_BINARIES_MISSING"
    assert "WAL_SEGMENT_DAMAGED" not in str(caught.value)
    judgement = judge_tier(
        "primary",
        selected=True,
        coordinate=None,
        sandbox=None,
        validation=None,
        errors=[caught.value.to_dict()],
        rto_seconds=600,
        dry_run=False,
    )
    assert judgement.status == ERROR
    assert overall_verdict([judgement]) == "COULD NOT VERIFY"
    for command in (["restore", str(repo)], ["catalog", str(repo)]):
        result = subprocess.run([DRILLKIT, *command], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "PG_BINARIES_MISSING" in result.stdout + result.stderr
        assert "WAL_SEGMENT_DAMAGED" not in result.stdout + result.stderr


def test_the_wrong_majors_binaries_are_refused_with_the_path(pg15_scenario, monkeypatch):
    """What the bundled 18 used to do to 15 WAL ("could not find a valid record") cannot
    happen: a bin directory of another major is refused by its --version."""
    repo, _truth = pg15_scenario
    wrong = pgbin.embedded().bindir
    monkeypatch.setenv("DRILLKIT_PG_BINDIR_15", str(wrong))
    snapshot = LocalCatalog(repo).snapshot()
    code, sentence = snapshot.missing_majors[15]
    assert code == "PG_BINARIES_MISMATCH"
    assert str(wrong) in sentence and "not 15" in sentence
    rows = json.loads(
        subprocess.run(
            [DRILLKIT, "catalog", str(repo), "--json"], capture_output=True, text=True, timeout=300
        ).stdout
    )
    assert {r["code"] for r in rows} == {"PG_BINARIES_MISMATCH"}


def _upgrade_into(repo: Path, directory: Path) -> str:
    """What an in-place upgrade leaves in the archive: a PostgreSQL 18 cluster whose WAL
    continues the old one's segment numbers (pg_upgrade runs pg_resetwal -l the same way),
    archiving into the same wal/. Returns the time of its commit."""
    from drillkit.sandbox.local import stop_server
    from drillkit.scenario import _sql, _switch

    wal = repo / "wal"
    last = max(p.name for p in wal.iterdir() if len(p.name) == 24)
    following = f"{last[:16]}{int(last[16:], 16) + 1:08X}"
    new, sock = directory / "upgraded", directory / "sock"
    sock.mkdir()
    for path in (directory, sock, wal):
        pgbin.give_to_server_user(path)
    pg18 = pgbin.for_major(18)
    pg18.run("initdb", ["-D", str(new), "-U", "postgres", "--auth=trust", "--data-checksums"])
    pg18.run("pg_resetwal", ["-l", following, "-D", str(new)])
    with (new / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = ''\nunix_socket_directories = '{sock}'\narchive_mode = on\n"
            f"archive_command = 'cp %p {wal}/%f'\nfsync = off\ntimezone = 'UTC'\n"
        )
    pg18.run("pg_ctl", ["-D", str(new), "-l", str(directory / "new.log"), "-w", "start"])
    try:
        _sql(sock, "create database app", db="postgres")
        _sql(sock, "create table heartbeat (at timestamptz primary key default clock_timestamp())")
        _switch(sock)
        ((committed,),) = _sql(sock, "select max(at) from heartbeat")
        _switch(sock)
    finally:
        stop_server(new, pg18)
    return committed.isoformat()


def test_archive_with_segments_of_two_majors(damaged_pg15_scenario, workdir):
    repo, truth = damaged_pg15_scenario()
    upgraded_at = _upgrade_into(repo, workdir)
    snapshot = LocalCatalog(repo).snapshot()
    majors = {s.name: s.major for s in snapshot.archive.segments.values()}
    assert set(majors.values()) == {15, 18}
    for name, major in majors.items():
        index = snapshot.segments[name]
        assert index.error is None, f"{name} (PostgreSQL {major}) read as damaged: {index.error}"
    newer = [n for n, m in majors.items() if m == 18]
    assert any(snapshot.segments[n].records for n in newer)  # read with 18's own pg_waldump
    assert {b.verification.status for b in snapshot.backups} == {"verified"}
    # Before the upgrade: the 15 backup restores exactly, with 15's binaries.
    expected = truth["targets"][-1]
    coordinate = select(repo, expected["target"])
    assert coordinate["postgres"]["major"] == 15
    backend = LocalSandboxBackend()
    record = backend.provision(coordinate, drill_id="t", name="two-majors", ttl=timedelta(hours=1))
    try:
        _is_15(coordinate, record)
        assert query(record["endpoints"]["postgres"], "select max(id) from orders") == [
            (expected["max_id"],)
        ]
    finally:
        backend.teardown(record["id"])
    # After it: no PostgreSQL 15 backup reaches that far, and the 18 WAL is not called damaged.
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, upgraded_at)
    assert caught.value.code == "WAL_OTHER_MAJOR"
    reasons = " ".join(c["reason"] for c in caught.value.details["candidates"])
    assert "written by PostgreSQL 18" in reasons
    assert "WAL_SEGMENT_DAMAGED" not in str(caught.value.details)
    shutil.rmtree(workdir / "upgraded", ignore_errors=True)
