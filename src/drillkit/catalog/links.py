"""Reading a backup as files: every entry ``lstat``-ed, a symlink allowed only as a tablespace.

A plain ``pg_basebackup -Fp`` backup links ``pg_tblspc/<oid>`` to the tablespace's directory (the
``--tablespace-mapping`` target); nothing else in a backup is ever a link. A link elsewhere, a
special file, or a tablespace link that does not lead to a tablespace directory (``/``, ``/etc``,
a parent of the backup) would make a restore or a verification read the host through the
backup, so the whole backup is refused with ``BACKUP_UNSAFE_LINK``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from drillkit.findings import BACKUP_UNSAFE_LINK

_TABLESPACE_LINK = re.compile(r"^pg_tblspc/[0-9]+$")
# What PostgreSQL creates inside a tablespace directory: TABLESPACE_VERSION_DIRECTORY.
_VERSION_DIR = re.compile(r"^PG_[0-9]+_[0-9]+$")


@dataclass
class BackupFiles:
    """What an lstat walk found: bytes of regular files, tablespace links, unsafe entries."""

    size_bytes: int = 0
    files: int = 0
    tablespaces: dict[str, Path] = field(default_factory=dict)  # oid -> real directory
    unsafe: list[str] = field(default_factory=list)  # sentences, one per unsafe entry

    @property
    def code(self) -> str:
        return BACKUP_UNSAFE_LINK

    def sentence(self, backup: Path) -> str:
        shown = "; ".join(self.unsafe[:3]) + (
            f" (+{len(self.unsafe) - 3} more)" if len(self.unsafe) > 3 else ""
        )
        return (
            f"backup {backup.name} holds {shown}: a backup is read as plain files, and a link or "
            "special file could make drillkit read the host through it, so the backup is refused. "
            "pg_basebackup writes links only at pg_tblspc/<oid> (to the tablespace directory): "
            "find out who changed the backup and take a new one"
        )


def _describe(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"a symlink {path} -> {os.readlink(path)}"
        except OSError:
            return f"a symlink {path}"
    return f"a special file {path} (mode {stat.filemode(st.st_mode)})"


def _walk(top: Path, relative_to: Path, found: BackupFiles, *, allow_tablespaces: bool) -> None:
    """lstat every entry under ``top``; never follow a link (os.walk does not by default)."""
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                found.size_bytes += st.st_size
                found.files += 1
            elif stat.S_ISDIR(st.st_mode):
                continue
            elif (
                stat.S_ISLNK(st.st_mode)
                and allow_tablespaces
                and _TABLESPACE_LINK.match(path.relative_to(relative_to).as_posix())
            ):
                _tablespace(path, relative_to, found)
            else:
                found.unsafe.append(_describe(path, st))


def _raise(exc: OSError) -> None:
    raise exc


def _tablespace(link: Path, backup: Path, found: BackupFiles) -> None:
    """A pg_tblspc/<oid> link: allowed only onto a real tablespace directory, walked as files."""
    target = Path(os.path.realpath(link))
    why = None
    if not target.is_dir():
        why = "which is not a directory"
    elif target == Path("/") or backup.resolve().is_relative_to(target):
        why = "which holds the backup itself"
    else:
        entries = list(os.scandir(target))
        if not entries or not all(
            _VERSION_DIR.match(e.name) and e.is_dir(follow_symlinks=False) for e in entries
        ):
            why = "which is not a tablespace directory (it must hold only PG_<major>_<catversion>/)"
    if why:
        found.unsafe.append(f"{_describe(link, os.lstat(link))}, {why}")
        return
    found.tablespaces[link.name] = target
    before = len(found.unsafe)
    _walk(target, target, found, allow_tablespaces=False)
    if len(found.unsafe) > before:
        found.unsafe[before] = f"in tablespace {link.name} ({target}): {found.unsafe[before]}"


def scan_backup(path: Path) -> BackupFiles:
    """Walk ``path`` with lstat only; ``unsafe`` lists every link or special file out of place.

    The backup directory itself must be a real directory, not a link to one.
    """
    found = BackupFiles()
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        found.unsafe.append(_describe(path, st) if not stat.S_ISREG(st.st_mode) else str(path))
        return found
    _walk(path, path, found, allow_tablespaces=True)
    return found
