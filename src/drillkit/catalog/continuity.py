"""WAL continuity of one backup: which segments recovery reads, where the first gap is.

Pure: works on the snapshot's listing and segment indexes, never on files.
"""

from __future__ import annotations

from dataclasses import dataclass

from drillkit.catalog.model import BackupInfo, CatalogSnapshot
from drillkit.catalog.wal import (
    TimelineHistory,
    expected_tli,
    format_lsn,
    recovery_timeline,
    segment_name,
    segno_of,
)
from drillkit.catalog.walindex import TablespaceRecord, XactRecord


@dataclass(frozen=True)
class Gap:
    """The first segment recovery would need but cannot use."""

    segment: str
    # WAL_GAP | WAL_SEGMENT_DAMAGED | WAL_FOREIGN_SYSTEM, or not the WAL's fault:
    # WAL_OTHER_MAJOR (written after an upgrade) | PG_BINARIES_MISSING (no tool to read it here)
    code: str
    detail: str
    lsn: int  # first byte of WAL that cannot be replayed


@dataclass(frozen=True)
class WalPlan:
    """Contiguous WAL from a backup's start, on the timeline recovery follows."""

    timeline: TimelineHistory
    first_segment: str
    last_segment: str | None  # last usable segment (None: not even the first one)
    segment_count: int
    gap: Gap | None  # None: contiguous up to the end of the archive
    records: tuple[XactRecord, ...]  # commits and aborts at or after the backup start, LSN order
    archive_last_xact: XactRecord | None  # newest record anywhere on the timeline, beyond gaps
    tablespaces: tuple[TablespaceRecord, ...] = ()  # CREATE TABLESPACE in that WAL, LSN order
    # A newer timeline the backup could follow whose history is archived but none of its WAL:
    # not followed (recovery could not), and reported.
    timeline_without_wal: int | None = None
    unread_after_gap: tuple[str, ...] = ()  # archived segments past the gap that were not read

    def records_before(self, lsn: int) -> list[XactRecord]:
        return [r for r in self.records if r.lsn < lsn]

    @property
    def end_lsn(self) -> int | None:
        """WAL is usable strictly below this LSN; None when it runs to the archive's end."""
        return self.gap.lsn if self.gap else None


def plan_wal(snapshot: CatalogSnapshot, backup: BackupInfo) -> WalPlan:
    archive = snapshot.archive
    size = archive.segment_size
    with_wal = {seg.tli for seg in archive.segments.values()}
    timeline = recovery_timeline(
        {tli: h for tli, h in archive.histories.items() if tli in with_wal},
        backup.timeline,
        backup.start_lsn,
        backup.stop_lsn,
    )
    newest = recovery_timeline(
        archive.histories, backup.timeline, backup.start_lsn, backup.stop_lsn
    )
    start = segno_of(backup.start_lsn, size)
    # Only segments that exist are walked: one stray far-off name must not make this loop
    # over every segment number in between.
    on_timeline = sorted(
        seg.segno
        for seg in archive.segments.values()
        if seg.segno >= start
        and seg.name == segment_name(expected_tli(timeline, seg.segno, size), seg.segno, size)
    )
    last_present = on_timeline[-1] if on_timeline else start - 1

    records: list[XactRecord] = []
    tablespaces: list[TablespaceRecord] = []
    gap: Gap | None = None
    last_usable: str | None = None
    count = 0
    segno = start
    while segno <= last_present:
        name = segment_name(expected_tli(timeline, segno, size), segno, size)
        seg = archive.segments.get(name)
        index = snapshot.segments.get(name)
        if seg is None:
            gap = Gap(name, "WAL_GAP", f"segment {name} is missing from the archive", segno * size)
            break
        if seg.major and backup.pg_major and seg.major != backup.pg_major:
            # An in-place upgrade (pg_upgrade) keeps archiving into the same place: the newer
            # major's WAL is fine, but no server of the backup's older major can replay it.
            gap = Gap(
                name,
                "WAL_OTHER_MAJOR",
                f"segment {name} was written by PostgreSQL {seg.major} (an in-place upgrade?); "
                f"a PostgreSQL {backup.pg_major} backup replays WAL only up to it: drill a backup "
                f"taken after the upgrade for later targets",
                segno * size,
            )
            break
        if seg.problem is not None:
            code = seg.problem_code or (
                "WAL_FOREIGN_SYSTEM" if "database system" in seg.problem else "WAL_SEGMENT_DAMAGED"
            )
            gap = Gap(name, code, f"segment {name} {seg.problem}", segno * size)
            break
        foreign = _foreign(seg.system_identifier, backup.system_identifier)
        if foreign:
            gap = Gap(name, "WAL_FOREIGN_SYSTEM", f"segment {name} {foreign}", segno * size)
            break
        major = seg.major or backup.pg_major
        if index is None and major in snapshot.missing_majors:
            code, sentence = snapshot.missing_majors[major]
            gap = Gap(name, code, f"segment {name} was not read: {sentence}", segno * size)
            break
        if index is None:
            gap = Gap(name, "WAL_SEGMENT_DAMAGED", f"segment {name} was not indexed", segno * size)
            break
        records.extend(r for r in index.records if r.lsn >= backup.start_lsn)
        tablespaces.extend(t for t in index.tablespaces if t.lsn >= backup.start_lsn)
        count += 1
        if index.error is not None:
            bad = records[-1].lsn + 1 if records else segno * size
            gap = Gap(name, "WAL_SEGMENT_DAMAGED", f"segment {name}: {index.error}", bad)
            break
        last_usable = name
        segno += 1
    stop_segno = segno_of(backup.stop_lsn, size)
    if gap is None and segno <= stop_segno:
        # The archive ends before the WAL this backup needs to become consistent.
        name = segment_name(expected_tli(timeline, segno, size), segno, size)
        gap = Gap(name, "WAL_GAP", f"segment {name} is missing from the archive", segno * size)

    newest_xact = None
    unread: list[str] = []
    for later in on_timeline:
        name = segment_name(expected_tli(timeline, later, size), later, size)
        index = snapshot.segments.get(name)
        seg = archive.segments[name]
        if _foreign(seg.system_identifier, backup.system_identifier):
            continue
        if index and index.records:
            newest_xact = index.records[-1]
        if gap is not None and later > segno and (index is None or index.error):  # segno: the gap's
            unread.append(seg.file_name)
    return WalPlan(
        timeline=timeline,
        first_segment=segment_name(expected_tli(timeline, start, size), start, size),
        last_segment=last_usable,
        segment_count=count,
        gap=gap,
        records=tuple(records),
        archive_last_xact=newest_xact,
        tablespaces=tuple(tablespaces),
        timeline_without_wal=newest.tli if newest.tli != timeline.tli else None,
        unread_after_gap=tuple(unread),
    )


def _foreign(segment_sysid: int | None, backup_sysid: int | None) -> str | None:
    """Why a segment is of another database system than the backup, or None."""
    if segment_sysid is None or backup_sysid is None or segment_sysid == backup_sysid:
        return None
    return (
        f"belongs to database system {segment_sysid}, not to the backup's {backup_sysid} "
        "(another cluster's WAL in this archive)"
    )


def describe_gap(gap: Gap) -> str:
    return f"{gap.detail} (WAL from {format_lsn(gap.lsn)} on cannot be replayed)"
