"""Real restores on embedded PostgreSQL: exact ground truth, every fault found, nothing written."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import (
    assert_every_target_restores_exactly,
    assert_restores_with_tablespace,
    query,
    select,
)

from drillkit.catalog import LocalCatalog
from drillkit.exceptions import (
    InvalidInputError,
    NoRestorableBackupError,
    RecoveryTargetNotReachedError,
    SandboxStartError,
)
from drillkit.pitr import select_coordinate
from drillkit.sandbox.gc import collect_local
from drillkit.sandbox.local import LABEL, LocalSandboxBackend
from drillkit.timeutil import parse_iso, parse_target_time

pytestmark = pytest.mark.integration


def test_every_target_between_batches_restores_exactly_the_ground_truth(clean_scenario):
    repo, truth = clean_scenario
    assert_every_target_restores_exactly(repo, truth, name="truth")


def test_tablespaces_of_a_plain_backup_stay_inside_the_sandbox(work_root):
    from drillkit.scenario import ScenarioOptions, create_scenario

    # A short path: the server refuses a tablespace link target over 100 bytes (tar header).
    directory = work_root / "scenario-plain-ts"
    options = ScenarioOptions(batches=2, backups_after=(0,), initial_mb=1, tablespace=True)
    truth = create_scenario(directory, options, say=lambda _m: None)
    repo = directory / "repo"
    backup = repo / "base" / truth["backups"][0]["backup_id"]
    assert next((backup / "pg_tblspc").iterdir()).is_symlink()  # as pg_basebackup -Fp -T writes
    (expected,) = truth["targets"]
    assert_restores_with_tablespace(select(repo, expected["target"]), truth, name="plain-ts")


def test_sandbox_is_isolated_from_production(clean_scenario):
    repo, truth = clean_scenario
    backend = LocalSandboxBackend()
    record = backend.provision(select(repo, None), drill_id="t", name="iso", ttl=timedelta(hours=1))
    try:
        endpoint = record["endpoints"]["postgres"]
        settings = dict(
            query(
                endpoint,
                "select name, setting from pg_settings where name in "
                "('archive_mode', 'listen_addresses', 'primary_conninfo', 'archive_command')",
            )
        )
        assert settings == {
            "archive_mode": "off",
            "listen_addresses": "",
            "primary_conninfo": "",
            "archive_command": "(disabled)",
        }
        assert endpoint["host"].startswith(record["path"])
        assert query(endpoint, "select pg_is_in_recovery()") == [(False,)]
        # Latest restores everything: the final heartbeat after the last batch is there.
        assert query(endpoint, "select max(id) from orders") == [(truth["batches"][-1]["last_id"],)]
    finally:
        backend.teardown(record["id"])
    assert not Path(record["path"]).exists()


def test_two_sandboxes_of_one_drill_never_collide(clean_scenario):
    repo, _ = clean_scenario
    backend = LocalSandboxBackend()
    coordinate = select(repo, None)
    first = backend.provision(coordinate, drill_id="a", name="same", ttl=timedelta(hours=1))
    second = backend.provision(coordinate, drill_id="b", name="same", ttl=timedelta(hours=1))
    try:
        assert first["id"] != second["id"]
        assert first["endpoints"]["postgres"]["host"] != second["endpoints"]["postgres"]["host"]
        assert query(first["endpoints"]["postgres"], "select 1") == [(1,)]
        assert query(second["endpoints"]["postgres"], "select 1") == [(1,)]
    finally:
        backend.teardown(first["id"])
        backend.teardown(second["id"])


def test_checksum_mismatch_in_newest_backup_falls_back_to_older(damaged_scenario):
    repo, truth = damaged_scenario(corrupt_newest=True)
    newest = truth["backups"][-1]["backup_id"]
    target = truth["targets"][-1]
    coordinate = select(repo, target["target"])
    rejected = {c["backup_id"]: c for c in coordinate["candidates"]}[newest]
    assert rejected["code"] == "BACKUP_CHECKSUM_MISMATCH"
    assert "checksum mismatch" in rejected["reason"]
    assert coordinate["backup_id"] == truth["backups"][-2]["backup_id"]
    backend = LocalSandboxBackend()
    record = backend.provision(coordinate, drill_id="t", name="fallback", ttl=timedelta(hours=1))
    try:
        assert query(record["endpoints"]["postgres"], "select max(id) from orders") == [
            (target["max_id"],)
        ]
    finally:
        backend.teardown(record["id"])


def test_truncated_backup_is_incomplete(damaged_scenario):
    repo, truth = damaged_scenario(truncate_newest=True)
    newest = truth["backups"][-1]["backup_id"]
    snapshot = LocalCatalog(repo).snapshot()
    info = {b.backup_id: b for b in snapshot.backups}[newest]
    assert info.verification.status == "incomplete"
    assert info.verification.code == "BACKUP_INCOMPLETE"


def test_wal_gap_names_the_missing_segment(damaged_scenario):
    repo, truth = damaged_scenario(remove_wal_after_batch=1)
    missing = truth["batches"][1]["segment_after"]
    # A target after the gap: the first backup (before the gap) cannot reach it.
    target = truth["targets"][1]["target"]  # between batch 1 and 2, needs batch 1's segment
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, target)
    assert caught.value.code == "WAL_GAP"
    assert missing in str(caught.value)
    candidates = caught.value.details["candidates"]
    assert any(missing in c["reason"] for c in candidates)
    # The segment is needed only up to the first commit after the target: an earlier target
    # restores fine from the first backup.
    earlier = select(repo, truth["targets"][0]["target"])
    assert earlier["backup_id"] == truth["backups"][0]["backup_id"]


def test_wal_gap_within_rpo_restores_to_the_gap_with_a_warning(damaged_scenario):
    repo, truth = damaged_scenario(remove_wal_after_batch=1)
    coordinate = select(repo, truth["targets"][1]["target"], rpo=timedelta(hours=1))
    assert coordinate["target"]["mode"] in ("lsn", "immediate")
    assert coordinate["expected_data_loss_seconds"] > 0
    assert [f["code"] for f in coordinate["findings"]] == ["WAL_GAP"]


def test_target_before_oldest_restorable_point(clean_scenario):
    repo, truth = clean_scenario
    first_commit = parse_iso(truth["batches"][0]["committed_at"])
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, (first_commit - timedelta(minutes=5)).isoformat())
    assert caught.value.code == "TARGET_BEFORE_OLDEST_RESTORABLE"
    assert "oldest restorable point" in str(caught.value)


def test_target_after_archive_end_is_refused_beyond_rpo(clean_scenario):
    repo, truth = clean_scenario
    after = parse_iso(truth["end"]) + timedelta(seconds=30)
    with pytest.raises(NoRestorableBackupError) as caught:
        select(repo, after.isoformat(), now=after + timedelta(minutes=1))
    assert caught.value.code == "TARGET_AFTER_ARCHIVE_END"
    codes = [f["code"] for f in caught.value.details["findings"]]
    assert "DATA_LOSS_OVER_RPO" in codes
    within = select(repo, after.isoformat(), rpo=timedelta(minutes=5), now=after)
    assert within["expected_data_loss_seconds"] == pytest.approx(30, abs=1)


def test_target_that_is_not_a_timestamp_is_refused(clean_scenario):
    repo, _ = clean_scenario
    with pytest.raises(InvalidInputError) as caught:
        select(repo, "2026-11-21 08:00:00'; archive_command='rm -rf /")
    assert caught.value.code == "TARGET_INVALID"


def test_recovery_target_not_reached_is_detected(clean_scenario):
    repo, truth = clean_scenario
    coordinate = select(repo, truth["targets"][0]["target"])
    # Ask the server for a target the archive cannot reach (a forged coordinate).
    coordinate["target"]["time"] = "2099-01-01 00:00:00.000000+00"
    backend = LocalSandboxBackend(start_timeout=120)
    with pytest.raises(RecoveryTargetNotReachedError) as caught:
        backend.provision(coordinate, drill_id="t", name="unreached", ttl=timedelta(hours=1))
    assert caught.value.code == "RECOVERY_TARGET_NOT_REACHED"
    assert collect_local(now=parse_iso("2100-01-01T00:00:00Z"))  # the failed sandbox is found


def test_sandbox_that_fails_to_start_reports_the_server_log(damaged_scenario):
    repo, truth = damaged_scenario()
    control = repo / "base" / truth["backups"][0]["backup_id"] / "global" / "pg_control"
    control.write_bytes(b"\0" * control.stat().st_size)
    snapshot = LocalCatalog(repo).snapshot(verify=False)
    coordinate = select_coordinate(
        snapshot,
        target=parse_target_time(truth["targets"][0]["target"]),
        require_verified=False,
    )
    backend = LocalSandboxBackend()
    with pytest.raises(SandboxStartError) as caught:
        backend.provision(coordinate, drill_id="t", name="broken", ttl=timedelta(1))
    assert caught.value.code == "SANDBOX_START_FAILED"
    assert "server.log" in str(caught.value)
    failed = [p for p in backend.root.iterdir() if p.name.startswith("broken-")]
    assert len(failed) == 1 and (failed[0] / "server.log").exists()  # kept for investigation
    assert not (failed[0] / "data" / "postmaster.pid").exists()  # but nothing left running
    backend.teardown(failed[0].name)


def test_gc_removes_expired_sandboxes_and_only_those(clean_scenario):
    repo, _ = clean_scenario
    backend = LocalSandboxBackend()
    coordinate = select(repo, None)
    expired = backend.provision(coordinate, drill_id="old", name="gc", ttl=timedelta(seconds=0))
    alive = backend.provision(coordinate, drill_id="new", name="gc", ttl=timedelta(hours=1))
    try:
        planned = collect_local(dry_run=True)
        assert [e["id"] for e in planned] == [expired["id"]]
        assert Path(expired["path"]).exists()
        removed = collect_local()
        assert [e["id"] for e in removed] == [expired["id"]]
        assert removed[0]["result"]["was_running"] is True
        assert not Path(expired["path"]).exists()
        assert json.loads((Path(alive["path"]) / LABEL).read_text())["state"] == "ready"
    finally:
        backend.teardown(alive["id"])
