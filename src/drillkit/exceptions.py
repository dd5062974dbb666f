"""The one exception hierarchy of drillkit.

    DrillError                      any problem a drill reports; carries a stable finding code
    ├── InvalidInputError           bad spec, parameter, target time or repository layout (exit 2)
    ├── BackupError                 a backup or its WAL cannot serve the requested restore
    │   └── NoRestorableBackupError no candidate satisfied the selection rules
    ├── SandboxError                provisioning, recovery or teardown of a sandbox failed
    │   ├── SandboxStartError       the restored server did not start
    │   └── RecoveryTargetNotReachedError  recovery ended before the target
    ├── RoutingError                the routing manifest would be unsafe
    │   └── ProductionTargetRefusedError   a service would reach production
    ├── CheckError                  a smoke check could not be set up (not a failed check)
    ├── ToolMissingError            this worker lacks a tool the backup needs (its PostgreSQL
    │                               major's binaries): COULD NOT VERIFY, never the backup's fault
    └── TransientDrillError         worth a retry (a lock, a busy port): operators let Airflow retry

Every class but ``TransientDrillError`` is deterministic: Airflow must not retry something that
will fail the same way. Operators record it for the tier's gate and skip the rest of the tier
(a stage of a restore drill) or raise ``AirflowFailException`` (elsewhere).
"""

from __future__ import annotations

from typing import Any


class DrillError(Exception):
    """Base class: ``code`` is a stable UPPER_SNAKE finding code, ``str()`` a sentence to act on."""

    code: str = "DRILL_ERROR"
    transient: bool = False

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInputError(DrillError):
    code = "INVALID_INPUT"


class BackupError(DrillError):
    code = "BACKUP_UNUSABLE"


class NoRestorableBackupError(BackupError):
    code = "NO_RESTORABLE_BACKUP"


class SandboxError(DrillError):
    code = "SANDBOX_FAILED"


class SandboxStartError(SandboxError):
    code = "SANDBOX_START_FAILED"


class RecoveryTargetNotReachedError(SandboxError):
    code = "RECOVERY_TARGET_NOT_REACHED"


class RoutingError(DrillError):
    code = "ROUTING_REFUSED"


class ProductionTargetRefusedError(RoutingError):
    code = "PRODUCTION_TARGET_REFUSED"


class CheckError(DrillError):
    code = "CHECK_INVALID"


class ToolMissingError(DrillError):
    code = "PG_BINARIES_MISSING"


class TransientDrillError(DrillError):
    code = "TRANSIENT"
    transient = True
