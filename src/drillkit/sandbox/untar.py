"""Extracting a tar-format base backup into a sandbox: streamed, owned by the server user, inward.

Only files and directories are extracted, each at a relative path inside its target: an absolute,
``..`` or link member would let an archive write outside the sandbox. Tablespaces become
directories in ``pg_tblspc/<oid>`` (as the plain copy materialises their links); ``tablespace_map``
is not restored, since recovery would link each tablespace to production's path.
"""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from drillkit.catalog.links import scan_backup
from drillkit.catalog.tarformat import (
    ARCHIVE_ERRORS,
    member_name,
    open_tar,
    parse_tablespace_map,
    tar_layout,
    unreadable_sentence,
)
from drillkit.exceptions import SandboxError
from drillkit.findings import BACKUP_ARCHIVE_UNSAFE
from drillkit.sandbox.copy import NOT_RESTORED
from drillkit.sandbox.space import NoSpaceError

Progress = Callable[[int, int], None]
Say = Callable[[str], None]
Owner = tuple[int, int] | None
_CHUNK = 1 << 20


def _unsafe(archive: Path, member: tarfile.TarInfo, why: str) -> SandboxError:
    return SandboxError(
        f"{archive} holds member {member.name!r} ({why}): extracting it could write outside the "
        "sandbox, so drillkit refuses the whole backup. pg_basebackup never writes such a "
        "member: find out who altered the archive and take a new backup",
        code=BACKUP_ARCHIVE_UNSAFE,
    )


def _checked_name(archive: Path, member: tarfile.TarInfo, dest: Path) -> str:
    """The member's path relative to ``dest``; refuse anything but a file or directory inside."""
    if not (member.isfile() or member.isdir()):
        raise _unsafe(archive, member, "a link or special file")
    if member.name.startswith("/"):
        raise _unsafe(archive, member, "an absolute path")
    name = member_name(member)
    if name == ".." or name.startswith("../"):
        raise _unsafe(archive, member, "a path leading out of its directory")
    try:  # the standard library's own judgement as well
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as exc:
        raise _unsafe(archive, member, str(exc)) from exc
    return name


def _mkdirs(dest: Path, relative: str, owner: Owner) -> None:
    path = dest
    for part in relative.split("/"):
        path = path / part
        if not path.is_dir():
            os.mkdir(path, 0o700)  # fails on a file in the way: a path never turns into a link
            if owner is not None:
                os.chown(path, *owner)


def _extract(
    archive: Path, dest: Path, *, owner: Owner, keep: frozenset[str], read: Callable[[int], None]
) -> tuple[int, dict[str, bytes]]:
    """Extract ``archive`` under ``dest``; return bytes written and the kept members' contents.

    ``read`` hears how far into the archive file (compressed bytes) extraction has got.
    """
    written, kept = 0, {}
    with open_tar(archive) as (tar, raw):
        for member in tar:
            read(raw.tell())
            name = _checked_name(archive, member, dest)
            if name == ".":
                continue
            if name in keep:
                handle = tar.extractfile(member)
                kept[name] = handle.read(_CHUNK) if handle else b""
                continue
            if member.isdir():
                _mkdirs(dest, name, owner)
                continue
            parent = name.rpartition("/")[0]
            if parent:
                _mkdirs(dest, parent, owner)
            source = tar.extractfile(member)
            # O_EXCL: a member listed twice, or clashing with another archive's, is refused.
            fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                if source is not None:
                    shutil.copyfileobj(source, out, _CHUNK)
                if owner is not None:
                    os.fchown(out.fileno(), *owner)
            written += member.size
    return written, kept


def _placements(
    source: Path, map_text: bytes | None, tablespaces: dict[str, Path]
) -> dict[str, str]:
    """Tablespace oid -> production's path, once every mapped tablespace has its archive."""
    try:
        mapped = parse_tablespace_map(map_text.decode()) if map_text else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise SandboxError(
            f"backup {source.name} has an unreadable tablespace_map ({exc}): take the backup again",
            code="BACKUP_INCOMPLETE",
        ) from exc
    missing = sorted(set(mapped) - set(tablespaces))
    if missing:
        raise SandboxError(
            f"backup {source.name} has tablespace(s) {', '.join(missing)} in its tablespace_map "
            f"but no archive for them (<oid>.tar[.gz]): the backup is incomplete; take it again",
            code="BACKUP_INCOMPLETE",
        )
    return mapped


def extract_backup(
    source: Path,
    target: Path,
    *,
    owner: Owner,
    progress: Progress | None = None,
    say: Say | None = None,
) -> int:
    """Extract the tar-format backup ``source`` into the new data directory ``target``.

    base.tar[.gz] goes to ``target``, pg_wal.tar[.gz] to its pg_wal, and each ``<oid>.tar[.gz]``
    to its ``pg_tblspc/<oid>``. Returns the bytes extracted.
    """
    files = scan_backup(source)  # the archives are read as root: never through a link
    if files.unsafe:
        raise SandboxError(files.sentence(source), code=files.code)
    layout = tar_layout(source)
    if layout is None:
        raise SandboxError(f"backup {source} has no base.tar: it is not a tar-format backup")
    if not layout.readable:
        raise SandboxError(unreadable_sentence(source.name, layout), code="BACKUP_UNVERIFIABLE")
    total = sum(path.stat().st_size for path in layout.archives())
    finished, last_report = 0, 0.0  # bytes of the archives extracted so far

    def read(position: int) -> None:
        nonlocal last_report
        now = time.monotonic()
        if progress is not None and now - last_report > 0.5:
            progress(finished + position, total)
            last_report = now

    jobs = [(layout.base, ""), *([(layout.wal, "pg_wal")] if layout.wal else [])]
    jobs += [(archive, f"pg_tblspc/{oid}") for oid, archive in layout.tablespaces.items()]
    os.mkdir(target, 0o700)
    if owner is not None:
        os.chown(target, *owner)
    written, current, production = 0, layout.base, {}
    try:
        for current, where in jobs:
            if where:
                _mkdirs(target, where, owner)
            keep = NOT_RESTORED | {"tablespace_map"} if current == layout.base else frozenset()
            size, kept = _extract(current, target / where, owner=owner, keep=keep, read=read)
            written += size
            finished += current.stat().st_size
            if current == layout.base:  # before any tablespace is extracted
                production = _placements(source, kept.get("tablespace_map"), layout.tablespaces)
    except ARCHIVE_ERRORS as exc:
        cut_short = isinstance(exc, EOFError) or "unexpected end" in str(exc)
        raise SandboxError(
            f"{current.name} of backup {source.name} cannot be read to its end ({exc}): the "
            "archive is damaged or cut short; verify the backup (drillkit catalog) and take a new "
            "one",
            code="BACKUP_INCOMPLETE" if cut_short else "BACKUP_CHECKSUM_MISMATCH",
        ) from exc
    except OSError as exc:  # the sandbox side: a full disk, a file in a directory's way
        if exc.errno == errno.ENOSPC:
            raise NoSpaceError(
                f"the sandbox's file system filled up extracting {current.name}",
                path=target,
                needed=total,
            ) from exc
        raise SandboxError(f"could not extract {current.name} into {target}: {exc}") from exc
    if progress is not None:
        progress(finished, total)
    if say is not None:
        for oid in layout.tablespaces:
            origin = production.get(oid, "not in tablespace_map")
            say(f"tablespace {oid} (production: {origin}) restored inside the sandbox")
    return written
