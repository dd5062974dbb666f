"""The ``barman_cloud`` catalog kind: backups barman-cloud-backup wrote to an object store.

``catalog: {kind: barman_cloud, destination: s3://bucket/path, server_name: NAME,
endpoint_url?: URL, aws_conn_id?: CONN}``. Backups come from their ``backup.info`` objects; one
whose status is not DONE (STARTED: interrupted or running; FAILED) is listed and never chosen.
WAL coverage comes from the ``wals/`` listing. A backup restores into a local sandbox with
barman-cloud-restore; recovery reads the WAL staged in the sandbox. Read-only towards the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from drillkit.barman import credentials as creds
from drillkit.barman.mirror import mirror_dir, sync_wal
from drillkit.barman.store import Destination, ObjectStoreReader, describe_client_error
from drillkit.catalog.model import AT_RESTORE, BackupInfo, CatalogSnapshot, Verification
from drillkit.catalog.protocol import Materialised, select_from_snapshot
from drillkit.catalog.staging import stage_wal
from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE, list_archive, parse_lsn
from drillkit.catalog.walindex import WalIndex
from drillkit.exceptions import BackupError, InvalidInputError, TransientDrillError
from drillkit.pgbin import PgSettings, for_major, installations
from drillkit.sandbox import config as sandbox_config
from drillkit.timeutil import utcnow

Say = Callable[[str], None]
KIND = "barman_cloud"
_KEYS = {"kind", "destination", "server_name", "endpoint_url", "aws_conn_id"}
DONE = "DONE"


def parse_backup_info(text: str) -> dict[str, str]:
    """``key=value`` lines of a backup.info (barman/infofile.py ``FieldListFile.save``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "None") else value


def _time(value: str | None) -> datetime | None:
    text = _none(value)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class StoredBackup:
    backup_id: str
    info: dict[str, str]
    data_keys: tuple[str, ...]
    size: int


