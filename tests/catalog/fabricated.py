"""Fabricated catalogs for unit tests: archives of segments and commits, with no files and no DB.

Times count in minutes after ``BASE``; LSNs in segments of ``SEG`` bytes; a snapshot is taken a
day after ``BASE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drillkit.catalog.model import BackupInfo, CatalogSnapshot
from drillkit.catalog.wal import (
    DEFAULT_SEGMENT_SIZE,
    ArchiveListing,
    SegmentFile,
    TimelineHistory,
    segment_name,
)
from drillkit.catalog.walindex import SegmentIndex, TablespaceRecord, XactRecord

SEG = DEFAULT_SEGMENT_SIZE
BASE = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NOW = BASE + timedelta(days=1)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def lsn(segno: int, offset: int = 0) -> int:
    return segno * SEG + offset


def rec(segno: int, offset: int, minutes: float, kind: str = "c") -> XactRecord:
    """A commit (``c``) or abort (``a``) record at ``segno``/``offset``, ``minutes`` after BASE."""
    return XactRecord(lsn=lsn(segno, offset), ts_us=round(at(minutes).timestamp() * 1e6), kind=kind)


def name(segno: int, tli: int = 1) -> str:
    return segment_name(tli, segno, SEG)


@dataclass
class Seg:
    """One archived segment as the catalog would have seen it."""

    segno: int
    records: tuple[XactRecord, ...] = ()
    tli: int = 1
    problem: str | None = None
    error: str | None = None
    indexed: bool = True
    tablespaces: tuple[TablespaceRecord, ...] = ()
    major: int | None = None  # the PostgreSQL major its page magic names


def seg(segno: int, *records: XactRecord, **kwargs: Any) -> Seg:
    return Seg(segno, records, **kwargs)


def linear(first: int, last: int, *, tli: int = 1) -> list[Seg]:
    """Segments first..last, each with one commit at offset 0x1000, at minute segno*10."""
    return [seg(n, rec(n, 0x1000, n * 10), tli=tli) for n in range(first, last + 1)]


def snapshot(
    backups: list[BackupInfo],
    segs: list[Seg],
    histories: dict[int, TimelineHistory] | None = None,
) -> CatalogSnapshot:
    """The catalog of ``backups`` over an archive of ``segs`` (damaged ones are not indexed)."""
    listing = ArchiveListing(path=Path("/repo/wal"), segment_size=SEG, histories=histories or {})
    indexes: dict[str, SegmentIndex] = {}
    for s in segs:
        file_name = name(s.segno, s.tli)
        listing.segments[file_name] = SegmentFile(
            file_name, s.tli, s.segno, SEG, 0, s.problem, major=s.major
        )
        if s.indexed and s.problem is None:
            indexes[file_name] = SegmentIndex(
                records=s.records, error=s.error, tablespaces=s.tablespaces
            )
    return CatalogSnapshot("local", "/repo", backups, listing, indexes, NOW)
