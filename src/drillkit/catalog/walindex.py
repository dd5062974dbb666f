"""Commit and abort records of each archived WAL segment, read once with pg_waldump and cached.

Recovery to a time stops at the first commit or abort after the target, so selection needs them.
CREATE TABLESPACE records are kept too: replaying one makes the server create a directory at
production's tablespace path, outside any sandbox.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drillkit.catalog.wal import ArchiveListing, SegmentFile, parse_lsn
from drillkit.catalog.walfiles import decompress_to
from drillkit.pgbin import Installation
from drillkit.state import read_json, state_dir, write_json_atomic

_RECORD_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F/]+, desc: (COMMIT|ABORT)(?:_PREPARED)? "
    r"(?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
_TABLESPACE_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F/]+, desc: CREATE (\d+) \"(.*)\"$", re.MULTILINE
)
# 3: each segment read by its own major's pg_waldump (2 read every segment with the embedded 18).
_CACHE_VERSION = 3


@dataclass(frozen=True)
class XactRecord:
    """A commit (``kind='c'``) or abort (``kind='a'``) record: where it is and when it happened."""

    lsn: int
    ts_us: int  # microseconds since the Unix epoch, UTC
    kind: str

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts_us / 1_000_000, UTC)


@dataclass(frozen=True)
class TablespaceRecord:
    """A CREATE TABLESPACE in WAL: replaying it creates ``location`` on the restoring host."""

    lsn: int
    oid: int
    location: str


@dataclass(frozen=True)
class SegmentIndex:
    records: tuple[XactRecord, ...]
    error: str | None  # pg_waldump could not read the segment to its end
    tablespaces: tuple[TablespaceRecord, ...] = ()


def _ts_us(text: str) -> int:
    stamp = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S")
    return round(stamp.replace(tzinfo=UTC).timestamp() * 1_000_000)


def parse_waldump(output: str) -> list[XactRecord]:
    records = []
    for match in _RECORD_RE.finditer(output):
        lsn, kind, stamp = match.groups()
        records.append(XactRecord(lsn=parse_lsn(lsn), ts_us=_ts_us(stamp), kind=kind[0].lower()))
    return records


def parse_tablespaces(output: str) -> list[TablespaceRecord]:
    return [
        TablespaceRecord(lsn=parse_lsn(lsn), oid=int(oid), location=location)
        for lsn, oid, location in _TABLESPACE_RE.findall(output)
    ]


def _index_archived(
    path: Path, segment: SegmentFile, segment_size: int, installation: Installation
) -> SegmentIndex:
    """Index a segment as archived: a compressed one is decompressed into a private temporary
    directory first (pg_waldump reads only plain files), and must be exactly one segment long."""
    if segment.compression is None:
        return _index_segment(path, installation)
    with tempfile.TemporaryDirectory(prefix="drillkit-wal-") as tmp:
        plain = Path(tmp) / segment.name
        try:
            size = decompress_to(path, segment.compression, plain, limit=segment_size)
        except ValueError as exc:
            return SegmentIndex(records=(), error=f"{segment.file_name} {exc}")
        if size != segment_size:
            return SegmentIndex(
                records=(),
                error=f"{segment.file_name} decompresses to {size} bytes, a segment has "
                f"{segment_size} (truncated copy?)",
            )
        return _index_segment(plain, installation)


def _index_segment(path: Path, installation: Installation) -> SegmentIndex:
    result = installation.run(
        "pg_waldump",
        ["-r", "Transaction", "-r", "Tablespace", str(path)],
        as_server_user=False,
        check=False,
    )
    error = None
    stderr = result.stderr.strip()
    # A record that continues into the next, missing file is the continuity check's business.
    if result.returncode != 0 and "could not find file" not in stderr:
        error = stderr.replace("pg_waldump: error: ", "") or f"exit code {result.returncode}"
    return SegmentIndex(
        records=tuple(parse_waldump(result.stdout)),
        error=error,
        tablespaces=tuple(parse_tablespaces(result.stdout)),
    )


class WalIndex:
    """Per-archive cache of segment indexes, keyed by file name, size and mtime.

    Each segment is read by the pg_waldump of the major that wrote it (its page magic; an
    unknown magic counts as ``default_major``); a segment whose major has no installation in
    ``installations`` is left unindexed: continuity then names the missing binaries, not damage.
    """

    def __init__(
        self,
        listing: ArchiveListing,
        *,
        installations: dict[int, Installation],
        default_major: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.listing = listing
        self.installations = installations
        self.default_major = default_major
        key = hashlib.sha256(str(listing.path.resolve()).encode()).hexdigest()[:16]
        self._cache_path = (cache_dir or state_dir() / "walindex") / f"{key}.json"
        self._segments: dict[str, SegmentIndex] = {}

    def _signature(self, segment: SegmentFile) -> list[int | str]:
        return [segment.size, segment.mtime_ns, segment.file_name]

    def build(self, *, workers: int = 2, progress: object = None) -> None:
        """Index every usable segment, reading only those not already cached."""
        cached = read_json(self._cache_path) or {}
        if cached.get("version") != _CACHE_VERSION:
            cached = {"version": _CACHE_VERSION, "segments": {}}
        entries: dict[str, dict[str, object]] = cached["segments"]
        todo = []
        for name, segment in self.listing.segments.items():
            entry = entries.get(name)
            installation = self.installations.get(segment.major or self.default_major or 0)
            if segment.problem is not None or installation is None:
                continue
            if entry and entry.get("sig") == self._signature(segment):
                self._segments[name] = SegmentIndex(
                    records=tuple(XactRecord(*r) for r in entry["records"]),  # type: ignore[attr-defined]
                    error=entry.get("error"),  # type: ignore[arg-type]
                    tablespaces=tuple(
                        TablespaceRecord(*t)
                        for t in entry.get("tablespaces", [])  # type: ignore[attr-defined]
                    ),
                )
            else:
                todo.append((segment, installation))
        if todo:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                size = self.listing.segment_size
                indexes = pool.map(
                    lambda job: _index_archived(
                        self.listing.path / job[0].file_name, job[0], size, job[1]
                    ),
                    todo,
                )
                for (segment, _tool), index in zip(todo, indexes, strict=True):
                    self._segments[segment.name] = index
                    if callable(progress):
                        progress(segment.name)
        fresh = {
            name: {
                "sig": self._signature(self.listing.segments[name]),
                "records": [[r.lsn, r.ts_us, r.kind] for r in index.records],
                "error": index.error,
                "tablespaces": [[t.lsn, t.oid, t.location] for t in index.tablespaces],
            }
            for name, index in self._segments.items()
        }
        if todo or set(fresh) != set(entries):
            write_json_atomic(self._cache_path, {"version": _CACHE_VERSION, "segments": fresh})

    def segment(self, name: str) -> SegmentIndex | None:
        return self._segments.get(name)

    def as_mapping(self) -> dict[str, SegmentIndex]:
        return dict(self._segments)
