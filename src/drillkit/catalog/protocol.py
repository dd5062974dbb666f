"""The catalog Protocol: what every backup catalog kind offers the drill flow.

Selection, the gate and the sandbox talk to catalogs only through this; a new kind is one module
with a ``from_config`` factory plus one line in ``drillkit.catalog.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from drillkit.catalog.model import CatalogSnapshot

Say = Callable[[str], None]


@dataclass(frozen=True)
class Materialised:
    """What a catalog leaves in a sandbox data directory, and how recovery reaches its WAL.

    The sandbox writes ``restore_command`` into the configuration it owns (the tool's own
    written settings never decide). ``environment`` holds variables the command needs at
    recovery time (repository credentials): passed to the server's process, never logged.
    """

    restore_command: str
    environment: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # Findings of the restore itself ({code, severity, message}), e.g. BACKUP_UNVERIFIABLE when
    # the restored copy has no manifest to verify: the sandbox record carries them to the gate.
    findings: tuple[Mapping[str, str], ...] = ()


class Catalog(Protocol):
    """Any catalog: it can choose a restore coordinate (``drillkit.restore_coordinate/v1``)."""

    kind: str

    def select(
        self,
        *,
        policy: str,
        target: datetime | None,
        rpo: timedelta,
        exclude: list[str],
        pinned: str | None,
        checksum_gate: bool = True,
        say: Say | None = None,
    ) -> dict[str, Any]:
        """Choose a coordinate under the policy; raise NoRestorableBackupError with reasons."""
        ...


@runtime_checkable
class BackupRepository(Protocol):
    """A catalog whose backups drillkit reads, verifies and restores into a local sandbox.

    ``snapshot`` lists backups (``BackupInfo``: tool, pg_major, type, depends_on), verifies them
    (cached per unchanged backup) and indexes the WAL archive, so continuity and gaps are
    planned by ``drillkit.catalog.continuity``, the same for every kind.
    """

    kind: str

    def snapshot(
        self, *, verify: bool = True, use_cache: bool = True, progress: Say | None = None
    ) -> CatalogSnapshot: ...

    def check_restorable(self, coordinate: Mapping[str, Any]) -> None:
        """Refuse (InvalidInputError) before a sandbox exists, when the coordinate's backup or
        archive cannot be reached; no side effects."""
        ...

    def materialise(
        self,
        coordinate: Mapping[str, Any],
        data: Path,
        *,
        workdir: Path,
        owner: tuple[int, int] | None,
        say: Say,
    ) -> Materialised:
        """Create ``data`` (which must not exist) holding the coordinate's backup, ready for
        recovery; ``workdir`` is the sandbox's private directory for the tool's own files."""
        ...


def select_from_snapshot(
    repository: BackupRepository,
    *,
    policy: str,
    target: datetime | None,
    rpo: timedelta,
    exclude: list[str],
    pinned: str | None,
    checksum_gate: bool = True,
    say: Say | None = None,
) -> dict[str, Any]:
    """``Catalog.select`` for every BackupRepository: snapshot, then the PITR selection."""
    from drillkit.pitr import select_coordinate

    snapshot = repository.snapshot(progress=say)
    return select_coordinate(
        snapshot,
        target=target,
        policy=policy,
        rpo=rpo,
        exclude=exclude,
        pinned=pinned,
        checksum_gate=checksum_gate,
    )
