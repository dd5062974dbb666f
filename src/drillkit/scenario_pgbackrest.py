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
from dataclasses import replace
from pathlib import Path
from typing import Any

from drillkit import pgbin
from drillkit.exceptions import InvalidInputError
from drillkit.scenario import ScenarioOptions, _flip_tuple_bytes, write_drill_spec
from drillkit.scenario_production import (
    DATABASE,
    Say,
    archiving,
    create_tables,
    make_scenario_dir,
    record_end,
    run_batches,
    sql,
    start_production,
    switch_wal,
    write_truth,
)

STANZA = "demo"
_LABEL_RE = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


def _installation(options: ScenarioOptions) -> pgbin.Installation:
    from drillkit.scenario import scenario_installation

    if options.pg_bin_dir is None and options.pg_major is None:
        # pgBackRest 2.45 (Debian 12) supports PostgreSQL up to 15: not the embedded 18.
        options = replace(options, pg_major=15)
    return scenario_installation(options)


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
        **pgbin.server_user_ids(),  # type: ignore[arg-type]
    )
    if result.returncode != 0:
        raise InvalidInputError(
            f"pgbackrest {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
        )


def create_pgbackrest_scenario(
    directory: Path, options: ScenarioOptions, *, say: Say = print
) -> dict[str, Any]:
    pg = _installation(options)
    make_scenario_dir(directory)
    repo, prod, sock = directory / "repo", directory / "production", directory / "run"
    tablespace = directory / "production-tablespace"
    extra = [tablespace] if options.tablespace else []
    for path in (directory, repo, sock, directory / "pgbackrest", *extra):
        path.mkdir(parents=True, exist_ok=True)
        pgbin.give_to_server_user(path)
    config = directory / "pgbackrest.conf"
    config.write_text(_config_text(directory))
    os.chmod(config, 0o644)
    # Checked before production starts: a bad option never leaves a server running.
    types = list(options.backup_types) or ["full"] + ["incr"] * (len(options.backups_after) - 1)
    if len(types) != len(options.backups_after) or types[0] != "full":
        raise InvalidInputError(
            "--backup-types needs one type per --backups-after entry, the first one full"
        )
    say(f"production: initdb {prod} (PostgreSQL {pg.version}, {pg.bindir})")
    archive_command = f"pgbackrest --config={config} --stanza={STANZA} archive-push %p"
    start_production(pg.run, prod, sock, settings=archiving(archive_command))
    truth: dict[str, Any] = {
        "database": DATABASE,
        "table": "orders",
        "id_column": "id",
        "tool": "pgbackrest",
        "stanza": STANZA,
        "config": str(config),
        "postgres": pg.describe(),
    }

    def switch() -> str:
        # A longer wait than the local scenario's: archive-push compresses each segment, and
        # after a large load its queue takes minutes to drain on a busy machine.
        return switch_wal(sock, timeout=1800.0)

    def backup(batch: int, number: int) -> dict[str, Any]:
        kind = types[number]
        say(f"production: pgbackrest backup --type={kind}")
        _pgbackrest(config, f"--type={kind}", "backup")
        label = max(
            p.name
            for p in (repo / "backup" / STANZA).iterdir()
            if _LABEL_RE.match(p.name) and not p.is_symlink()
        )
        return {"backup_id": label, "after_batch": batch, "type": kind}

    try:
        _pgbackrest(config, "stanza-create")
        # Created before the full backup: pgBackRest backs the tablespace up; a restore maps it.
        side = tablespace if options.tablespace else None
        create_tables(sock, truth, tablespace=side, initial_mb=options.initial_mb, say=say)
        # Labels have a one-second resolution: a second at least between backups.
        run_batches(sock, options, truth, switch, backup, say, backup_pause=max(options.pause, 1.0))
        record_end(sock, truth, switch=switch)
        truth["filler_relation"] = sql(sock, "select pg_relation_filepath('filler')")[0][0]
    finally:
        pg.run("pg_ctl", ["-D", str(prod), "-m", "fast", "-w", "stop"], check=False)
    damage = apply_pgbackrest_damage(directory, truth, options, say)
    kept = options.keep_production
    write_truth(directory, truth, damage, remove=[sock] if kept else [prod, tablespace, sock])
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
