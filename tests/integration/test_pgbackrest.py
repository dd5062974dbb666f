"""pgBackRest repositories end to end: real pgBackRest 2.45 and PostgreSQL 15, ground truth.

Every test drills a copy of one stanza (full after batch 0, incremental after batch 2) and proves
the repository is byte-identical (content, size and mtime of every file) afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import query, tree_digest

from drillkit import drill
from drillkit.catalog.registry import open_repository
from drillkit.exceptions import BackupError, NoRestorableBackupError
from drillkit.scenario import ScenarioOptions
from drillkit.timeutil import isoformat, parse_iso, parse_target_time

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest is not installed"),
]


@pytest.fixture
def repository(pgbackrest_stanza, workdir: Path):
    """Factory: a copy of the stanza's repository with damage applied; its catalog config
    points pgBackRest at the copy through ``options`` (repo1-path)."""
    from drillkit.scenario_pgbackrest import apply_pgbackrest_damage

    def make(**damage) -> tuple[dict, dict, Path]:
        directory, truth = pgbackrest_stanza
        subprocess.run(["cp", "-a", str(directory / "repo"), str(workdir / "repo")], check=True)
        truth = dict(truth)
        truth["damage"] = apply_pgbackrest_damage(
            workdir, truth, ScenarioOptions(tool="pgbackrest", **damage), lambda _m: None
        )
        catalog = {
            "kind": "pgbackrest",
            "stanza": truth["stanza"],
            "config": truth["config"],
            "options": {"repo1-path": str(workdir / "repo")},
        }
        return catalog, truth, workdir / "repo"

    return make


def _restore(catalog: dict, coordinate: dict, tier: str = "only") -> dict:
    drill_id = drill.drill_id_for("pgbackrest-test", coordinate["backup_id"] + tier)
    return drill.provision(
        coordinate,
        sandbox={"kind": "local"},  # its unix socket: a TCP port asks for a password
        drill="pgbr",
        drill_id=drill_id,
        sandbox_id=drill.sandbox_id_for("pgbr", "test", drill_id, tier),
        ttl=timedelta(hours=1),
        dry_run=False,
    )


def _select(catalog: dict, target: str | None, **kwargs) -> dict:
    options = {"policy": "latest", "rpo": timedelta(0), "exclude": [], "pinned": None}
    options.update(kwargs)
    return drill.select(catalog, target=parse_target_time(target) if target else None, **options)


def _max_id(record: dict) -> int:
    return query(record["endpoints"]["postgres"], "select max(id) from orders")[0][0]


def test_pitr_between_batches_from_the_full_and_from_the_incremental(repository):
    catalog, truth, repo = repository()
    before = tree_digest(repo)
    full, incr = (b["backup_id"] for b in truth["backups"])
    # Batch 0 is before the incremental ends: only the full reaches it.
    for target, expected_backup in ((truth["targets"][0], full), (truth["targets"][3], incr)):
        coordinate = _select(catalog, target["target"])
        assert coordinate["backup_id"] == expected_backup
        assert coordinate["backup"]["tool"] == "pgbackrest"
        assert coordinate["backup"]["pg_major"] == 15 and coordinate["postgres"]["major"] == 15
        assert coordinate["catalog"]["kind"] == "pgbackrest"
        record = _restore(catalog, coordinate)
        try:
            assert _max_id(record) == target["max_id"]
            endpoint = record["endpoints"]["postgres"]
            absent = query(
                endpoint, f"select count(*) from orders where id >= {target['absent_id']}"
            )
            assert absent == [(0,)]
            # The sandbox owns recovery: WAL staged inside it (the sealed server reaches no
            # repository), archiving off.
            settings = dict(
                query(
                    endpoint,
                    "select name, setting from pg_settings where name in "
                    "('archive_mode', 'restore_command')",
                )
            )
            assert settings["archive_mode"] == "off"
            assert "archive-get" not in settings["restore_command"]
            assert settings["restore_command"].startswith("cp -- ")
            assert record["path"] in settings["restore_command"]  # paths inside the sandbox
        finally:
            drill.teardown(record, keep=False, keep_ttl=timedelta(0))
    assert coordinate["backup"]["type"] == "incr"
    assert coordinate["backup"]["depends_on"] == [full]
    assert tree_digest(repo) == before


def test_damaged_newest_set_falls_back_to_the_previous_one_and_passes(repository):
    catalog, truth, repo = repository(corrupt_newest=True)
    before = tree_digest(repo)
    full, incr = (b["backup_id"] for b in truth["backups"])
    first = _select(catalog, None, checksum_gate=True)
    assert first["backup_id"] == incr
    assert first["backup"]["verification"] == "checksum_mismatch"
    with pytest.raises(BackupError) as gated:
        _restore(catalog, first, "primary")
    assert gated.value.code == "BACKUP_CHECKSUM_MISMATCH"
    second = _select(catalog, None, checksum_gate=True, exclude=[incr])
    assert second["backup_id"] == full
    record = _restore(catalog, second, "secondary")
    try:
        assert _max_id(record) == truth["batches"][-1]["last_id"]
    finally:
        drill.teardown(record, keep=False, keep_ttl=timedelta(0))
    snapshot = open_repository(catalog).snapshot()
    damaged = next(b for b in snapshot.backups if b.backup_id == incr)
    assert "invalid checksum" in damaged.verification.detail
    assert truth["relation"] in damaged.verification.detail  # the damaged file is named
    assert damaged.verification.cached  # the second look did not verify again
    assert tree_digest(repo) == before


def test_incremental_whose_full_is_damaged_is_refused_with_the_reason(repository, workdir):
    from drillkit.scenario_pgbackrest import backup_file, corrupt_file

    catalog, truth, repo = repository()
    full, incr = (b["backup_id"] for b in truth["backups"])
    # filler did not change after the full: the incremental references the full's copy.
    corrupt_file(backup_file(workdir, full, truth["filler_relation"]))
    before = tree_digest(repo)
    with pytest.raises(NoRestorableBackupError) as refused:
        _select(catalog, None, checksum_gate=False)  # a drill tier would gate the full later
    by_id = {c["backup_id"]: c for c in refused.value.details["candidates"]}
    assert by_id[incr]["code"] == "BACKUP_REFERENCE_FAILED"
    assert full in by_id[incr]["reason"] and "failed verification" in by_id[incr]["reason"]
    assert by_id[full]["code"] == "BACKUP_CHECKSUM_MISMATCH"
    assert tree_digest(repo) == before


def test_a_missing_wal_segment_is_a_named_gap(repository):
    catalog, truth, repo = repository(remove_wal_after_batch=3)
    before = tree_digest(repo)
    segment = truth["batches"][3]["segment_after"]
    assert truth["damage"] and segment in truth["damage"][0]
    with pytest.raises(NoRestorableBackupError) as refused:
        _select(catalog, None)
    assert refused.value.code == "WAL_GAP"
    assert segment in str(refused.value)
    # A target before the gap is still restorable from the incremental.
    coordinate = _select(catalog, truth["targets"][2]["target"])
    assert coordinate["backup_id"] == truth["backups"][1]["backup_id"]
    assert tree_digest(repo) == before


def test_a_target_past_the_archive_is_refused(repository):
    catalog, truth, repo = repository()
    before = tree_digest(repo)
    past = isoformat(parse_iso(truth["end"]) + timedelta(seconds=1))
    with pytest.raises(NoRestorableBackupError) as refused:
        _select(catalog, past)
    assert "TARGET_AFTER_ARCHIVE_END" in {c["code"] for c in refused.value.details["candidates"]}
    assert tree_digest(repo) == before


def test_a_tablespace_is_restored_inside_the_sandbox(work_root: Path):
    """pgBackRest restores tablespaces to their original paths unless mapped: drillkit maps
    them all under the sandbox (--tablespace-map-all); production's path is never written."""
    from drillkit.scenario import create_scenario

    directory = work_root / "scenario-pgbackrest-tablespace"
    options = ScenarioOptions(
        tool="pgbackrest", batches=2, rows_per_batch=50, backups_after=(0,), initial_mb=0,
        tablespace=True,
    )  # fmt: skip
    truth = create_scenario(directory, options, say=lambda _m: None)
    production_path = Path(truth["tablespace"]["path"])
    assert not production_path.exists()  # the scenario removed production's tablespace
    catalog = {"kind": "pgbackrest", "stanza": truth["stanza"], "config": truth["config"]}
    before = tree_digest(directory / "repo")
    record = _restore(catalog, _select(catalog, None))
    try:
        endpoint = record["endpoints"]["postgres"]
        ((location,),) = query(
            endpoint,
            "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'side'",
        )
        assert location.startswith(record["path"] + "/"), location
        assert query(endpoint, "select count(*) from ledger") == [(500,)]
        assert not production_path.exists()
    finally:
        drill.teardown(record, keep=False, keep_ttl=timedelta(0))
    assert tree_digest(directory / "repo") == before
