"""Files are read as files: a backup's links and unreadable files never reach the host's files.

Each test plants a link (or a root-only file) in a copy of a real scenario's backup and proves that
neither the catalog, nor pg_verifybackup, nor the copy into a sandbox reads through it; the
repository is hashed before and after.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import query, select, tree_digest

from drillkit.catalog import LocalCatalog
from drillkit.catalog.verify import verify_backup
from drillkit.exceptions import SandboxError
from drillkit.sandbox.local import LocalSandboxBackend

pytestmark = pytest.mark.integration
SECRET = "drillkit-host-secret-7f3a"


@pytest.fixture
def secret(workdir: Path) -> Path:
    """A root-only host file (0600 in a 0700 directory): what a hostile backup would read."""
    place = workdir / "host-only"
    place.mkdir(mode=0o700)
    path = place / "shadow"
    path.write_text(SECRET * 200)
    path.chmod(0o600)
    return path


def _holds_secret(root: Path) -> list[Path]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink() and SECRET.encode() in path.read_bytes():
                hits.append(path)
    return hits


def _link_relation(backup: Path, relation: str, target: Path) -> Path:
    """Replace the backup's copy of a table with a link to ``target``."""
    path = backup / relation
    path.unlink()
    path.symlink_to(target)
    return path


def test_a_linked_file_refuses_the_backup_and_an_older_one_restores(damaged_scenario, secret):
    repo, truth = damaged_scenario()
    newest = truth["backups"][-1]["backup_id"]
    link = _link_relation(repo / "base" / newest, truth["relation"], secret)
    before = tree_digest(repo)
    target = truth["targets"][-1]
    coordinate = select(repo, target["target"])
    rejected = {c["backup_id"]: c for c in coordinate["candidates"]}[newest]
    assert rejected["code"] == "BACKUP_UNSAFE_LINK"
    assert f"a symlink {link} -> {secret}" in rejected["reason"]
    assert coordinate["backup_id"] == truth["backups"][-2]["backup_id"]
    backend = LocalSandboxBackend()
    record = backend.provision(coordinate, drill_id="t", name="links", ttl=timedelta(hours=1))
    try:
        endpoint = record["endpoints"]["postgres"]
        assert query(endpoint, "select max(id) from orders") == [(target["max_id"],)]
        assert _holds_secret(Path(record["path"])) == []
    finally:
        backend.teardown(record["id"])
    assert tree_digest(repo) == before, "a drill wrote into the repository it drilled"


def test_a_link_planted_after_selection_is_refused_by_the_copy(damaged_scenario, secret):
    repo, truth = damaged_scenario()
    coordinate = select(repo, truth["targets"][-1]["target"])
    backup = Path(coordinate["backup_path"])
    (backup / "global" / "pg_stat_extra").symlink_to(secret)
    before = tree_digest(repo)
    backend = LocalSandboxBackend()
    with pytest.raises(SandboxError) as caught:
        backend.provision(
            coordinate, drill_id="t", name="late-link", ttl=timedelta(hours=1), sandbox_id="late-1"
        )
    assert caught.value.code == "BACKUP_UNSAFE_LINK"
    assert "global/pg_stat_extra" in str(caught.value)
    sandbox = backend.path("late-1")
    try:
        assert not (sandbox / "data").exists(), "nothing is copied from a refused backup"
        assert _holds_secret(sandbox) == []
    finally:
        backend.teardown("late-1")
    assert tree_digest(repo) == before


def test_a_tablespace_link_to_the_root_is_never_walked(damaged_scenario):
    repo, truth = damaged_scenario()
    newest = repo / "base" / truth["backups"][-1]["backup_id"]
    (newest / "pg_tblspc" / "424242").symlink_to("/")
    before = tree_digest(repo)
    started = time.monotonic()
    verification = verify_backup(newest, use_cache=False)
    assert verification.code == "BACKUP_UNSAFE_LINK"
    assert "pg_tblspc/424242 -> /" in verification.detail
    snapshot = LocalCatalog(repo).snapshot(use_cache=False)
    info = {b.backup_id: b for b in snapshot.backups}[newest.name]
    assert [code for code, _ in info.problems] == ["BACKUP_UNSAFE_LINK"]
    assert time.monotonic() - started < 60, "verification walked the host"
    assert tree_digest(repo) == before


@pytest.mark.parametrize("where", ["/etc", "..", "../../.."])
def test_a_tablespace_link_out_of_a_tablespace_is_refused_by_the_copy(
    damaged_scenario, workdir: Path, where: str
):
    repo, truth = damaged_scenario()
    backup = repo / "base" / truth["backups"][0]["backup_id"]
    (backup / "pg_tblspc" / "31337").symlink_to(where)
    before = tree_digest(repo)
    from drillkit.sandbox.copy import copy_backup

    with pytest.raises(SandboxError) as caught:
        copy_backup(backup, workdir / "data", owner=None)
    assert caught.value.code == "BACKUP_UNSAFE_LINK"
    assert "not a tablespace directory" in str(caught.value) or "holds the backup" in str(
        caught.value
    )
    assert not (workdir / "data").exists()
    assert tree_digest(repo) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the copy runs as another OS user")
def test_the_copy_runs_as_the_postgres_user_and_cannot_read_root_only_files(damaged_scenario):
    repo, truth = damaged_scenario()
    coordinate = select(repo, truth["targets"][-1]["target"])
    backup = Path(coordinate["backup_path"])
    hidden = backup / "global" / "root_only"
    hidden.write_text(SECRET)
    os.chown(hidden, 0, 0)
    hidden.chmod(0o600)
    relation = backup / truth["relation"]  # listed in the manifest: verification must open it
    os.chown(relation, 0, 0)
    relation.chmod(0o600)
    before = tree_digest(repo)
    backend = LocalSandboxBackend()
    with pytest.raises(SandboxError) as caught:
        backend.provision(
            coordinate, drill_id="t", name="unreadable", ttl=timedelta(hours=1), sandbox_id="unr-1"
        )
    assert caught.value.code == "BACKUP_UNREADABLE"  # not a verdict on the backup
    assert "Permission denied" in str(caught.value)
    try:
        assert _holds_secret(backend.path("unr-1")) == []
    finally:
        backend.teardown("unr-1")
    verification = verify_backup(backup, use_cache=False)
    assert verification.status == "unverifiable" and "cannot read" in verification.detail
    assert tree_digest(repo) == before
