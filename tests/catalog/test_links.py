"""The lstat walk of a backup: which links a backup may hold, and everything it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drillkit.catalog.links import scan_backup

pytestmark = pytest.mark.unit


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    root = tmp_path / "base" / "b01"
    (root / "base" / "1").mkdir(parents=True)
    (root / "pg_tblspc").mkdir()
    (root / "backup_label").write_text("START WAL LOCATION: 0/2000028\n")
    (root / "base" / "1" / "1259").write_bytes(b"x" * 8192)
    return root


def _tablespace(tmp_path: Path, name: str = "ts") -> Path:
    place = tmp_path / name
    (place / "PG_18_202506291" / "5").mkdir(parents=True)
    (place / "PG_18_202506291" / "5" / "16400").write_bytes(b"y" * 100)
    return place


def test_a_plain_backup_with_a_tablespace_link_is_safe(backup: Path, tmp_path: Path) -> None:
    place = _tablespace(tmp_path)
    (backup / "pg_tblspc" / "16390").symlink_to(place)
    found = scan_backup(backup)
    assert found.unsafe == []
    assert found.tablespaces == {"16390": place.resolve()}
    assert found.size_bytes == len("START WAL LOCATION: 0/2000028\n") + 8192 + 100


@pytest.mark.parametrize(
    ("where", "target", "why"),
    [
        ("base/1/1259", "/etc/shadow", "a symlink"),
        ("global", "/etc", "a symlink"),
        ("pg_tblspc/16390", "/", "holds the backup itself"),
        ("pg_tblspc/16390", "/etc", "not a tablespace directory"),
        ("pg_tblspc/16390", "..", "holds the backup itself"),
        ("pg_tblspc/16390", "/nonexistent-drillkit", "not a directory"),
        ("pg_tblspc/abc", "/tmp", "a symlink"),
    ],
)
def test_links_out_of_place_are_refused(backup: Path, where: str, target: str, why: str) -> None:
    path = backup / where
    if path.is_dir() and not path.is_symlink():
        path.rename(path.with_name(path.name + ".gone"))
    elif path.exists():
        path.unlink()
    path.symlink_to(target)
    found = scan_backup(backup)
    assert len(found.unsafe) == 1 and why in found.unsafe[0], found.unsafe
    assert f"-> {target}" in found.sentence(backup)
    assert found.code == "BACKUP_UNSAFE_LINK"


def test_a_link_inside_a_tablespace_is_refused(backup: Path, tmp_path: Path) -> None:
    place = _tablespace(tmp_path)
    (place / "PG_18_202506291" / "5" / "16401").symlink_to("/etc/passwd")
    (backup / "pg_tblspc" / "16390").symlink_to(place)
    (found,) = scan_backup(backup).unsafe
    assert found.startswith("in tablespace 16390") and "/etc/passwd" in found


def test_special_files_and_a_linked_backup_directory_are_refused(
    backup: Path, tmp_path: Path
) -> None:
    os.mkfifo(backup / "base" / "1" / "pipe")
    assert "a special file" in scan_backup(backup).unsafe[0]
    alias = tmp_path / "base" / "b02"
    alias.symlink_to(backup)
    assert "a symlink" in scan_backup(alias).unsafe[0]


def test_a_tar_backup_may_hold_no_link_at_all(tmp_path: Path) -> None:
    root = tmp_path / "b03"
    root.mkdir()
    (root / "base.tar.gz").symlink_to("/etc/shadow")
    (root / "backup_manifest").write_text("{}")
    (found,) = scan_backup(root).unsafe
    assert "base.tar.gz -> /etc/shadow" in found
