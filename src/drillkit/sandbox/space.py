"""Space first: a restore starts only where the backup (and the WAL it replays) fits.

Too little room is the drill host's problem, never the backup's: it is ``SANDBOX_NO_SPACE``, a
COULD NOT VERIFY with the numbers (needed, free, path), whether it is known before the copy or
found when the file system fills up during the copy, the extraction or the WAL replay.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drillkit.exceptions import SandboxError
from drillkit.findings import SANDBOX_NO_SPACE

# Beyond the data: a sandbox's own files (config, logs, a checkpoint's WAL) need some room too.
MARGIN_BYTES = 64 * 2**20
# How the server and the tools say the disk is full (strerror(ENOSPC)).
_NO_SPACE_MARKERS = ("no space left on device",)


def mib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**20:.0f} MiB"


class NoSpaceError(SandboxError):
    """Too little free space where the sandbox goes; carries the numbers."""

    def __init__(
        self,
        message: str,
        *,
        path: Path,
        needed: int | None = None,
        free: int | None = None,
    ) -> None:
        free = free if free is not None else free_bytes(path)
        self.path, self.needed, self.free = str(path), needed, free
        super().__init__(
            f"{message}: needed {mib(needed)}, free {mib(free)} at {path}. Not a problem of the "
            "backup: free space there, or set DRILLKIT_SANDBOX_ROOT to a larger "
            "file system",
            code=SANDBOX_NO_SPACE,
            path=str(path),
            needed_bytes=needed,
            free_bytes=free,
        )


def is_no_space(text: str) -> bool:
    return any(marker in text.lower() for marker in _NO_SPACE_MARKERS)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (or its parent's)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def needed_bytes(backup_bytes: int, wal_bytes: int = 0) -> int:
    """Room a restore needs: the backup's files, the WAL replayed through pg_wal, a margin."""
    return backup_bytes + wal_bytes + MARGIN_BYTES


def require_space(path: Path, *, backup_bytes: int, wal_bytes: int = 0, what: str) -> int:
    """Raise NoSpaceError unless ``what`` fits under ``path``; return the bytes needed."""
    needed = needed_bytes(backup_bytes, wal_bytes)
    free = free_bytes(path)
    if free < needed:
        raise NoSpaceError(
            f"{what} does not fit where the sandbox goes "
            f"(backup {mib(backup_bytes)}, WAL to replay {mib(wal_bytes)})",
            path=path,
            needed=needed,
            free=free,
        )
    return needed


def restore_sizes(coordinate: Mapping[str, Any]) -> tuple[int, int]:
    """(backup bytes, WAL bytes to replay) of a coordinate from drillkit's PITR selection.

    The backup's size is its manifest's (the restored size, also for a compressed tar backup),
    or what is on disk; the WAL is the segments from the backup's start to the target.
    """
    backup = coordinate.get("backup") or {}
    size = backup.get("size_bytes") if isinstance(backup, Mapping) else None
    size = size if isinstance(size, int) and size > 0 else 0
    path = coordinate.get("backup_path")
    if isinstance(path, str) and os.path.isdir(path):
        from drillkit.catalog.links import scan_backup

        size = max(size, scan_backup(Path(path)).size_bytes)
    wal = coordinate.get("wal") or {}
    segments, segment_size = wal.get("segments"), wal.get("segment_size")
    wal_bytes = 0
    if isinstance(segments, int) and isinstance(segment_size, int):
        wal_bytes = max(segments, 0) * segment_size
    return size, wal_bytes
