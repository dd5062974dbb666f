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
from drillkit.catalog.walfiles import parse_archived_name
from drillkit.catalog.walindex import WalIndex
from drillkit.exceptions import InvalidInputError
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
        return base, wal

    def _segment_size(self, wal: Path) -> int:
        for entry in sorted(wal.iterdir()):
            archived = parse_archived_name(entry.name)
            if archived is not None and len(archived.name) == 24 and not archived.unsupported:
                header = read_segment_header(entry, compression=archived.compression)
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
        # The system each segment belongs to comes from its own page header, and each backup's
        # from its own manifest: no backup speaks for the archive (a foreign one may sort first).
        archive = list_archive(wal, segment_size=size)
        say(f"archive {wal}: {len(archive.segments)} segments, {len(archive.histories)} timelines")
        backups: list[BackupInfo] = []
        for directory in dirs:
            info = _read_backup(directory, archive.backup_histories, size)
            foreign = archive.system_identifiers and info.system_identifier not in (
                None,
                *archive.system_identifiers,
            )
            if foreign:
                systems = ", ".join(map(str, sorted(archive.system_identifiers)))
                info = _with_problem(
                    info,
                    "BACKUP_FOREIGN_SYSTEM",
                    f"backup {info.backup_id} belongs to database system {info.system_identifier}, "
                    f"but the WAL archive holds only WAL of {systems}: it cannot be recovered "
                    "from this archive; keep one cluster per repository",
                    first=True,
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


def _read_backup(directory: Path, histories: dict[str, str], size: int) -> BackupInfo:
    """read_backup, with a directory that cannot be read at all as a problem of that backup."""
    try:
        return read_backup(directory, backup_histories=histories, segment_size=size)
    except OSError as exc:
        return BackupInfo(
            backup_id=directory.name,
            path=str(directory),
            start_lsn=0,
            stop_lsn=0,
            timeline=0,
            stop_timeline=0,
            start_time=None,
            stop_time=None,
            system_identifier=None,
            size_bytes=0,
            problems=(
                (
                    "BACKUP_UNREADABLE",
                    f"backup {directory.name} cannot be read ({exc.strerror or exc}: "
                    f"{exc.filename or directory}); fix its permissions or remove it",
                ),
            ),
        )


def _with_problem(info: BackupInfo, code: str, sentence: str, *, first: bool = False) -> BackupInfo:
    from dataclasses import replace

    problems = ((code, sentence), *info.problems) if first else (*info.problems, (code, sentence))
    return replace(info, problems=problems)


def _with_verification(info: BackupInfo, verification: object) -> BackupInfo:
    from dataclasses import replace

    return replace(info, verification=verification)
