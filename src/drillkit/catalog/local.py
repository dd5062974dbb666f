"""The local backup repository: ``base/<backup-id>/`` (pg_basebackup -Fp or -Ft) and ``wal/``.

Read-only: caches live in drillkit's state directory, never in the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from drillkit.catalog import walfiles
from drillkit.catalog.backups import read_backup
from drillkit.catalog.model import BackupInfo, CatalogSnapshot
from drillkit.catalog.protocol import Materialised, select_from_snapshot
from drillkit.catalog.verify import verify_backup
from drillkit.catalog.wal import (
    DEFAULT_SEGMENT_SIZE,
    ArchiveListing,
    list_archive,
    read_segment_header,
)
from drillkit.catalog.walfiles import parse_archived_name
from drillkit.catalog.walindex import WalIndex
from drillkit.exceptions import InvalidInputError
from drillkit.outputs import check_state, refuse_inside
from drillkit.pgbin import PgSettings, installations, server_env, server_user_ids
from drillkit.state import sandbox_root_path
from drillkit.timeutil import utcnow

Progress = Callable[[str], None]


class LocalCatalog:
    """A directory of base backups (plain, or tar with or without gzip) plus a WAL archive."""

    kind = "local"

    def __init__(self, path: str | Path, *, postgres: PgSettings | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.postgres = postgres or PgSettings()

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
        infos = [
            _with_major(_read_backup(d, archive.backup_histories, size), archive) for d in dirs
        ]
        majors = {i.pg_major for i in infos if i.pg_major} | {
            s.major for s in archive.segments.values() if s.major
        }
        tools, missing = installations(majors, self.postgres)
        newest = max(infos, key=lambda i: i.stop_lsn, default=None)
        default_major = newest.pg_major if newest else None
        for major, (_code, sentence) in missing.items():
            say(f"PostgreSQL {major}: {sentence}")
        backups: list[BackupInfo] = []
        for directory, info in zip(dirs, infos, strict=True):
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
            if info.pg_major in missing:
                # First: a PostgreSQL 12 backup lacks a manifest too, but that is why.
                info = _with_problem(info, *missing[info.pg_major], first=True)
            elif info.pg_major is None and not info.problems:
                info = _with_problem(
                    info,
                    "BACKUP_INCOMPLETE",
                    f"backup {info.backup_id} has no PG_VERSION and the archive holds no WAL of "
                    "its start, so which PostgreSQL major it is cannot be told: take it again",
                )
            if verify and not info.problems and info.pg_major is not None:
                say(
                    f"verifying backup {info.backup_id} ({info.size_bytes / 2**20:.0f} MiB, "
                    f"PostgreSQL {info.pg_major})"
                )
                verification = verify_backup(
                    directory,
                    installation=tools[info.pg_major],
                    fmt=info.format,
                    use_cache=use_cache,
                )
                info = _with_verification(info, verification)
            backups.append(info)
        index = WalIndex(archive, installations=tools, default_major=default_major)
        index.build(progress=lambda name: say(f"indexed WAL segment {name}"))
        return CatalogSnapshot(
            kind=self.kind,
            location=str(self.path),
            backups=backups,
            archive=archive,
            segments=index.as_mapping(),
            taken_at=utcnow(),
            installations=tools,
            missing_majors=missing,
        )

    select = select_from_snapshot

    def check_restorable(self, coordinate: Mapping[str, Any]) -> None:
        from drillkit import pgbin
        from drillkit.catalog.tarformat import backup_format

        backup = Path(str(coordinate.get("backup_path")))
        archive = Path(str(coordinate.get("archive")))
        if backup_format(backup) is None:
            raise InvalidInputError(
                f"backup {backup} is not a base backup directory (no backup_label, no base.tar)"
            )
        if not archive.is_dir():
            raise InvalidInputError(f"WAL archive {archive} does not exist")
        pgbin.require_reachable(archive, "WAL archive")

    def materialise(
        self,
        coordinate: Mapping[str, Any],
        data: Path,
        *,
        workdir: Path,
        owner: tuple[int, int] | None,
        say: Progress,
    ) -> Materialised:
        """Copy (plain) or extract (tar) the backup; recovery copies WAL from the archive."""
        from drillkit.catalog.tarformat import PLAIN, backup_format
        from drillkit.sandbox import config as sandbox_config
        from drillkit.sandbox.copy import copy_backup
        from drillkit.sandbox.untar import extract_backup

        backup = Path(str(coordinate.get("backup_path")))
        archive = Path(str(coordinate.get("archive")))
        fmt = backup_format(backup)

        def copied(done: int, total: int) -> None:
            if total:
                say(f"copied {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

        def extracted(done: int, total: int) -> None:
            if total:
                say(f"extracted {done / 2**20:.0f} of {total / 2**20:.0f} MiB of archives")

        if fmt == PLAIN:
            say(f"copying backup {backup.name} into {data}")
            copy_backup(backup, data, owner=owner, progress=copied)
        else:
            say(f"extracting backup {backup.name} ({fmt}) into {data}")
            extract_backup(backup, data, owner=owner, progress=extracted, say=say)
        # Quoted for /bin/sh, % doubled for the server: a repository path is data, never shell.
        plain = sandbox_config.restore_command(archive)  # refuses a path it cannot quote
        compressions = walfiles.compressions_in(archive)
        if not compressions:
            return Materialised(restore_command=plain)
        # Compressed segments (.gz, .zst, ...): a helper copied into the sandbox reads them.
        helper = walfiles.helper_command(workdir)
        _require_readers(helper, compressions)
        return Materialised(restore_command=walfiles.helper_restore_command(helper, archive))


def from_config(config: Mapping[str, Any], *, postgres: PgSettings | None = None) -> LocalCatalog:
    """``{kind: local, path: DIR}``; a coordinate without ``path`` still materialises from its
    own ``backup_path`` and ``archive``."""
    return LocalCatalog(str(config.get("path") or "."), postgres=postgres)


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


def _require_readers(
    helper: list[str], compressions: set[str], *, env: dict[str, str] | None = None
) -> None:
    """Before recovery starts: the restore_command (``helper``, run as the PostgreSQL OS user)
    can decompress every compression in the archive. Else recovery would stop at the first such
    segment and the backup would be blamed for a tool this worker lacks: ToolMissingError
    (COULD NOT VERIFY), naming what to install. ``env``: the server's (its PATH finds the
    commands)."""
    import subprocess

    from drillkit.exceptions import ToolMissingError

    try:
        done = subprocess.run(
            [*helper, "--can", *sorted(compressions)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env=env if env is not None else server_env(),
            **server_user_ids(),  # type: ignore[arg-type]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissingError(
            f"cannot run the WAL restore helper {helper[0]} as the PostgreSQL OS user ({exc}); "
            "install python3 for that user"
        ) from exc
    if done.returncode == walfiles.CANNOT_READ:
        missing = "; ".join(done.stdout.split("\n")).strip("; ")
        raise ToolMissingError(
            f"the WAL archive holds segments compressed with {missing}, which {helper[0]} "
            "cannot read as the PostgreSQL OS user: install the module for that python3 or "
            "the command (Debian: python3-zstandard or zstd; python3-lz4 or lz4)",
            code="WAL_TOOL_MISSING",
        )
    if done.returncode != 0:
        raise ToolMissingError(
            f"the WAL restore helper failed its preflight as the PostgreSQL OS user "
            f"(exit {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]})",
            code="WAL_TOOL_MISSING",
        )


def _with_problem(info: BackupInfo, code: str, sentence: str, *, first: bool = False) -> BackupInfo:
    from dataclasses import replace

    problems = ((code, sentence), *info.problems) if first else (*info.problems, (code, sentence))
    return replace(info, problems=problems)


def _with_major(info: BackupInfo, archive: ArchiveListing) -> BackupInfo:
    """PG_VERSION's major; without one, the major whose WAL page magic starts the backup."""
    if info.pg_major is not None or not info.start_lsn:
        return info
    from dataclasses import replace

    from drillkit.catalog.wal import segment_name, segno_of

    size = archive.segment_size
    start = segment_name(info.timeline, segno_of(info.start_lsn, size), size)
    segment = archive.segments.get(start)
    return replace(info, pg_major=segment.major) if segment and segment.major else info


def _with_verification(info: BackupInfo, verification: object) -> BackupInfo:
    from dataclasses import replace

    return replace(info, verification=verification)