class BarmanCloudCatalog:
    """A Barman Cloud destination of one server; list and get only."""

    kind = KIND

    def __init__(
        self,
        *,
        destination: Destination,
        endpoint_url: str | None = None,
        aws_conn_id: str | None = None,
        postgres: PgSettings | None = None,
    ) -> None:
        self.destination = destination
        self.endpoint_url = endpoint_url
        self.aws_conn_id = aws_conn_id
        self.postgres = postgres

    def descriptor(self) -> dict[str, Any]:
        """How to open this catalog again: never credentials, only the connection's id."""
        config: dict[str, Any] = {
            "kind": KIND,
            "destination": self.destination.url,
            "server_name": self.destination.server_name,
        }
        if self.endpoint_url:
            config["endpoint_url"] = self.endpoint_url
        if self.aws_conn_id:
            config["aws_conn_id"] = self.aws_conn_id
        return config

    def credentials(self) -> dict[str, str]:
        """The AWS_* variables boto3 and the tools get (environment only, never logged)."""
        return creds.resolve(self.aws_conn_id)

    def _reader(self) -> ObjectStoreReader:
        return ObjectStoreReader(endpoint_url=self.endpoint_url, credentials=self.credentials())

    # -- listing -----------------------------------------------------------------------------
    def _stored_backups(self, reader: ObjectStoreReader) -> list[StoredBackup]:
        base = self.destination.key("base") + "/"
        objects: dict[str, list[tuple[str, int]]] = {}
        for obj in reader.list(self.destination.bucket, base):
            parts = obj.key[len(base) :].split("/")
            if len(parts) == 2:
                objects.setdefault(parts[0], []).append((parts[1], obj.size))
        backups = []
        for backup_id, files in sorted(objects.items()):
            names = {name for name, _size in files}
            if "backup.info" not in names:
                continue  # not a backup barman lists either
            text = reader.get(
                self.destination.bucket, self.destination.key("base", backup_id, "backup.info")
            )
            data = tuple(
                self.destination.key("base", backup_id, n)
                for n in sorted(names)
                if n != "backup.info"
            )
            size = sum(s for n, s in files if n != "backup.info")
            info = parse_backup_info(text.decode("utf-8", "replace"))
            backups.append(StoredBackup(backup_id, info, data, size))
        return backups

    def _backup_info(self, stored: StoredBackup) -> BackupInfo:
        info, bid = stored.info, stored.backup_id
        problems: list[tuple[str, str]] = []
        status = info.get("status", "UNKNOWN")
        if status != DONE:
            error = _none(info.get("error"))
            problems.append(
                (
                    "BACKUP_INCOMPLETE",
                    f"backup {bid} has status {status}"
                    + (f" ({error})" if error else "")
                    + ": barman-cloud-backup never finished it (interrupted, failed or still "
                    "running), so it is never restored; look at the backup job's log",
                )
            )
        elif not any(k.rsplit("/", 1)[-1].startswith("data.tar") for k in stored.data_keys):
            problems.append(
                (
                    "BACKUP_INCOMPLETE",
                    f"backup {bid} is DONE but its data archive (data.tar) is missing from the "
                    "store: restore an older backup and find out what deleted it",
                )
            )
        elif _none(info.get("tablespaces")):
            problems.append(
                (
                    "BACKUP_UNVERIFIABLE",
                    f"backup {bid} has tablespaces, which drillkit does not yet relocate into a "
                    "sandbox for barman-cloud-restore; drill it by hand or pin another backup",
                )
            )
        start = _none(info.get("begin_xlog"))
        stop = _none(info.get("end_xlog"))
        version = _none(info.get("version"))
        sysid = _none(info.get("systemid"))
        compression = _none(info.get("compression"))
        return BackupInfo(
            backup_id=bid,
            path=self.destination.key("base", bid),
            start_lsn=parse_lsn(start) if start else 0,
            stop_lsn=parse_lsn(stop) if stop else 0,
            timeline=int(info.get("timeline") or 1),
            stop_timeline=int(info.get("timeline") or 1),
            start_time=_time(info.get("begin_time")),
            stop_time=_time(info.get("end_time")),
            system_identifier=int(sysid) if sysid else None,
            size_bytes=stored.size,
            verification=Verification(
                AT_RESTORE,
                "Barman Cloud backups are verified when restored: pg_verifybackup against the "
                "restored copy's backup_manifest when it has one, else the drill's checks",
            ),
            problems=tuple(problems),
            format="tar" + (f".{compression}" if compression else ""),
            tool="barman-cloud",
            pg_major=int(version) // 10000 if version and version.isdigit() else None,
        )

    def snapshot(
        self, *, verify: bool = True, use_cache: bool = True, progress: Say | None = None
    ) -> CatalogSnapshot:
        """List the backups and mirror the WAL objects (GET only), then index the WAL."""
        del verify, use_cache  # verification happens on the restored copy
        say = progress or (lambda _msg: None)
        reader = self._reader()
        try:
            stored = self._stored_backups(reader)
            mirror = mirror_dir(self.endpoint_url, self.destination)
            sync_wal(reader, self.destination, mirror, say=say)
        except (InvalidInputError, BackupError):
            raise
        except Exception as exc:  # botocore's errors: no credentials, refused, unreachable
            raise _store_error(exc, self.destination) from exc
        sizes = {int(s.info.get("xlog_segment_size") or DEFAULT_SEGMENT_SIZE) for s in stored}
        size = sizes.pop() if len(sizes) == 1 else DEFAULT_SEGMENT_SIZE
        sysids = {s.info.get("systemid") for s in stored if _none(s.info.get("systemid"))}
        sysid = int(next(iter(sysids))) if len(sysids) == 1 else None
        archive = list_archive(mirror, segment_size=size, system_identifier=sysid)
        say(
            f"{self.destination.url}/{self.destination.server_name}: {len(stored)} backups, "
            f"{len(archive.segments)} WAL segments"
        )
        backups = [self._backup_info(s) for s in stored]
        majors = {b.pg_major for b in backups if b.pg_major} | {
            s.major for s in archive.segments.values() if s.major
        }
        tools, missing = installations(majors, self.postgres)
        for major, (_code, sentence) in missing.items():
            say(f"PostgreSQL {major}: {sentence}")
        backups = [
            with_problem(b, *missing[b.pg_major]) if b.pg_major in missing else b for b in backups
        ]
        newest = max(backups, key=lambda b: b.stop_lsn, default=None)
        index = WalIndex(
            archive, installations=tools, default_major=newest.pg_major if newest else None
        )
        index.build(progress=lambda name: say(f"indexed WAL segment {name}"))
        return CatalogSnapshot(
            kind=KIND,
            location=f"{self.destination.url} (server {self.destination.server_name})",
            backups=backups,
            archive=archive,
            segments=index.as_mapping(),
            taken_at=utcnow(),
            config=self.descriptor(),
            installations=tools,
            missing_majors=missing,
        )

    select = select_from_snapshot

    # -- restore -----------------------------------------------------------------------------
    def check_restorable(self, coordinate: Mapping[str, Any]) -> None:
        from drillkit.barman import tools

        tools.bin_dir()  # the tools exist and the server's OS user can run them
        if not coordinate.get("backup_id"):
            raise InvalidInputError("the coordinate names no backup_id")

    def materialise(
        self,
        coordinate: Mapping[str, Any],
        data: Path,
        *,
        workdir: Path,
        owner: tuple[int, int] | None,
        say: Say,
    ) -> Materialised:
        """barman-cloud-restore the backup into ``data``, then verify it against its manifest
        when it carries one."""
        from drillkit.barman.restore import restore_backup, verify_restored

        backup_id = str(coordinate["backup_id"])
        environment = self.credentials()
        say(f"barman-cloud-restore {backup_id} from {self.destination.url} into {data}")
        restore_backup(
            endpoint_url=self.endpoint_url,
            destination=self.destination,
            backup_id=backup_id,
            data=data,
            owner=owner,
            credentials=environment,
        )
        major = (coordinate.get("postgres") or {}).get("major")
        major = major if isinstance(major, int) else None
        installation = for_major(major, self.postgres) if major else None
        findings = verify_restored(data, backup_id, installation=installation, say=say)
        # The sealed server reaches no store: recovery reads the WAL selection indexed (fetched
        # with GET only), staged in the sandbox; no credentials enter the server's environment.
        staged = stage_wal(coordinate, workdir, owner=owner, say=say)
        return Materialised(
            restore_command=sandbox_config.restore_command(staged), findings=tuple(findings)
        )


