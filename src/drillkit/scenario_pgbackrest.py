"""``drillkit scenario create DIR --tool pgbackrest``: a production on its own major, archiving
with ``pgbackrest archive-push``, full and incremental backups in a posix repository, and truth.

The production here is the only writer of the repository (stanza-create, backup, archive-push);
drills only read it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from drillkit import pgbin
from drillkit.exceptions import InvalidInputError
from drillkit.scenario import (
    DATABASE,
    SCHEMA_SQL,
    ScenarioOptions,
    _flip_tuple_bytes,
    _sql,
    _suggested_targets,
    _wait_archived,
    write_drill_spec,
)
from drillkit.state import write_json_atomic
from drillkit.timeutil import isoformat

Say = Callable[[str], None]
STANZA = "demo"
_LABEL_RE = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


def _installation(options: ScenarioOptions) -> pgbin.Installation:
    from drillkit.scenario import scenario_installation

    if options.pg_bin_dir is None and options.pg_major is None:
        # pgBackRest 2.45 (Debian 12) supports PostgreSQL up to 15: not the embedded 18.
        options = replace(options, pg_major=15)
    return scenario_installation(options)


def _switch(sock: Path) -> str:
    """scenario._switch with a longer wait: archive-push compresses each segment, and after a
    large load its queue takes minutes to drain on a busy machine."""
    _sql(sock, "insert into heartbeat default values")
    segment = str(_sql(sock, "select pg_walfile_name(pg_switch_wal())")[0][0])
    _wait_archived(sock, segment, timeout=1800.0)
    return segment


def _config_text(directory: Path) -> str:
    return (
        "[global]\n"
        f"repo1-path={directory / 'repo'}\n"
        "repo1-retention-full=10\n"
        f"log-path={directory / 'pgbackrest'}\n"
        f"lock-path={directory / 'pgbackrest'}\n"
        "start-fast=y\n"
        "compress-type=gz\n"
        "compress-level=1\n"
        f"[{STANZA}]\n"
        f"pg1-path={directory / 'production'}\n"
        f"pg1-socket-path={directory / 'run'}\n"
        "pg1-user=postgres\n"
    )


def _pgbackrest(config: Path, *args: str) -> None:
    binary = shutil.which("pgbackrest", path="/usr/bin:/bin:/usr/local/bin")
    if binary is None:
        raise InvalidInputError("pgbackrest is not installed: apt-get install pgbackrest")
    result = subprocess.run(
        [binary, f"--config={config}", f"--stanza={STANZA}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp"},
        cwd="/",
        **_as_server_user(),  # type: ignore[arg-type]
    )
    if result.returncode != 0:
        raise InvalidInputError(
            f"pgbackrest {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
        )


def _as_server_user() -> dict[str, object]:
    user = pgbin.os_user()
    return {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}


def create_pgbackrest_scenario(
    directory: Path, options: ScenarioOptions, *, say: Say = print
) -> dict[str, Any]:
    pg = _installation(options)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    pgbin.require_reachable(directory, "scenario directory")
    repo, prod, sock = directory / "repo", directory / "production", directory / "run"
    tablespace = directory / "production-tablespace"
    extra = [tablespace] if options.tablespace else []
    for path in (directory, repo, sock, directory / "pgbackrest", *extra):
        path.mkdir(parents=True, exist_ok=True)
        pgbin.give_to_server_user(path)
    config = directory / "pgbackrest.conf"
    config.write_text(_config_text(directory))
    os.chmod(config, 0o644)
    say(f"production: initdb {prod} (PostgreSQL {pg.version}, {pg.bindir})")
    pg.run("initdb", ["-D", str(prod), "-U", "postgres", "--auth=trust", "--data-checksums"])
    with (prod / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = ''\nunix_socket_directories = '{sock}'\n"
            "wal_level = replica\narchive_mode = on\n"
            f"archive_command = 'pgbackrest --config={config} --stanza={STANZA} archive-push %p'\n"
            "track_commit_timestamp = on\nfsync = off\nlog_timezone = 'UTC'\ntimezone = 'UTC'\n"
        )
    pg.run("pg_ctl", ["-D", str(prod), "-l", str(directory / "production.log"), "-w", "start"])
    truth: dict[str, Any] = {
        "database": DATABASE,
        "table": "orders",
        "id_column": "id",
        "tool": "pgbackrest",
        "stanza": STANZA,
        "config": str(config),
        "postgres": pg.describe(),
    }
    types = list(options.backup_types) or ["full"] + ["incr"] * (len(options.backups_after) - 1)
    if len(types) != len(options.backups_after) or types[0] != "full":
        raise InvalidInputError(
            "--backup-types needs one type per --backups-after entry, the first one full"
        )
    try:
        _pgbackrest(config, "stanza-create")
        _sql(sock, f"create database {DATABASE}", db="postgres")
        _sql(sock, SCHEMA_SQL)
        if options.tablespace:
            # Created before the full backup: pgBackRest backs it up; a restore maps it.
            _sql(sock, f"create tablespace side location '{tablespace}'", db="postgres")
            _sql(
                sock,
                "create table ledger (id int primary key, note text) tablespace side;"
                "insert into ledger select g, md5(g::text) from generate_series(1, 500) g",
            )
            truth["tablespace"] = {"name": "side", "path": str(tablespace), "table": "ledger"}
        if options.initial_mb:
            say(f"production: loading {options.initial_mb} MiB")
            _sql(
                sock,
                "insert into filler select g, repeat(md5(g::text), 8) "
                f"from generate_series(1, {options.initial_mb * 3600}) g",
            )
        truth["batches"], truth["backups"] = [], []
        next_id = 1
        for batch in range(options.batches):
            first, last = next_id, next_id + options.rows_per_batch - 1
            _sql(
                sock,
                "insert into orders (id, batch, payload) select g, "
                f"{batch}, md5(g::text) from generate_series({first}, {last}) g",
            )
            committed = _sql(
                sock, f"select pg_xact_commit_timestamp(xmin) from orders where id = {last}"
            )[0][0]
            segment = _switch(sock)
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
            next_id = last + 1
            time.sleep(options.pause)
            if batch in options.backups_after:
                kind = types[len(truth["backups"])]
                say(f"production: pgbackrest backup --type={kind}")
                _pgbackrest(config, f"--type={kind}", "backup")
                _switch(sock)
                label = max(
                    p.name
                    for p in (repo / "backup" / STANZA).iterdir()
                    if _LABEL_RE.match(p.name) and not p.is_symlink()
                )
                truth["backups"].append({"backup_id": label, "after_batch": batch, "type": kind})
                time.sleep(max(options.pause, 1.0))  # labels have a one-second resolution
        _switch(sock)
        truth["end"] = isoformat(_sql(sock, "select max(at) from heartbeat")[0][0])
        truth["relation"] = _sql(sock, "select pg_relation_filepath('orders')")[0][0]
        truth["filler_relation"] = _sql(sock, "select pg_relation_filepath('filler')")[0][0]
    finally:
        pg.run("pg_ctl", ["-D", str(prod), "-m", "fast", "-w", "stop"], check=False)
    truth["damage"] = apply_pgbackrest_damage(directory, truth, options, say)
    truth["targets"] = _suggested_targets(truth)
    if not options.keep_production:
        shutil.rmtree(prod, ignore_errors=True)
        shutil.rmtree(tablespace, ignore_errors=True)
    shutil.rmtree(sock, ignore_errors=True)
    write_json_atomic(directory / "truth.json", truth)
    write_drill_spec(
        directory,
        name=options.drill_name,
        postgres_bin_dirs={pg.major: str(pg.bindir)} if pg.source == "pg_bin_dir" else None,
        catalog={"kind": "pgbackrest", "stanza": STANZA, "config": str(config)},
    )
    say(f"scenario ready: stanza {STANZA} in {repo} ({len(truth['backups'])} backups)")
    return truth


def backup_file(directory: Path, label: str, relation: str) -> Path:
    """A relation's file of backup ``label`` in the repository (compressed: ``.gz``)."""
    return directory / "repo" / "backup" / STANZA / label / "pg_data" / f"{relation}.gz"


