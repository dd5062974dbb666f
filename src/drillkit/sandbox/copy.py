"""Copying a plain base backup into a sandbox: as files, as the server user, never linked outward.

The backup is walked with lstat first (``catalog.links``): a symlink is allowed only at
``pg_tblspc/<oid>`` onto a tablespace directory, which is materialised as a plain directory in the
sandbox (a link left pointing at production's tablespace would let the sandbox write into
production). ``cp`` then runs as the PostgreSQL OS user with a time limit and never follows a link,
so even an entry swapped for a link after the walk cannot make it read what that user cannot; the
copy is walked again afterwards and refused if it holds any link at all.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from drillkit.catalog.links import scan_backup
from drillkit.exceptions import SandboxError
from drillkit.findings import BACKUP_UNREADABLE, BACKUP_UNSAFE_LINK
from drillkit.sandbox.space import NoSpaceError, is_no_space

Progress = Callable[[int, int], None]
Owner = tuple[int, int] | None
# Top-level files of a backup that are never restored (the tar extraction skips them too).
NOT_RESTORED = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "standby.signal",
        "recovery.signal",
        "backup_manifest",
    }
)
# A slow disk copies 20 MiB/s; a copy slower than that plus a minute is stuck, not busy.
_BYTES_PER_SECOND = 20 * 2**20
_MIN_SECONDS = 60.0


def copy_limit(size_bytes: int) -> float:
    """Seconds a copy of ``size_bytes`` may take before it is given up."""
    return _MIN_SECONDS + size_bytes / _BYTES_PER_SECOND


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _cp(source: Path, target: Path, *, owner: Owner, timeout: float, total: int) -> None:
    """``cp -rP`` the contents of ``source`` into the existing ``target``, as ``owner``."""
    kwargs: dict[str, object] = {}
    if owner is not None:
        kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
    args = ["cp", "-r", "--no-dereference", "--no-preserve=all", "-T", str(source), str(target)]
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            umask=0o077,  # files 0600, directories 0700, as PostgreSQL wants its data directory
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(
            f"copying {source} into the sandbox did not finish within {timeout:.0f} s "
            f"({total / 2**20:.0f} MiB): the disk is too slow or the copy hangs"
        ) from exc
    if result.returncode == 0:
        return
    message = (result.stderr or result.stdout).strip()
    first = message.splitlines()[0] if message else f"exit code {result.returncode}"
    if is_no_space(message):
        raise NoSpaceError(
            f"the sandbox's file system filled up while copying {source} ({first})",
            path=target,
            needed=total,
        )
    if "Permission denied" in message and str(target) not in first:  # the backup's side
        raise SandboxError(
            f"the PostgreSQL OS user cannot read backup {source} ({first}): drillkit copies "
            "backups only as that user; make the backup readable by it (group read, or own "
            "the repository by that user)",
            code=BACKUP_UNREADABLE,
        )
    raise SandboxError(f"copying {source} into the sandbox failed: {message[-1500:]}")


def _no_links_left(target: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise SandboxError(
                    f"the copy of the backup holds {path.relative_to(target)}, which is not a "
                    "plain file or directory (the backup changed while it was copied?): refused",
                    code=BACKUP_UNSAFE_LINK,
                )


def copy_backup(
    source: Path,
    target: Path,
    *,
    owner: Owner,
    progress: Progress | None = None,
    timeout: float | None = None,
) -> int:
    """Copy ``source`` into the new directory ``target``; return the bytes copied.

    Raises SandboxError ``BACKUP_UNSAFE_LINK`` for a link out of place (nothing is copied),
    ``BACKUP_UNREADABLE`` when the server user cannot read the backup, and NoSpaceError
    (``SANDBOX_NO_SPACE``) when the file system fills up.
    """
    files = scan_backup(source)
    if files.unsafe:
        raise SandboxError(files.sentence(source), code=files.code)
    total = files.size_bytes
    limit = timeout if timeout is not None else copy_limit(total)
    os.mkdir(target, 0o700)
    if owner is not None:
        os.chown(target, *owner)
    used_before = _used(target)
    stop = threading.Event()

    def report() -> None:  # the file system's growth: no walk of the copy while it runs
        while not stop.wait(0.5):
            progress(min(max(_used(target) - used_before, 0), total), total)  # type: ignore[misc]

    watcher = threading.Thread(target=report, daemon=True) if progress else None
    if watcher:
        watcher.start()
    try:
        _cp(source, target, owner=owner, timeout=limit, total=total)
        for name in NOT_RESTORED:
            with_name = target / name
            if with_name.is_file() and not with_name.is_symlink():
                with_name.unlink()
        for oid, real in files.tablespaces.items():
            place = target / "pg_tblspc" / oid
            place.unlink()  # the copied link (cp never follows one) becomes a directory
            os.mkdir(place, 0o700)
            if owner is not None:
                os.chown(place, *owner)
            _cp(real, place, owner=owner, timeout=limit, total=total)
    finally:
        stop.set()
        if watcher:
            watcher.join()
    _no_links_left(target)
    if progress is not None:
        progress(total, total)
    return total


__all__ = ["NOT_RESTORED", "copy_backup", "copy_limit"]
