"""Tar-format backups (pg_basebackup -Ft, gzipped or not): catalog, restore, refusals, for real."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import (
    assert_every_target_restores_exactly,
    assert_restores_with_tablespace,
    assert_tablespace_inside,
    select,
)

from drillkit.catalog import LocalCatalog
from drillkit.catalog.backups import parse_label
from drillkit.catalog.verify import verify_backup
from drillkit.catalog.wal import format_lsn
from drillkit.exceptions import SandboxError
from drillkit.pitr import select_coordinate
from drillkit.sandbox.local import LocalSandboxBackend
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration


def archive_member(archive: Path, name: str) -> str:
    """A member's text as GNU tar reads it: a second opinion, independent of drillkit's reader."""
    result = subprocess.run(
        ["tar", "-xzOf", str(archive), name], check=True, capture_output=True, text=True
    )
    return result.stdout


def test_catalog_reads_tar_backups_with_their_lsns_and_times(tar_scenario):
    repo, truth = tar_scenario
    snapshot = LocalCatalog(repo).snapshot()
    assert [b.backup_id for b in snapshot.backups] == [b["backup_id"] for b in truth["backups"]]
    commits = [parse_iso(b["committed_at"]) for b in truth["batches"]]
    for info, taken in zip(snapshot.backups, truth["backups"], strict=True):
        backup = repo / "base" / info.backup_id
        assert sorted(p.name for p in backup.iterdir()) == [
            *sorted(p.name for p in backup.glob("[0-9]*.tar.gz")),
            "backup_manifest",
            "base.tar.gz",
            "pg_wal.tar.gz",
        ]
        assert (info.format, info.problems) == ("tar.gz", ())
        assert info.verification.status == "verified", info.verification.detail
        label = parse_label(archive_member(backup / "base.tar.gz", "backup_label"))
        assert format_lsn(info.start_lsn) == _padded(label["START WAL LOCATION"].split()[0])
        manifest = json.loads((backup / "backup_manifest").read_text())
        assert format_lsn(info.stop_lsn) == _padded(manifest["WAL-Ranges"][0]["End-LSN"])
        assert info.system_identifier == manifest["System-Identifier"]
        # Taken after its batch committed and before the next one (times in whole seconds).
        after, before = commits[taken["after_batch"]], commits[taken["after_batch"] + 1]
        assert after.replace(microsecond=0) <= info.start_time <= info.stop_time <= before
        assert info.summary()["format"] == "tar.gz"


def _padded(lsn: str) -> str:
    high, low = lsn.split("/")
    return f"{int(high, 16):X}/{int(low, 16):08X}"


def test_verification_of_a_tar_backup_is_remembered_until_an_archive_changes(
    damaged_tar_scenario,
):
    repo, truth = damaged_tar_scenario()
    backup = repo / "base" / truth["backups"][0]["backup_id"]
    first = verify_backup(backup)
    assert (first.status, first.cached) == ("verified", False)
    assert verify_backup(backup).cached is True
    archive = backup / "base.tar.gz"
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-copied, say
    again = verify_backup(backup)
    assert (again.status, again.cached) == ("verified", False)
    assert verify_backup(backup).cached is True


def test_every_target_restores_exactly_the_ground_truth_from_tar_gz(tar_scenario):
    repo, truth = tar_scenario

    def from_tar_gz_with_its_tablespace(coordinate: dict, record: dict) -> None:
        assert coordinate["backup"]["format"] == "tar.gz"
        assert_tablespace_inside(record, truth)

    assert_every_target_restores_exactly(
        repo, truth, name="tar", also=from_tar_gz_with_its_tablespace
    )


def test_uncompressed_tar_backups_verify_and_restore(damaged_tar_scenario):
    repo, truth = damaged_tar_scenario()
    for archive in repo.glob("base/*/*.tar.gz"):
        with gzip.open(archive) as source, archive.with_suffix("").open("wb") as out:
            shutil.copyfileobj(source, out)
        archive.unlink()
    expected = truth["targets"][-1]
    coordinate = select(repo, expected["target"])
    assert coordinate["backup_id"] == truth["backups"][-1]["backup_id"]
    assert (coordinate["backup"]["format"], coordinate["backup"]["verification"]) == (
        "tar",
        "verified",
    )
    assert_restores_with_tablespace(coordinate, truth, name="tar")


@pytest.mark.parametrize(
    ("damage", "status", "words"),
    [
        ("corrupt_newest", "checksum_mismatch", 'checksum mismatch for file "{relation}"'),
        ("truncate_newest", "incomplete", '"{relation}" has size'),
    ],
)
def test_a_damaged_tar_member_fails_verification_and_an_older_backup_is_chosen(
    damaged_tar_scenario, damage, status, words
):
    repo, truth = damaged_tar_scenario(**{damage: True})
    newest = truth["backups"][-1]["backup_id"]
    snapshot = LocalCatalog(repo).snapshot()
    info = {b.backup_id: b for b in snapshot.backups}[newest]
    assert info.verification.status == status
    assert words.format(relation=truth["relation"]) in info.verification.detail
    assert "base.tar.gz" in info.verification.detail
    coordinate = select(repo, truth["targets"][-1]["target"])
    rejected = {c["backup_id"]: c for c in coordinate["candidates"]}[newest]
    assert rejected["code"] == info.verification.code
    assert coordinate["backup_id"] == truth["backups"][-2]["backup_id"]


def _forced_coordinate(repo: Path) -> dict:
    """The newest backup, chosen without the checksum gate (as a drill with it off would)."""
    snapshot = LocalCatalog(repo).snapshot(verify=False)
    return select_coordinate(snapshot, target=None, require_verified=False)


def _failed_sandboxes(backend: LocalSandboxBackend, name: str) -> list[Path]:
    return [p for p in backend.root.iterdir() if p.name.startswith(f"{name}-")]


def test_an_archive_cut_short_is_incomplete_and_not_restored(damaged_tar_scenario):
    repo, truth = damaged_tar_scenario()
    newest = repo / "base" / truth["backups"][-1]["backup_id"]
    archive = newest / "base.tar.gz"
    os.truncate(archive, archive.stat().st_size // 2)
    info = {b.backup_id: b for b in LocalCatalog(repo).snapshot().backups}[newest.name]
    assert (info.verification.status, info.verification.code) == ("incomplete", "BACKUP_INCOMPLETE")
    backend = LocalSandboxBackend()
    with pytest.raises(SandboxError) as caught:
        backend.provision(_forced_coordinate(repo), drill_id="t", name="cut", ttl=timedelta(1))
    assert caught.value.code == "BACKUP_INCOMPLETE"
    assert "base.tar.gz" in str(caught.value) and "cut short" in str(caught.value)
    (failed,) = _failed_sandboxes(backend, "cut")
    assert not (failed / "data" / "postmaster.pid").exists()  # nothing was started
    backend.teardown(failed.name)


def test_a_tar_member_escaping_the_sandbox_is_refused(damaged_tar_scenario):
    repo, truth = damaged_tar_scenario()
    archive = repo / "base" / truth["backups"][-1]["backup_id"] / "base.tar.gz"
    backend = LocalSandboxBackend()
    escape = "../../escaped-from-a-backup"
    landing = backend.root / "escaped-from-a-backup"  # where it would land from <sandbox>/data
    with tarfile.open(archive) as source:
        members = [(m, source.extractfile(m).read() if m.isfile() else None) for m in source]
    evil = tarfile.TarInfo(escape)
    evil.size = 5
    with tarfile.open(archive, "w:gz", format=tarfile.USTAR_FORMAT) as out:
        for member, data in [*members, (evil, b"owned")]:
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    info = LocalCatalog(repo).snapshot().backups[-1]
    assert info.verification.code == "BACKUP_CHECKSUM_MISMATCH"
    assert f'unsafe path name: "{escape}"' in info.verification.detail
    with pytest.raises(SandboxError) as caught:
        backend.provision(_forced_coordinate(repo), drill_id="t", name="escape", ttl=timedelta(1))
    assert caught.value.code == "BACKUP_ARCHIVE_UNSAFE"
    assert repr(escape) in str(caught.value)
    assert not landing.exists()
    (failed,) = _failed_sandboxes(backend, "escape")
    assert not (failed / "data" / "postmaster.pid").exists()
    backend.teardown(failed.name)
