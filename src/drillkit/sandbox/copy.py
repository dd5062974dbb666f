"""Copying a base backup into a sandbox: fast, owned by the server user, never linked outward.

Symlinks (tablespaces in pg_tblspc) are materialised inside the sandbox: a link left pointing at
production's tablespace would let the sandbox write into production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drillkit.exceptions import SandboxError

Progress = Callable[[int, int], None]
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
_CHUNK = 1 << 30


def _copy_file(src: str, dst: str, owner: tuple[int, int] | None) -> int:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                # In-kernel copy (and a reflink where the file system can): no user-space buffers.
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), min(_CHUNK, size - done))
                if copied == 0:
                    break
                done += copied
        except OSError:
            fin.seek(done)
            fout.seek(done)
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
                done += len(chunk)
    os.chmod(dst, 0o600)
    if owner is not None:
        os.chown(dst, *owner)
    return done


def copy_backup(
    source: Path,
    target: Path,
    *,
    owner: tuple[int, int] | None,
    workers: int = 2,
    progress: Progress | None = None,
) -> int:
    """Copy ``source`` into the new directory ``target``; return the bytes copied."""
    jobs: list[tuple[str, str, int]] = []

    def plan(src: Path, dst: Path, top: bool) -> None:
        os.mkdir(dst, 0o700)
        if owner is not None:
            os.chown(dst, *owner)
        for entry in os.scandir(src):
            if top and entry.name in NOT_RESTORED:
                continue
            dst_path = dst / entry.name
            real = Path(os.path.realpath(entry.path))
            if entry.is_dir():  # follows links: linked tablespaces become plain directories
                plan(real, dst_path, False)
            elif entry.is_file():
                jobs.append((str(real), str(dst_path), os.stat(real).st_size))
            else:
                raise SandboxError(
                    f"backup entry {entry.path} is neither a file nor a directory (a dangling "
                    "tablespace link?): the backup cannot be restored as it is"
                )

    plan(source, target, True)
    total = sum(size for _, _, size in jobs)
    done = 0
    last_report = 0.0
    jobs.sort(key=lambda job: job[2], reverse=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_copy_file, src, dst, owner) for src, dst, _ in jobs]
        for future in futures:
            done += future.result()
            now = time.monotonic()
            if progress is not None and now - last_report > 0.5:
                progress(done, total)
                last_report = now
    if progress is not None:
        progress(done, total)
    return done
