"""WAL staged into the sandbox for catalogs whose archive is not a directory the server may read.

The sandbox server runs without a network (issue 11), so a ``restore_command`` that fetches from
an object store or a remote repository cannot work there, and it would put the store's
credentials in the server's environment. Such catalogs (Barman Cloud, pgBackRest) already keep a
plain, decompressed view of their WAL that selection indexed: the segments the coordinate needs
are copied from that view into the sandbox, and recovery copies them from there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE, parse_segment_name
from drillkit.exceptions import InvalidInputError

STAGED_DIR = "wal"


def _wanted(name: str, *, first: int, last: int, timeline: int, size: int) -> bool:
    if name.endswith(".history"):
        return True
    parsed = parse_segment_name(name, size)
    if parsed is None:
        return False
    tli, segno = parsed
    return tli <= timeline and first <= segno <= last


def stage_wal(
    coordinate: Mapping[str, Any],
    workdir: Path,
    *,
    owner: tuple[int, int] | None,
    say: Callable[[str], None],
) -> Path:
    """Copy the timeline histories and the segments from the coordinate's first to its last
    (on its timeline and the ones before it) from the catalog's view into ``workdir/wal``."""
    view = Path(str(coordinate.get("archive") or ""))
    wal = coordinate.get("wal") or {}
    size = wal.get("segment_size") or DEFAULT_SEGMENT_SIZE
    first = parse_segment_name(str(wal.get("first_segment")), size)
    last = parse_segment_name(str(wal.get("last_segment")), size)
    if not view.is_dir() or first is None or last is None:
        raise InvalidInputError(
            "the coordinate names no WAL view and segment range to stage: it must come from "
            "drillkit's PITR selection of this catalog"
        )
    target = workdir / STAGED_DIR
    target.mkdir(mode=0o700)
    if owner:
        os.chown(target, *owner)
    copied = 0
    for entry in sorted(view.iterdir()):
        wanted = _wanted(
            entry.name,
            first=first[1],
            last=last[1],
            timeline=int(wal.get("timeline") or 1),
            size=size,
        )
        if not wanted or entry.is_symlink() or not entry.is_file():
            continue
        staged = target / entry.name
        shutil.copyfile(entry, staged, follow_symlinks=False)
        os.chmod(staged, 0o600)
        if owner:
            os.chown(staged, *owner)
        copied += 1
    say(f"staged {copied} WAL files for recovery in {target}")
    return target
