"""WAL archive facts: segment names and headers, timeline histories, continuity planning.

Pure helpers plus one cheap reader (segment headers); commit timestamps come from walindex.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from drillkit.catalog.walfiles import ArchivedName, parse_archived_name, read_head

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


def read_segment_header(path: Path, *, compression: str | None = None) -> SegmentHeader | None:
    """The long page header at the start of a segment (decompressed when ``compression``), or
    None when it is not a WAL header."""
    raw = read_head(path, compression, _LONG_HEADER.size)
    if raw is None or len(raw) < _LONG_HEADER.size:
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


_HISTORY_LINE_RE = re.compile(r"^(\d{1,10})\s+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})(?:\s.*)?$")
MAX_SMALL_FILE = 1024 * 1024  # history and backup-history files are a few hundred bytes


def parse_history_file(tli: int, text: str) -> TimelineHistory:
    """Parse ``<tli>.history``; ValueError names the first line that is not ``parent LSN why``
    (the server refuses such a file too: "syntax error in history file")."""
    entries: list[tuple[int, int]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _HISTORY_LINE_RE.match(line)
        if not match:
            raise ValueError(f"line {number} is not 'parent-timeline LSN reason'")
        parent = int(match.group(1))
        if parent >= tli or (entries and parent <= entries[-1][0]):
            raise ValueError(f"line {number}: timeline {parent} cannot be an ancestor there")
        entries.append((parent, parse_lsn(match.group(2))))
    return TimelineHistory(tli=tli, entries=tuple(entries))


def read_small_text(path: Path) -> str:
    """A small text file of the archive (history, backup history, label) as UTF-8.

    ValueError with a sentence for what cannot be read: too large, not UTF-8, an OS error.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SMALL_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_SMALL_FILE:
        raise ValueError(f"is over {MAX_SMALL_FILE} bytes, not a file PostgreSQL writes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"is not text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc


@dataclass(frozen=True)
class SegmentFile:
    name: str
    tli: int
    segno: int
    size: int
    mtime_ns: int
    problem: str | None = None  # why the segment cannot be used, when it cannot
    major: int | None = None  # the PostgreSQL major that wrote it (page magic), when known
    system_identifier: int | None = None  # from its page header, when readable
    file: str = ""  # the archive file holding it when not ``name`` (e.g. ``name``.gz)
    compression: str | None = None  # drillkit.catalog.walfiles compression of ``file``
    problem_code: str | None = None  # finding code of ``problem`` when not WAL_SEGMENT_DAMAGED

    @property
    def file_name(self) -> str:
        return self.file or self.name


@dataclass
class ArchiveListing:
    """What is in a WAL archive directory (names, sizes, headers), read without parsing WAL."""

    path: Path
    segment_size: int
    segments: dict[str, SegmentFile] = field(default_factory=dict)
    histories: dict[int, TimelineHistory] = field(default_factory=dict)
    backup_histories: dict[str, str] = field(default_factory=dict)  # file name -> text
    system_identifiers: set[int] = field(default_factory=set)
    # history and backup-history files that cannot be read: file name -> what is wrong
    unreadable: dict[str, str] = field(default_factory=dict)

    def unreadable_history_after(self, tli: int) -> tuple[str, str] | None:
        """The first unreadable ``N.history`` with N > ``tli``: recovery of a backup on ``tli``
        to the latest timeline reads it and stops ("syntax error in history file")."""
        for name in sorted(self.unreadable):
            match = _HISTORY_RE.match(name)
            if match and int(match.group(1), 16) > tli:
                return name, self.unreadable[name]
        return None


def list_archive(
    path: Path, *, segment_size: int = DEFAULT_SEGMENT_SIZE, system_identifier: int | None = None
) -> ArchiveListing:
    """List an archive; each segment gets a ``problem`` when its size or header is wrong."""
    listing = ArchiveListing(path=path, segment_size=segment_size)
    for entry, archived in _archived_files(path):
        name = archived.name
        history = _HISTORY_RE.match(name)
        if history:
            tli = int(history.group(1), 16)
            try:
                text = _read_archived_text(entry, archived)
                listing.histories[tli] = parse_history_file(tli, text)
            except ValueError as exc:
                listing.unreadable[name] = f"timeline history {archived.file} {_as_clause(exc)}"
            continue
        if _BACKUP_HISTORY_RE.match(name):
            try:
                listing.backup_histories[name] = _read_archived_text(entry, archived)
            except ValueError as exc:
                listing.unreadable[name] = f"backup history file {archived.file} {exc}"
            continue
        parsed = parse_segment_name(name, segment_size)
        if parsed is None:
            continue
        listing.segments[name] = _segment_file(
            entry, archived, parsed, segment_size, system_identifier, listing.system_identifiers
        )
    return listing


def _archived_files(path: Path) -> list[tuple[Path, ArchivedName]]:
    """The archive's WAL files, one per WAL file name: the plain file when there is one, else
    the first compressed form (what the sandbox's restore_command takes too)."""
    chosen: dict[str, tuple[int, Path, ArchivedName]] = {}
    for entry in sorted(path.iterdir()):
        archived = parse_archived_name(entry.name)
        if archived is None:
            continue  # .partial files and strangers are not used by recovery
        rank = 2 if archived.unsupported else 1 if archived.compression else 0
        if archived.name not in chosen or rank < chosen[archived.name][0]:
            chosen[archived.name] = (rank, entry, archived)
    return [
        (entry, archived)
        for _rank, entry, archived in sorted(chosen.values(), key=lambda c: c[2].name)
    ]


def _read_archived_text(entry: Path, archived: ArchivedName) -> str:
    if archived.unsupported:
        raise ValueError(f"is compressed with {archived.unsupported}, which drillkit cannot read")
    if archived.compression is None:
        return read_small_text(entry)
    head = read_head(entry, archived.compression, MAX_SMALL_FILE + 1)
    if head is None:
        raise ValueError(f"cannot be decompressed ({archived.compression})")
    if len(head) > MAX_SMALL_FILE:
        raise ValueError(f"is over {MAX_SMALL_FILE} bytes, not a file PostgreSQL writes")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"is not text (byte 0x{head[exc.start]:02x} at offset {exc.start})"
        ) from exc


