"""The production server every scenario builder runs, whatever backs it up.

``scenario`` (pg_basebackup into a local repository), ``scenario_pgbackrest`` (a pgBackRest
stanza) and ``barman.scenario`` (Barman Cloud on S3) share what happens on the production: its
start-up, the batches of orders with their commit timestamps and WAL switches, the end of the
history and the truth.json that records it all. Each builder keeps its own archive_command,
backup tool and damage.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import psycopg2

from drillkit import pgbin
from drillkit.exceptions import InvalidInputError
from drillkit.state import write_json_atomic
from drillkit.timeutil import isoformat, parse_iso

Say = Callable[[str], None]
# initdb and pg_ctl of the scenario's installation: pgbin.run or an Installation's run.
Run = Callable[..., subprocess.CompletedProcess[str]]
DATABASE = "app"

# The production tables of the local and pgBackRest scenarios (ground truth is kept on orders).
SCHEMA_SQL = (
    "create table orders (id bigint primary key, batch int not null, "
    "payload text not null, created_at timestamptz not null default clock_timestamp());"
    "create table heartbeat (at timestamptz primary key default clock_timestamp());"
    "create table filler (id int, blob text)"
)


class ProductionPlan(Protocol):
    """What every builder's options say about the production's history."""

    @property
    def batches(self) -> int: ...
    @property
    def rows_per_batch(self) -> int: ...
    @property
    def backups_after(self) -> tuple[int, ...]: ...
    @property
    def pause(self) -> float: ...


def check_plan(directory: Path, plan: ProductionPlan) -> Path:
    """``directory`` made absolute, once it is new or empty and ``plan`` is a history a scenario
    can be built from (at least 2 batches, and backups after batches that exist)."""
    directory = directory.expanduser().absolute()
    if directory.exists() and any(directory.iterdir()):
        raise InvalidInputError(f"{directory} is not empty; give a new or empty directory")
    if plan.batches < 2 or not plan.backups_after:
        raise InvalidInputError("a scenario needs at least 2 batches and 1 backup")
    if max(plan.backups_after) >= plan.batches:
        raise InvalidInputError("backups_after must name batches below the batch count")
    return directory


def make_scenario_dir(directory: Path) -> None:
    """Create the scenario directory, traversable by the PostgreSQL OS user."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    pgbin.require_reachable(directory, "scenario directory")


def archiving(archive_command: str) -> str:
    """postgresql.conf lines that archive each WAL segment with ``archive_command``."""
    return f"wal_level = replica\narchive_mode = on\narchive_command = '{archive_command}'\n"


def start_production(
    run: Run,
    prod: Path,
    sock: Path,
    *,
    settings: str,
    env: dict[str, str] | None = None,
) -> None:
    """initdb ``prod`` (checksums, trust), configure it (a socket in ``sock`` only, commit
    timestamps, UTC, and ``settings``: its WAL and archiving) and start it, logging to
    production.log beside it (in the scenario directory)."""
    log = prod.parent / "production.log"
    run("initdb", ["-D", str(prod), "-U", "postgres", "--auth=trust", "--data-checksums"], env=env)
    with (prod / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = ''\nunix_socket_directories = '{sock}'\n{settings}"
            "track_commit_timestamp = on\nfsync = off\nlog_timezone = 'UTC'\ntimezone = 'UTC'\n"
        )
    run("pg_ctl", ["-D", str(prod), "-l", str(log), "-w", "start"], env=env)


