"""Findings: what a drill found, each with a stable code and a sentence a person can act on.

Codes are part of drillkit's contract (reports, alerts and dashboards key on them):
never rename one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

# Catalog and selection
BACKUP_CHECKSUM_MISMATCH = "BACKUP_CHECKSUM_MISMATCH"
BACKUP_UNVERIFIABLE = "BACKUP_UNVERIFIABLE"
BACKUP_INCOMPLETE = "BACKUP_INCOMPLETE"
WAL_GAP = "WAL_GAP"
WAL_SEGMENT_DAMAGED = "WAL_SEGMENT_DAMAGED"
WAL_FOREIGN_SYSTEM = "WAL_FOREIGN_SYSTEM"
# Replaying it would create a tablespace directory at production's path, outside the sandbox.
WAL_CREATES_TABLESPACE = "WAL_CREATES_TABLESPACE"
TARGET_BEFORE_OLDEST_RESTORABLE = "TARGET_BEFORE_OLDEST_RESTORABLE"
TARGET_AFTER_ARCHIVE_END = "TARGET_AFTER_ARCHIVE_END"
DATA_LOSS_OVER_RPO = "DATA_LOSS_OVER_RPO"
TARGET_INVALID = "TARGET_INVALID"
NO_RESTORABLE_BACKUP = "NO_RESTORABLE_BACKUP"
# This worker lacks the backup's PostgreSQL major (or drillkit does not drill it): never the
# backup's fault, so never FAIL (COULD NOT VERIFY), and the sentence names package and setting.
PG_BINARIES_MISSING = "PG_BINARIES_MISSING"
PG_BINARIES_MISMATCH = "PG_BINARIES_MISMATCH"
PG_MAJOR_UNSUPPORTED = "PG_MAJOR_UNSUPPORTED"
# WAL of a newer major after an in-place upgrade: fine WAL, but an older backup stops before it.
WAL_OTHER_MAJOR = "WAL_OTHER_MAJOR"
# The restore_command cannot decompress the archive's WAL here (zstd/lz4 reader missing).
WAL_TOOL_MISSING = "WAL_TOOL_MISSING"
TOOL_CODES = frozenset(
    {PG_BINARIES_MISSING, PG_BINARIES_MISMATCH, PG_MAJOR_UNSUPPORTED, WAL_TOOL_MISSING}
)
# Sandbox
SANDBOX_START_FAILED = "SANDBOX_START_FAILED"
RECOVERY_TARGET_NOT_REACHED = "RECOVERY_TARGET_NOT_REACHED"
RTO_EXCEEDED = "RTO_EXCEEDED"
# A tar member that would land outside the sandbox (absolute, "..", a link): a tampered archive.
BACKUP_ARCHIVE_UNSAFE = "BACKUP_ARCHIVE_UNSAFE"
# A symlink (other than pg_tblspc/<oid> onto a tablespace directory) or special file in a backup.
BACKUP_UNSAFE_LINK = "BACKUP_UNSAFE_LINK"
# The PostgreSQL OS user cannot read the backup: drillkit reads backups as that user only.
BACKUP_UNREADABLE = "BACKUP_UNREADABLE"
# Too little free space where the sandbox goes (before, or found full during, the restore).
SANDBOX_NO_SPACE = "SANDBOX_NO_SPACE"
# Kubernetes: why CloudNativePG's full-recovery Job failed, from its pod's log. The store lacks
# the backup its Backup object describes (FAIL) / the drill cannot read the store (credentials,
# egress: COULD NOT VERIFY) / a cause the log does not name, or no log (COULD NOT VERIFY).
BACKUP_NOT_IN_STORE = "BACKUP_NOT_IN_STORE"
RECOVERY_SOURCE_UNREACHABLE = "RECOVERY_SOURCE_UNREACHABLE"
K8S_RECOVERY_JOB_FAILED = "K8S_RECOVERY_JOB_FAILED"


@dataclass(frozen=True)
class Finding:
    """One observation. ``subject`` names what it is about (a backup id, a segment, a check)."""

    code: str
    message: str
    severity: Severity = "error"
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            code=data["code"],
            message=data["message"],
            severity=data.get("severity", "error"),
            subject=data.get("subject"),
        )
