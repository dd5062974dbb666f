"""Extracting tar-format backups: the layout a sandbox gets, and every way out refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from drillkit import pgbin
from drillkit.exceptions import SandboxError
from drillkit.sandbox.untar import extract_backup

pytestmark = pytest.mark.unit

LABEL = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
VERSION_DIR = "PG_18_202506291"


def member(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    info.mode = 0o600
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def write_tar(archive: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode, format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return archive


def base_members(tablespace_map: bytes | None = b"16384 /srv/prod/ts1\n") -> list:
    members = [member("backup_label", LABEL)]
    if tablespace_map is not None:
        members.append(member("tablespace_map", tablespace_map))
    return [
        *members,
        member("PG_VERSION", b"18\n"),
        member("postmaster.pid", b"4242\n"),  # never restored, like the plain copy
        member("pg_wal", type=tarfile.DIRTYPE, mode=0o700),
        member("./pg_wal/archive_status", type=tarfile.DIRTYPE, mode=0o700),
        member("pg_tblspc", type=tarfile.DIRTYPE, mode=0o700),
        member("base/5/1259", b"\1" * 8192),  # its directories are not listed first
    ]


def tar_backup(root: Path, fmt: str = "tar.gz", base: list | None = None) -> Path:
    backup = root / "backup"
    backup.mkdir()
    (backup / "backup_manifest").write_text("{}")
    write_tar(backup / f"base.{fmt}", base if base is not None else base_members())
    write_tar(backup / f"pg_wal.{fmt}", [member("000000010000000000000002", b"\0" * 16384)])
    write_tar(backup / f"16384.{fmt}", [member(f"{VERSION_DIR}/5/16385", b"\2" * 8192)])
    return backup


def server_owner() -> tuple[int, int]:
    user = pgbin.os_user()
    return (user.uid, user.gid) if user else (os.getuid(), os.getgid())


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_extracts_base_wal_and_tablespaces_into_the_data_directory(tmp_path: Path, fmt: str):
    backup = tar_backup(tmp_path, fmt)
    data = tmp_path / "sandbox" / "data"
    data.parent.mkdir()
    said: list[str] = []
    progress: list[tuple[int, int]] = []
    owner = server_owner()
    written = extract_backup(
        backup, data, owner=owner, progress=lambda d, t: progress.append((d, t)), say=said.append
    )
    assert (data / "backup_label").read_bytes() == LABEL
    assert (data / "base" / "5" / "1259").read_bytes() == b"\1" * 8192
    assert (data / "pg_wal" / "000000010000000000000002").stat().st_size == 16384
    assert (data / "pg_wal" / "archive_status").is_dir()
    # The tablespace is a directory inside the data directory, not a link to production's path.
    tablespace = data / "pg_tblspc" / "16384"
    assert tablespace.is_dir() and not tablespace.is_symlink()
    assert (tablespace / VERSION_DIR / "5" / "16385").read_bytes() == b"\2" * 8192
    assert not (data / "tablespace_map").exists()
    assert not (data / "postmaster.pid").exists()
    assert not (data / "backup_manifest").exists()
    assert written == len(LABEL) + 3 + 8192 + 16384 + 8192
    total = sum(p.stat().st_size for p in backup.glob(f"*.{fmt}"))
    assert progress[-1] == (total, total)
    assert said == ["tablespace 16384 (production: /srv/prod/ts1) restored inside the sandbox"]
    for path in [data, *data.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == owner, path
        assert stat.S_IMODE(st.st_mode) == (0o700 if path.is_dir() else 0o600), path
        assert not path.is_symlink()


ESCAPES = {
    "absolute path": lambda out: member(str(out / "evil"), b"x"),
    "dot-dot": lambda out: member("../evil", b"x"),
    "dot-dot inside": lambda out: member("base/../../evil", b"x"),
    "absolute symlink": lambda out: member("pg_tblspc/1", type=tarfile.SYMTYPE, linkname=str(out)),
    "relative symlink": lambda out: member("base/x", type=tarfile.SYMTYPE, linkname="../../.."),
    "symlink inside": lambda out: member("base/x", type=tarfile.SYMTYPE, linkname="../global"),
    "hard link": lambda out: member("base/h", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
    "device": lambda out: member("base/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    "fifo": lambda out: member("base/fifo", type=tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("how", list(ESCAPES))
def test_a_member_that_could_leave_the_sandbox_is_refused(tmp_path: Path, how: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    sandbox = tmp_path / "sandbox" / "deep"
    sandbox.mkdir(parents=True)
    evil = ESCAPES[how](outside)
    backup = tar_backup(tmp_path, base=[*base_members(), evil, member("base/5/after", b"y")])
    with pytest.raises(SandboxError) as caught:
        extract_backup(backup, sandbox / "data", owner=None)
    assert caught.value.code == "BACKUP_ARCHIVE_UNSAFE"
    assert repr(evil[0].name) in str(caught.value)
    assert "base.tar.gz" in str(caught.value)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "outside", "sandbox"]
    assert not (sandbox / "evil").exists()
    assert not (sandbox / "data" / "base" / "5" / "after").exists()  # stopped at the member


def test_a_member_listed_twice_is_refused(tmp_path: Path):
    backup = tar_backup(tmp_path, base=[*base_members(), member("PG_VERSION", b"17\n")])
    with pytest.raises(SandboxError, match="File exists"):
        extract_backup(backup, tmp_path / "data", owner=None)


def test_a_mapped_tablespace_without_its_archive_is_incomplete(tmp_path: Path):
    backup = tar_backup(tmp_path, base=base_members(b"16384 /srv/a\n16390 /srv/b\n"))
    with pytest.raises(SandboxError) as caught:
        extract_backup(backup, tmp_path / "data", owner=None)
    assert caught.value.code == "BACKUP_INCOMPLETE"
    assert "16390" in str(caught.value) and "16384" not in str(caught.value)


def test_an_archive_cut_short_is_incomplete(tmp_path: Path):
    backup = tar_backup(tmp_path)
    archive = backup / "pg_wal.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(SandboxError) as caught:
        extract_backup(backup, tmp_path / "data", owner=None)
    assert caught.value.code == "BACKUP_INCOMPLETE"
    assert "pg_wal.tar.gz" in str(caught.value) and "cut short" in str(caught.value)


def test_damaged_archive_bytes_are_a_checksum_mismatch(tmp_path: Path):
    backup = tar_backup(tmp_path)
    archive = backup / "base.tar.gz"
    archive.write_bytes(gzip.compress(os.urandom(1024)))  # sound gzip, but no tar inside
    with pytest.raises(SandboxError) as caught:
        extract_backup(backup, tmp_path / "data", owner=None)
    assert caught.value.code == "BACKUP_CHECKSUM_MISMATCH"


def test_a_compression_python_cannot_read_is_refused_with_the_fix(tmp_path: Path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "base.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(SandboxError) as caught:
        extract_backup(backup, tmp_path / "data", owner=None)
    assert caught.value.code == "BACKUP_UNVERIFIABLE"
    assert "zstd -d" in str(caught.value) and "--compress=gzip" in str(caught.value)
    assert not (tmp_path / "data").exists()
