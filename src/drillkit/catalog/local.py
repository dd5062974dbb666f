"""The local backup repository: ``base/<backup-id>/`` (pg_basebackup -Fp or -Ft) and ``wal/``.

Read-only: caches live in drillkit's state directory, never in the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drillkit.catalog.backups import read_backup
from drillkit.catalog.model import BackupInfo, CatalogSnapshot
from drillkit.catalog.verify import verify_backup
from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE, list_archive, read_segment_header
from drillkit.catalog.walindex import WalIndex
from drillkit.exceptions import InvalidInputError
from drillkit.outputs import check_state, refuse_inside
from drillkit.state import sandbox_root_path
from drillkit.timeutil import utcnow

Progress = Callable[[str], None]


class LocalCatalog:
    """A directory of base backups (plain, or tar with or without gzip) plus a WAL archive."""

    kind = "local"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().absolute()

    def _check_layout(self) -> tuple[Path, Path]:
        base, wal = self.path / "base", self.path / "wal"
        if not self.path.is_dir():
            raise InvalidInputError(
                f"backup repository {self.path} does not exist; point catalog.path at a directory "
                "holding base/<backup-id>/ and wal/ (create a demo one with `drillkit scenario "
                "create DIR`)"
            )
        missing = [p.name for p in (base, wal) if not p.is_dir()]
        if missing:
            raise InvalidInputError(
                f"backup repository {self.path} has no {' or '.join(missing)}/ directory; a local "
                "repository holds base/<backup-id>/ (pg_basebackup -Fp or -Ft output) and wal/ "
                "(the archive_command target)"
            )
        # Its caches go to drillkit's state directory, and sandboxes to the sandbox root:
        # neither may be inside the repository.
        check_state([self.path])
        refuse_inside(sandbox_root_path(), setting="DRILLKIT_SANDBOX_ROOT", catalogs=[self.path])
        return base, wal

    def _segment_size(self, wal: Path) -> int:
        for entry in sorted(wal.iterdir()):
            if len(entry.name) == 24:
                header = read_segment_header(entry)
                if header is not None:
                    return header.segment_size
        return DEFAULT_SEGMENT_SIZE

    def snapshot(
        self, *, verify: bool = True, use_cache: bool = True, progress: Progress | None = None
    ) -> CatalogSnapshot:
        """Read every backup and the archive; verify backups (cached) and index WAL (cached)."""
        base, wal = self._check_layout()
        say = progress or (lambda _msg: None)
        dirs = sorted(p for p in base.iterdir() if p.is_dir())
        size = self._segment_size(wal)
        first = next((read_backup(d, backup_histories={}, segment_size=size) for d in dirs), None)
        sysid = first.system_identifier if first else None
        archive = list_archive(wal, segment_size=size, system_identifier=sysid)
        say(f"archive {wal}: {len(archive.segments)} segments, {len(archive.histories)} timelines")
        backups: list[BackupInfo] = []
        for directory in dirs:
            info = read_backup(
                directory, backup_histories=archive.backup_histories, segment_size=size
            )
            if sysid is not None and info.system_identifier not in (None, sysid):
                info = _with_problem(
                    info,
                    "WAL_FOREIGN_SYSTEM",
                    f"backup {info.backup_id} belongs to database system {info.system_identifier}, "
                    f"the archive to {sysid}: keep one cluster per repository",
                )
            if verify and not info.problems:
                say(f"verifying backup {info.backup_id} ({info.size_bytes / 2**20:.0f} MiB)")
                verification = verify_backup(directory, use_cache=use_cache)
                info = _with_verification(info, verification)
            backups.append(info)
        index = WalIndex(archive)
        index.build(progress=lambda name: say(f"indexed WAL segment {name}"))
        return CatalogSnapshot(
            kind=self.kind,
            location=str(self.path),
            backups=backups,
            archive=archive,
            segments=index.as_mapping(),
            taken_at=utcnow(),
        )


def _with_problem(info: BackupInfo, code: str, sentence: str) -> BackupInfo:
    from dataclasses import replace

    return replace(info, problems=(*info.problems, (code, sentence)))


def _with_verification(info: BackupInfo, verification: object) -> BackupInfo:
    from dataclasses import replace

    return replace(info, verification=verification)