def _segment_file(
    entry: Path,
    archived: ArchivedName,
    parsed: tuple[int, int],
    segment_size: int,
    system_identifier: int | None,
    seen: set[int],
) -> SegmentFile:
    tli, segno = parsed
    name, file = archived.name, "" if archived.file == archived.name else archived.file
    try:
        stat = entry.stat()
    except OSError as exc:  # a dangling symlink, a file removed while listing
        return SegmentFile(
            name, tli, segno, 0, 0, problem=f"cannot be read ({exc.strerror or exc})", file=file
        )
    base = {"name": name, "tli": tli, "segno": segno, "size": stat.st_size}
    base |= {"mtime_ns": stat.st_mtime_ns, "file": file, "compression": archived.compression}
    if archived.unsupported:
        return SegmentFile(
            **base,
            problem=(
                f"is archived as {archived.file}, compressed with {archived.unsupported}, which "
                f"drillkit cannot read: decompress it into the archive as {name}"
            ),
            problem_code="WAL_COMPRESSION_UNSUPPORTED",
        )
    if archived.compression is None and stat.st_size != segment_size:
        problem = f"has {stat.st_size} bytes, a segment has {segment_size} (truncated copy?)"
        return SegmentFile(**base, problem=problem)
    # A compressed segment's length is checked when it is decompressed to be indexed.
    header = read_segment_header(entry, compression=archived.compression)
    if header is None:
        what = f" ({archived.file} does not decompress)" if archived.compression else ""
        return SegmentFile(**base, problem=f"does not start with a WAL page header{what}")
    if header.page_address != segno * segment_size:
        return SegmentFile(
            **base,
            problem=(
                f"holds WAL of address {format_lsn(header.page_address)}, not of its name "
                "(renamed or overwritten file?)"
            ),
        )
    seen.add(header.system_identifier)
    problem = None
    if system_identifier is not None and header.system_identifier != system_identifier:
        problem = (
            f"belongs to database system {header.system_identifier}, not to "
            f"{system_identifier} (another cluster's WAL in this archive)"
        )
    return SegmentFile(
        **base, problem=problem, system_identifier=header.system_identifier, major=header.major
    )


def _as_clause(exc: ValueError) -> str:
    text = str(exc)
    return text if text.startswith(("is ", "cannot ")) else f"cannot be parsed ({text})"


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