def sql(sock: Path, query: str, *, db: str = DATABASE) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(host=str(sock), user="postgres", dbname=db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def wait_archived(sock: Path, segment: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(
            sock, "select last_archived_wal, failed_count from pg_stat_archiver", db="postgres"
        )
        last = rows[0][0]
        if last and len(last) == 24 and last[8:] >= segment[8:]:
            return
        time.sleep(0.05)
    raise InvalidInputError(f"WAL segment {segment} was not archived within {timeout:.0f} s")


def switch_wal(sock: Path, *, timeout: float = 60.0) -> str:
    """Close the current segment and wait for it in the archive (as archive_timeout would)."""
    # pg_switch_wal() is a no-op on a segment with nothing written since the last switch and
    # then names the open segment, which is never archived: write something first.
    sql(sock, "insert into heartbeat default values")
    rows = sql(sock, "select pg_walfile_name(pg_switch_wal())")
    segment = rows[0][0]
    wait_archived(sock, segment, timeout)
    return str(segment)


def create_tables(
    sock: Path,
    truth: dict[str, Any],
    *,
    tablespace: Path | None,
    initial_mb: int,
    say: Say,
) -> None:
    """The app database with SCHEMA_SQL, a ledger table in a tablespace at ``tablespace`` (in
    the truth) when given, and ``initial_mb`` MiB in filler."""
    sql(sock, f"create database {DATABASE}", db="postgres")
    sql(sock, SCHEMA_SQL)
    if tablespace is not None:
        sql(sock, f"create tablespace side location '{tablespace}'", db="postgres")
        sql(
            sock,
            "create table ledger (id int primary key, note text) tablespace side;"
            "insert into ledger select g, md5(g::text) from generate_series(1, 500) g",
        )
        truth["tablespace"] = {"name": "side", "path": str(tablespace), "table": "ledger"}
    if initial_mb:
        say(f"production: loading {initial_mb} MiB")
        # ~290 bytes a row on disk; 256-character text stays inline and uncompressed.
        sql(
            sock,
            "insert into filler select g, repeat(md5(g::text), 8) "
            f"from generate_series(1, {initial_mb * 3600}) g",
        )


def run_batches(
    sock: Path,
    plan: ProductionPlan,
    truth: dict[str, Any],
    switch: Callable[[], str],
    backup: Callable[[int, int], dict[str, Any]],
    say: Say,
    *,
    after_batch: Callable[[int], None] | None = None,
    backup_pause: float | None = None,
) -> None:
    """Commit ``plan.batches`` batches of orders into truth["batches"] (ids, commit time, the
    segment closed after it) and, after the batches in ``plan.backups_after``, a backup.

    ``switch()`` closes the current WAL segment and waits for it in the archive, returning its
    name; ``backup(batch, number)`` takes backup ``number`` (0-based) and returns its truth entry
    (appended to truth["backups"] after a switch); ``after_batch(batch)`` runs once a batch is
    committed. The builder pauses ``plan.pause`` seconds after a batch and ``backup_pause`` (by
    default the same) after a backup, so targets fall cleanly between commits.
    """
    truth["batches"], truth["backups"] = [], []
    next_id = 1
    for batch in range(plan.batches):
        first, last = next_id, next_id + plan.rows_per_batch - 1
        sql(
            sock,
            "insert into orders (id, batch, payload) select g, "
            f"{batch}, md5(g::text) from generate_series({first}, {last}) g",
        )
        committed = sql(
            sock, f"select pg_xact_commit_timestamp(xmin) from orders where id = {last}"
        )[0][0]
        segment = switch()
        truth["batches"].append(
            {
                "batch": batch,
                "first_id": first,
                "last_id": last,
                "committed_at": isoformat(committed),
                "segment_after": segment,
            }
        )
        say(f"production: batch {batch} ids {first}-{last} committed at {isoformat(committed)}")
        if after_batch is not None:
            after_batch(batch)
        next_id = last + 1
        time.sleep(plan.pause)
        if batch in plan.backups_after:
            entry = backup(batch, len(truth["backups"]))
            switch()
            truth["backups"].append(entry)
            time.sleep(plan.pause if backup_pause is None else backup_pause)


def record_end(sock: Path, truth: dict[str, Any], *, switch: Callable[[], str]) -> None:
    """The end of the history (a heartbeat committed and archived after the last batch, so a
    target after the batches is reachable) and the orders table's file."""
    switch()
    truth["end"] = isoformat(sql(sock, "select max(at) from heartbeat")[0][0])
    truth["relation"] = sql(sock, "select pg_relation_filepath('orders')")[0][0]


def suggested_targets(truth: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A target midway between each two batch commits, with the rows that must be there."""
    batches = truth["batches"]
    targets = []
    for before, after in itertools.pairwise(batches):
        t0, t1 = parse_iso(before["committed_at"]), parse_iso(after["committed_at"])
        assert t0 is not None and t1 is not None
        targets.append(
            {
                "target": isoformat(t0 + (t1 - t0) / 2),
                "max_id": before["last_id"],
                "absent_id": after["first_id"],
                "batch": before["batch"],
            }
        )
    return targets


def write_truth(
    directory: Path, truth: dict[str, Any], damage: list[str], *, remove: Iterable[Path]
) -> None:
    """Record ``damage`` and the suggested targets in the truth, remove what of the stopped
    production is not kept (``remove``: its socket directory, data directory...) and write
    ``directory``/truth.json."""
    truth["damage"] = damage
    truth["targets"] = suggested_targets(truth)
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    write_json_atomic(directory / "truth.json", truth)
