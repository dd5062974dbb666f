"""``drillkit scenario create DIR --tool barman-cloud``: a production archiving WAL with
barman-cloud-wal-archive and backed up with barman-cloud-backup into an object store.

The ground truth (truth.json) and a drill spec land in DIR; the backups and WAL in the store.
The damage options are the ways such stores get damaged: a WAL object deleted, a data archive
corrupted, a backup interrupted (left with status STARTED).
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drillkit import pgbin
from drillkit.barman import tools
from drillkit.barman.store import Destination, ObjectStoreReader
from drillkit.exceptions import InvalidInputError
from drillkit.sandbox.local import stop_server
from drillkit.scenario import write_drill_spec
from drillkit.scenario_production import (
    DATABASE,
    Say,
    archiving,
    check_plan,
    make_scenario_dir,
    record_end,
    run_batches,
    sql,
    start_production,
    switch_wal,
    write_truth,
)


@dataclass(frozen=True)
class BarmanScenarioOptions:
    endpoint_url: str
    destination: str = "s3://drillkit-scenario/barman"
    server_name: str = "production"
    batches: int = 6
    rows_per_batch: int = 200
    backups_after: tuple[int, ...] = (0, 2, 4)
    initial_mb: int = 8
    pause: float = 0.25
    wal_compression: str = "gzip"  # gzip | none: barman-cloud-wal-archive -z or plain segments
    data_compression: str = "none"  # none | gzip: barman-cloud-backup's data.tar(.gz)
    corrupt_newest: bool = False  # flip bytes of the orders table inside the newest data archive
    remove_wal_after_batch: int | None = None  # delete the WAL object holding that batch
    interrupted_backup: bool = False  # a backup killed after it registered (status STARTED)
    drill_name: str = "demo"
    keep_production: bool = False
    # barman-cloud-wal-archive is one Python process per segment, and PostgreSQL waits 60 s
    # after three failed attempts: a busy machine needs more than the local scenario's minute.
    archive_wait: float = 300.0


def _writer_client(endpoint_url: str, credentials: Mapping[str, str]) -> Any:
    """The scenario is the producer: it may create the bucket and damage objects."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        region_name=credentials.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def environment_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in tools.AWS_ENV and v}


def _backup_ids(reader: ObjectStoreReader, dest: Destination) -> set[str]:
    ids = set()
    for obj in reader.list(dest.bucket, dest.key("base") + "/"):
        parts = obj.key[len(dest.key("base")) + 1 :].split("/")
        if len(parts) == 2 and parts[1] == "backup.info":
            ids.add(parts[0])
    return ids


def _backup_args(options: BarmanScenarioOptions, sock: Path, dest: Destination) -> list[str]:
    args = ["--endpoint-url", options.endpoint_url, "-h", str(sock), "-U", "postgres"]
    args.append("--immediate-checkpoint")  # a spread checkpoint waits minutes on a quiet server
    if options.data_compression == "gzip":
        args.append("--gzip")
    return [*args, dest.url, dest.server_name]


@dataclass(frozen=True)
class _Store:
    """Where barman-cloud-backup writes, read back, and the credentials it runs with."""

    dest: Destination
    reader: ObjectStoreReader
    creds: Mapping[str, str]

    def ids_before_backup(self) -> set[str]:
        """The backup ids in the store, then a pause: backup ids are timestamps to the second,
        never two in one second."""
        before = _backup_ids(self.reader, self.dest)
        time.sleep(1.05)
        return before


def _take_backup(store: _Store, args: list[str]) -> str:
    before = store.ids_before_backup()
    tools.run_tool("barman-cloud-backup", args, credentials=store.creds)
    new = sorted(_backup_ids(store.reader, store.dest) - before)
    if len(new) != 1:
        raise InvalidInputError(f"barman-cloud-backup left {len(new)} new backups, expected 1")
    return new[0]


