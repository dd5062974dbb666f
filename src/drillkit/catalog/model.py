"""Plain data the catalog produces and selection consumes (no I/O past this point)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drillkit.catalog.wal import ArchiveListing
from drillkit.catalog.walindex import SegmentIndex
from drillkit.pgbin import Installation
from drillkit.timeutil import isoformat

VERIFIED = "verified"
# Verified on the restored copy (pg_verifybackup against its manifest when it has one, else the
# drill's integrity and pitr checks carry the proof): object-store kinds such as barman_cloud.
AT_RESTORE = "at_restore"
RESTORABLE_STATUSES = frozenset({VERIFIED, AT_RESTORE})
# pg_verifybackup outcome -> the finding code a failed backup carries.
VERIFICATION_CODES = {
    "checksum_mismatch": "BACKUP_CHECKSUM_MISMATCH",
    "incomplete": "BACKUP_INCOMPLETE",
    "unverifiable": "BACKUP_UNVERIFIABLE",
    "unsafe_link": "BACKUP_UNSAFE_LINK",
}


@dataclass(frozen=True)
class Verification:
    """Outcome of ``pg_verifybackup``: status ``verified`` or a problem with its finding code."""

    # verified | at_restore | checksum_mismatch | incomplete | unverifiable | unsafe_link | not_run
    status: str
    detail: str = ""
    checked_at: str | None = None
    cached: bool = False

    @property
    def code(self) -> str | None:
        return VERIFICATION_CODES.get(self.status)


@dataclass(frozen=True)
class BackupInfo:
    backup_id: str
    path: str
    start_lsn: int
    stop_lsn: int
    timeline: int
    stop_timeline: int
    start_time: datetime | None
    stop_time: datetime | None  # from the archive's backup history file, when readable
    system_identifier: int | None
    size_bytes: int
    verification: Verification = field(default_factory=lambda: Verification("not_run"))
    problems: tuple[tuple[str, str], ...] = ()  # (finding code, sentence) that make it unusable
    format: str = "plain"  # pg_basebackup -Fp, or -Ft as tar | tar.gz (| tar.lz4 | tar.zst)
    pg_major: int | None = None  # from PG_VERSION (the base directory or base.tar[.gz])
    tool: str = "pg_basebackup"  # what took it: pg_basebackup | pgbackrest | ...
    type: str = "full"  # full | diff | incr
    depends_on: tuple[str, ...] = ()  # backups whose files this one needs (diff/incr)

    def summary(self) -> dict[str, Any]:
        from drillkit.catalog.wal import format_lsn

        return {
            "backup_id": self.backup_id,
            "start_time": isoformat(self.start_time),
            "stop_time": isoformat(self.stop_time),
            "start_lsn": format_lsn(self.start_lsn),
            "stop_lsn": format_lsn(self.stop_lsn),
            "timeline": self.timeline,
            "system_identifier": str(self.system_identifier) if self.system_identifier else None,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "pg_major": self.pg_major,
            "verification": self.verification.status,
            "tool": self.tool,
            "type": self.type,
            "depends_on": list(self.depends_on),
        }


@dataclass
class CatalogSnapshot:
    """Everything selection needs about one repository, as read at ``taken_at``."""

    kind: str
    location: str
    backups: list[BackupInfo]
    archive: ArchiveListing
    segments: dict[str, SegmentIndex]
    taken_at: datetime
    # How to open this catalog again (a coordinate carries it to the sandbox): never secrets.
    config: dict[str, Any] | None = None
    # PostgreSQL majors of its backups and WAL: the installation found, or why none was
    # ((code, sentence): PG_BINARIES_MISSING, PG_MAJOR_UNSUPPORTED...); never the backup's fault.
    installations: dict[int, Installation] = field(default_factory=dict)
    missing_majors: dict[int, tuple[str, str]] = field(default_factory=dict)

    def descriptor(self) -> dict[str, Any]:
        return dict(self.config) if self.config else {"kind": self.kind, "path": self.location}