def corrupt_file(path: Path) -> None:
    """Flip bytes in the middle of a repository file, keeping its size and owner."""
    data = path.read_bytes()
    path.write_bytes(_flip_tuple_bytes(data) if len(data) > 4700 else data[:-8] + b"\xff" * 8)


def wal_files(directory: Path, segment: str) -> list[Path]:
    archive = directory / "repo" / "archive" / STANZA
    return sorted(archive.glob(f"*/{segment[:16]}/{segment}-*"))


def apply_pgbackrest_damage(
    directory: Path, truth: dict[str, Any], options: ScenarioOptions, say: Say
) -> list[str]:
    done: list[str] = []
    if options.corrupt_newest:
        label = truth["backups"][-1]["backup_id"]
        path = backup_file(directory, label, truth["relation"])
        corrupt_file(path)
        done.append(f"corrupted {path.relative_to(directory)}")
    if options.truncate_newest:
        raise InvalidInputError(
            "--truncate-newest is for pg_basebackup scenarios; use --corrupt-newest"
        )
    if options.remove_wal_after_batch is not None:
        batch = truth["batches"][options.remove_wal_after_batch]
        for path in wal_files(directory, batch["segment_after"]):
            path.unlink()
            done.append(
                f"removed WAL segment {path.relative_to(directory)} (holds batch {batch['batch']})"
            )
    for line in done:
        say(f"damage: {line}")
    return done