def _store_error(exc: Exception, destination: Destination) -> Exception:
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return TransientDrillError(
            f"the object store for {destination.url} did not answer ({name}); retrying may help",
            code="STORE_UNREACHABLE",
        )
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return InvalidInputError(
            f"no credentials for {destination.url}: set catalog.aws_conn_id, or give the worker "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an instance role)",
            code="STORE_CREDENTIALS_MISSING",
        )
    return InvalidInputError(describe_client_error(exc, destination), code="STORE_UNREADABLE")


def from_config(
    config: Mapping[str, Any], *, postgres: PgSettings | None = None
) -> BarmanCloudCatalog:
    """Validate ``{kind: barman_cloud, ...}``; no I/O."""
    unknown = sorted(set(map(str, config)) - _KEYS)
    if unknown:
        raise InvalidInputError(
            f"catalog has unknown keys {unknown}; a barman_cloud catalog takes "
            f"{', '.join(sorted(_KEYS - {'kind'}))}"
        )
    endpoint = config.get("endpoint_url")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise InvalidInputError(
            f"catalog.endpoint_url {endpoint!r} is not an http(s) URL (the S3 endpoint)"
        )
    conn = config.get("aws_conn_id")
    if conn is not None and (not isinstance(conn, str) or not conn):
        raise InvalidInputError("catalog.aws_conn_id must be an Airflow connection id")
    return BarmanCloudCatalog(
        destination=Destination.parse(
            str(config.get("destination") or ""), str(config.get("server_name") or "")
        ),
        endpoint_url=endpoint,
        aws_conn_id=conn,
        postgres=postgres,
    )


def with_problem(info: BackupInfo, code: str, sentence: str) -> BackupInfo:
    return replace(info, problems=(*info.problems, (code, sentence)))
