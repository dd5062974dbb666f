"""WAL archive facts: segment names and headers, timeline histories, continuity planning.

Pure helpers plus one cheap reader (segment headers); commit timestamps come from walindex.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP_HISTORY_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
# XLogLongPageHeaderData: magic, info, tli, pageaddr, rem_len, (pad), sysid, seg_size, blcksz
_LONG_HEADER = struct.Struct("<HHIQI4xQII")


def parse_lsn(text: str) -> int:
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:08X}"


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(tli: int, segno: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, segment_size: int) -> tuple[int, int] | None:
    """``(timeline, segno)`` for a WAL segment file name, None for anything else."""
    match = _SEGMENT_RE.match(name)
    if not match:
        return None
    tli, log, seg = (int(g, 16) for g in match.groups())
    return tli, log * segments_per_xlogid(segment_size) + seg


def segno_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


@dataclass(frozen=True)
class SegmentHeader:
    system_identifier: int
    segment_size: int
    page_address: int
    magic: int = 0  # XLOG_PAGE_MAGIC: which major's WAL format (drillkit.pgmajors)

    @property
    def major(self) -> int | None:
        from drillkit.pgmajors import major_of_magic

        return major_of_magic(self.magic)


def read_segment_header(path: Path) -> SegmentHeader | None:
    """The long page header at the start of a segment, or None when it is not a WAL header."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_LONG_HEADER.size)
    except OSError:
        return None
    if len(raw) < _LONG_HEADER.size:
        return None
    magic, info, _tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack(raw)
    if not info & 0x0002 or blcksz == 0 or seg_size == 0 or seg_size & (seg_size - 1):
        return None  # XLP_LONG_HEADER missing or nonsense sizes: not a segment start
    return SegmentHeader(
        system_identifier=sysid, segment_size=seg_size, page_address=pageaddr, magic=magic
    )


@dataclass(frozen=True)
class TimelineHistory:
    """Ancestry of one timeline: ``entries`` is ``[(parent_tli, switch_lsn), ...]`` oldest first."""

    tli: int
    entries: tuple[tuple[int, int], ...] = ()

    def ancestry(self) -> list[tuple[int, int, int | None]]:
        """``[(tli, begin_lsn, end_lsn_or_None), ...]`` oldest first, ending with this timeline."""
        result: list[tuple[int, int, int | None]] = []
        begin = 0
        for parent, switch in self.entries:
            result.append((parent, begin, switch))
            begin = switch
        result.append((self.tli, begin, None))
        return result


def parse_history_file(tli: int, text: str) -> TimelineHistory:
    entries: list[tuple[int, int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        entries.append((int(parts[0]), parse_lsn(parts[1])))
    return TimelineHistory(tli=tli, entries=tuple(entries))


@dataclass(frozen=True)
class SegmentFile:
    name: str
    tli: int
    segno: int
    size: int
    mtime_ns: int
    problem: str | None = None  # why the segment cannot be used, when it cannot
    major: int | None = None  # the PostgreSQL major that wrote it (page magic), when known


@dataclass
class ArchiveListing:
    """What is in a WAL archive directory (names, sizes, headers), read without parsing WAL."""

    path: Path
    segment_size: int
    segments: dict[str, SegmentFile] = field(default_factory=dict)
    histories: dict[int, TimelineHistory] = field(default_factory=dict)
    backup_histories: dict[str, str] = field(default_factory=dict)  # file name -> text
    system_identifiers: set[int] = field(default_factory=set)


def list_archive(
    path: Path, *, segment_size: int = DEFAULT_SEGMENT_SIZE, system_identifier: int | None = None
) -> ArchiveListing:
    """List an archive; each segment gets a ``problem`` when its size or header is wrong."""
    listing = ArchiveListing(path=path, segment_size=segment_size)
    for entry in sorted(path.iterdir()):
        name = entry.name
        history = _HISTORY_RE.match(name)
        if history:
            tli = int(history.group(1), 16)
            listing.histories[tli] = parse_history_file(tli, entry.read_text())
            continue
        if _BACKUP_HISTORY_RE.match(name):
            listing.backup_histories[name] = entry.read_text()
            continue
        parsed = parse_segment_name(name, segment_size)
        if parsed is None:
            continue  # .partial files and strangers are not used by recovery
        stat = entry.stat()
        tli, segno = parsed
        problem, major = None, None
        if stat.st_size != segment_size:
            problem = f"has {stat.st_size} bytes, a segment has {segment_size} (truncated copy?)"
        else:
            header = read_segment_header(entry)
            if header is None:
                problem = "does not start with a WAL page header"
            elif header.page_address != segno * segment_size:
                problem = (
                    f"holds WAL of address {format_lsn(header.page_address)}, not of its name "
                    "(renamed or overwritten file?)"
                )
            else:
                major = header.major
                listing.system_identifiers.add(header.system_identifier)
                if system_identifier is not None and header.system_identifier != system_identifier:
                    problem = (
                        f"belongs to database system {header.system_identifier}, not to "
                        f"{system_identifier} (another cluster's WAL in this archive)"
                    )
        listing.segments[name] = SegmentFile(
            name=name,
            tli=tli,
            segno=segno,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            problem=problem,
            major=major,
        )
    return listing


def history_for(listing_histories: dict[int, TimelineHistory], tli: int) -> TimelineHistory:
    return listing_histories.get(tli, TimelineHistory(tli=tli))


def recovery_timeline(
    histories: dict[int, TimelineHistory],
    backup_tli: int,
    backup_start_lsn: int,
    backup_stop_lsn: int | None = None,
) -> TimelineHistory:
    """The newest timeline a backup can follow (what ``recovery_target_timeline='latest'`` means).

    A timeline qualifies when the backup's timeline is in its ancestry and the whole backup
    (start to stop) lies before that ancestry left the backup's timeline.
    """
    last = backup_start_lsn if backup_stop_lsn is None else backup_stop_lsn
    best = TimelineHistory(tli=backup_tli)
    for tli in sorted(histories):
        if tli <= backup_tli:
            continue
        for ancestor, begin, end in histories[tli].ancestry():
            if (
                ancestor == backup_tli
                and begin <= backup_start_lsn
                and (end is None or (backup_start_lsn < end and last <= end))
            ):
                best = histories[tli]
                break
    return best


def expected_tli(timeline: TimelineHistory, segno: int, segment_size: int) -> int:
    """Which timeline's file recovery reads for ``segno``: the newest one begun by then."""
    chosen = timeline.ancestry()[0][0]
    for tli, begin, _end in timeline.ancestry():
        if segno_of(begin, segment_size) <= segno:
            chosen = tli
    return chosen