def _interrupt_backup(store: _Store, args: list[str]) -> str:
    """Start a backup and kill it once its backup.info says STARTED (barman uploads that right
    after pg_backup_start: barman/cloud.py CloudBackup.coordinate_backup)."""
    dest, reader = store.dest, store.reader
    before = store.ids_before_backup()
    process = subprocess.Popen(
        [str(tools.tool("barman-cloud-backup")), *args],
        env=tools.tool_env(store.creds),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        **pgbin.server_user_ids(),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            new = _backup_ids(reader, dest) - before
            if new:
                process.send_signal(signal.SIGKILL)
                process.wait()
                backup_id = next(iter(new))
                info = reader.get(dest.bucket, dest.key("base", backup_id, "backup.info"))
                if b"status=STARTED" not in info:
                    raise InvalidInputError("the interrupted backup did not stay STARTED")
                return backup_id
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    raise InvalidInputError(
        "barman-cloud-backup finished before it could be interrupted; use a larger --initial-mb"
    )


def _archive_command(options: BarmanScenarioOptions, dest: Destination) -> str:
    args = [str(tools.tool("barman-cloud-wal-archive")), "--endpoint-url", options.endpoint_url]
    if options.wal_compression == "gzip":
        args.append("--gzip")
    return " ".join(shlex.quote(a) for a in [*args, dest.url, dest.server_name]) + " %p"


def create_barman_scenario(
    directory: Path, options: BarmanScenarioOptions, *, say: Say = print
) -> dict[str, Any]:
    """Build the store and ``directory`` (new or empty); return the ground truth."""
    directory = check_plan(directory, options)
    if options.wal_compression not in ("gzip", "none") or options.data_compression not in (
        "gzip",
        "none",
    ):
        raise InvalidInputError("compression must be gzip or none")
    dest = Destination.parse(options.destination, options.server_name)
    creds = environment_credentials()
    reader = ObjectStoreReader(endpoint_url=options.endpoint_url, credentials=creds)
    client = _writer_client(options.endpoint_url, creds)
    store = _Store(dest, reader, creds)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if dest.bucket not in existing:
        client.create_bucket(Bucket=dest.bucket)
    if any(True for _ in reader.list(dest.bucket, dest.key() + "/")):
        raise InvalidInputError(
            f"{dest.url}/{dest.server_name} already holds objects; give a new destination"
        )
    make_scenario_dir(directory)
    prod, sock = directory / "production", directory / "run"
    sock.mkdir()
    pgbin.give_to_server_user(sock)
    pgbin.give_to_server_user(directory)
    say(f"production: initdb {prod}")
    # The initial load runs before archiving starts (wal_level minimal: a table created and
    # filled in one transaction writes no WAL), as a production's history before its first
    # backup would be; then the server restarts archiving with barman-cloud-wal-archive.
    minimal = "wal_level = minimal\narchive_mode = off\nmax_wal_senders = 0\n"
    start_production(pgbin.run, prod, sock, settings=minimal)
    truth: dict[str, Any] = {
        "database": DATABASE,
        "table": "orders",
        "id_column": "id",
        "store": {"destination": dest.url, "server_name": dest.server_name},
    }

    def switch() -> str:
        return switch_wal(sock, timeout=options.archive_wait)

    def backup(batch: int, number: int) -> dict[str, Any]:
        # Frozen and all-visible before the backup: no later hint bit or vacuum rewrites
        # its pages, so replay never lays a full-page image over a corrupted one.
        sql(sock, "vacuum (freeze) orders")
        backup_id = _take_backup(store, _backup_args(options, sock, dest))
        say(f"production: barman-cloud-backup {backup_id}")
        return {"backup_id": backup_id, "after_batch": batch}

    try:
        sql(sock, f"create database {DATABASE}", db="postgres")
        sql(
            sock,
            "create table orders (id bigint primary key, batch int not null, "
            "payload text not null, created_at timestamptz not null default clock_timestamp());"
            "create table heartbeat (at timestamptz primary key default clock_timestamp());",
        )
        say(f"production: loading {options.initial_mb} MiB")
        # One statement, one transaction: the table is created and filled without WAL.
        sql(
            sock,
            "create table filler (id int, blob text);"
            "insert into filler select g, repeat(md5(g::text), 8) "
            f"from generate_series(1, {options.initial_mb * 3600}) g",
        )
        with (prod / "postgresql.conf").open("a") as conf:
            archive = _archive_command(options, dest).replace("'", "''")
            conf.write(archiving(archive))
            conf.write("max_wal_senders = 10\n")
        # archive_command inherits the postmaster's environment: the credentials go there only.
        pgbin.run(
            "pg_ctl",
            ["-D", str(prod), "-l", str(directory / "production.log"), "-w", "restart"],
            env=creds,
        )
        run_batches(sock, options, truth, switch, backup, say)
        if options.interrupted_backup:
            backup_id = _interrupt_backup(store, _backup_args(options, sock, dest))
            say(f"production: barman-cloud-backup {backup_id} killed after it started")
            truth["interrupted_backup"] = backup_id
        record_end(sock, truth, switch=switch)
    finally:
        stop_server(prod)
    damage = _apply_damage(client, reader, dest, truth, options, say)
    write_truth(
        directory, truth, damage, remove=[sock] if options.keep_production else [prod, sock]
    )
    catalog = {
        "kind": "barman_cloud",
        "destination": dest.url,
        "server_name": dest.server_name,
        "endpoint_url": options.endpoint_url,
    }
    write_drill_spec(directory, name=options.drill_name, catalog=catalog)
    say(f"scenario ready: {dest.url} ({len(truth['backups'])} backups)")
    return truth


def _apply_damage(
    client: Any,
    reader: ObjectStoreReader,
    dest: Destination,
    truth: dict[str, Any],
    options: BarmanScenarioOptions,
    say: Say,
) -> list[str]:
    done: list[str] = []
    if options.corrupt_newest:
        newest = truth["backups"][-1]["backup_id"]
        keys = [o.key for o in reader.list(dest.bucket, dest.key("base", newest) + "/")]
        data_key = next(k for k in keys if k.rsplit("/", 1)[-1].startswith("data.tar"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.tar"
            reader.download(dest.bucket, data_key, str(path))
            _flip_member(path, truth["relation"], gzip=data_key.endswith(".gz"))
            client.upload_file(str(path), dest.bucket, data_key)
        done.append(f"corrupted 64 bytes of {truth['relation']} in {data_key}")
    if options.remove_wal_after_batch is not None:
        batch = truth["batches"][options.remove_wal_after_batch]
        segment = batch["segment_after"]
        keys = [
            o.key
            for o in reader.list(dest.bucket, dest.key("wals", segment[:16]) + "/")
            if o.key.rsplit("/", 1)[-1].split(".")[0] == segment
        ]
        if len(keys) != 1:
            raise InvalidInputError(f"WAL segment {segment} is not in the store ({keys})")
        client.delete_object(Bucket=dest.bucket, Key=keys[0])
        done.append(f"deleted WAL object {keys[0]} (holds batch {batch['batch']})")
    for line in done:
        say(f"damage: {line}")
    return done


def _flip_member(archive: Path, name: str, *, gzip: bool) -> None:
    """Flip 64 bytes inside a page's tuple area of one member (checksums catch it)."""
    out = archive.with_name("rewritten.tar")
    found = False
    with tarfile.open(archive) as source, tarfile.open(out, "w:gz" if gzip else "w") as sink:
        for member in source:
            handle = source.extractfile(member) if member.isfile() else None
            data = handle.read() if handle else None
            if data is not None and member.name.lstrip("./") == name:
                at = 4096 + 512
                data = data[:at] + bytes(b ^ 0xFF for b in data[at : at + 64]) + data[at + 64 :]
                found = True
            sink.addfile(member, io.BytesIO(data) if data is not None else None)
    if not found:
        raise InvalidInputError(f"{archive.name} has no member {name} to damage")
    os.replace(out, archive)
