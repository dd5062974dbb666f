"""Tar-format ``pg_basebackup -Ft`` backups: which archives a backup holds, and reading them.

Streaming reads only: nothing here extracts an archive or writes into the repository.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

PLAIN = "plain"
# Archive suffixes pg_basebackup -Ft writes, and the ones drillkit reads (Python has no lz4/zstd).
FORMATS = ("tar", "tar.gz", "tar.lz4", "tar.zst")
READABLE = frozenset({"tar", "tar.gz"})
_DECOMPRESSORS = {"tar.lz4": "lz4 -d", "tar.zst": "zstd -d"}
# What a damaged or truncated archive raises while it is streamed; READ_ERRORS adds the file's own.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
READ_ERRORS = (*ARCHIVE_ERRORS, OSError)


@dataclass(frozen=True)
class TarLayout:
    """The archives of one tar-format backup, all compressed the same way (``format``)."""

    format: str  # tar | tar.gz | tar.lz4 | tar.zst
    base: Path
    wal: Path | None = None  # pg_wal.tar[.gz]: WAL streamed or fetched during the backup
    tablespaces: dict[str, Path] = field(default_factory=dict)  # tablespace oid -> archive

    @property
    def readable(self) -> bool:
        return self.format in READABLE

    def archives(self) -> list[Path]:
        return [self.base, *([self.wal] if self.wal else []), *self.tablespaces.values()]


def backup_format(path: Path) -> str | None:
    """``plain``, a tar format (``tar``, ``tar.gz``, ...) or None when it is no base backup."""
    if (path / "backup_label").is_file():
        return PLAIN
    layout = tar_layout(path)
    return layout.format if layout else None


def tar_layout(path: Path) -> TarLayout | None:
    for fmt in FORMATS:
        base = path / f"base.{fmt}"
        if base.is_file():
            wal = path / f"pg_wal.{fmt}"
            pattern = re.compile(rf"^([0-9]+)\.{re.escape(fmt)}$")
            tablespaces = {
                match.group(1): entry
                for entry in sorted(path.iterdir())
                if (match := pattern.match(entry.name)) and entry.is_file()
            }
            return TarLayout(fmt, base, wal if wal.is_file() else None, tablespaces)
    return None


def unreadable_sentence(backup_id: str, layout: TarLayout) -> str:
    tool = _DECOMPRESSORS.get(layout.format, "")
    return (
        f"backup {backup_id} is a tar-format backup compressed as {layout.base.name}, which "
        "drillkit cannot read (Python has no lz4/zstd reader and the bundled PostgreSQL is built "
        "without them): take tar backups with --compress=gzip or uncompressed, or drill a copy "
        f"whose archives were decompressed with `{tool}` (keep backup_manifest beside them)"
    )


def member_name(member: tarfile.TarInfo) -> str:
    """A member's path as pg_basebackup means it: ``./pg_wal/x/`` and ``pg_wal/x`` are one."""
    return posixpath.normpath(member.name).removeprefix("./")


@contextmanager
def open_tar(archive: Path) -> Iterator[tuple[tarfile.TarFile, BinaryIO]]:
    """Open ``archive`` for one forward pass; the raw file comes too (its tell() is progress)."""
    fmt = archive.name.partition(".")[2]
    if fmt not in READABLE:
        raise ValueError(f"{archive.name} is not a tar archive drillkit can read")
    with ExitStack() as stack:
        # O_NOFOLLOW: an archive swapped for a link is refused, never read through (as root).
        fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW)
        raw = stack.enter_context(os.fdopen(fd, "rb"))
        data: BinaryIO = raw
        if fmt == "tar.gz":
            # GzipFile, not tarfile's own "r|gz": pg_basebackup's pg_wal.tar.gz holds two gzip
            # members (an empty one first) and tarfile's gzip stream stops after the first.
            data = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[arg-type]
        yield stack.enter_context(tarfile.open(fileobj=data, mode="r|")), raw


def read_member(archive: Path, name: str, *, limit: int = 1 << 20) -> bytes | None:
    """The first ``limit`` bytes of the regular file ``name`` in ``archive``; None if absent.

    pg_basebackup writes backup_label and tablespace_map first, so this stops after a few
    blocks of base.tar however large the backup is.
    """
    with open_tar(archive) as (tar, _raw):
        for member in tar:
            if member.isfile() and member_name(member) == name:
                handle = tar.extractfile(member)
                return handle.read(limit) if handle else None
    return None


def parse_tablespace_map(text: str) -> dict[str, str]:
    """``tablespace_map`` as PostgreSQL reads it: ``<oid> <path>`` a line, backslash-escaped.

    A path may hold an escaped newline or backslash (do_pg_backup_start escapes them).
    """
    entries: dict[str, str] = {}
    line: list[str] = []
    escaped = False
    for char in text + "\n":
        if not escaped and char in "\r\n":
            if line:
                oid, sep, path = "".join(line).partition(" ")
                if not (sep and oid.isdigit() and path):
                    raise ValueError(f"tablespace_map line {''.join(line)!r} is not '<oid> <path>'")
                entries[oid] = path
            line = []
        elif not escaped and char == "\\":
            escaped = True
        else:
            line.append(char)
            escaped = False
    return entries
