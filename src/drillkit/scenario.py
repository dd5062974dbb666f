"""Scenario builder: a small production with WAL archiving, base backups and recorded ground truth.

``drillkit scenario create DIR`` is how the demo, the tests and anyone trying drillkit get a real
backup repository, optionally damaged the ways real backups get damaged.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drillkit import pgbin
from drillkit.catalog.tarformat import member_name, tar_layout
from drillkit.catalog.wal import parse_segment_name
from drillkit.exceptions import InvalidInputError
from drillkit.sandbox.local import stop_server
from drillkit.scenario_production import (
    DATABASE,
    Say,
    archiving,
    check_plan,
    create_tables,
    make_scenario_dir,
    record_end,
    run_batches,
    start_production,
    write_truth,
)

# The production's SQL and WAL switch, under the names they had when they lived here.
from drillkit.scenario_production import sql as _sql  # noqa: F401
from drillkit.scenario_production import switch_wal as _switch
from drillkit.timeutil import utcnow

BACKUP_FORMATS = {"plain": ["-Fp", "-X", "none"], "tar": ["-Ft"], "tar.gz": ["-Ft", "-z"]}


@dataclass(frozen=True)
class ScenarioOptions:
    batches: int = 6
    rows_per_batch: int = 200
    backups_after: tuple[int, ...] = (0, 2, 4)  # take a base backup after these batches
    initial_mb: int = 8  # data loaded before the first backup (the backup's size)
    pause: float = 0.25  # seconds between batches, so targets fall cleanly between commits
    corrupt_newest: bool = False
    truncate_newest: bool = False
    remove_wal_after_batch: int | None = None  # remove the segment holding that batch's commit
    keep_production: bool = False
    drill_name: str = "demo"
    # plain: pg_basebackup -Fp; tar / tar.gz: -Ft (gzip with -z) with WAL streamed into pg_wal.tar
    backup_format: str = "plain"
    tablespace: bool = False  # a table in a user tablespace outside the data directory
    tool: str = "pg_basebackup"  # or pgbackrest (a stanza with full + incremental backups)
    backup_types: tuple[str, ...] = ()  # pgbackrest: full|diff|incr per backup (full, incr...)
    # Which PostgreSQL: a bin directory, or a major found like a drill finds it (default: the
    # embedded wheel's 18). Every tool of the scenario comes from that one installation.
    pg_bin_dir: str | None = None
    pg_major: int | None = None
    # The production server's extra environment (initdb and pg_ctl pass it on to the server),
    # e.g. libfaketime's; and a call after each batch commits, before its backup (a clock move).
    server_env: Mapping[str, str] | None = None
    after_batch: Callable[[int], None] | None = None


def drill_name_for(directory: Path) -> str:
    """The drill name of a scenario in ``directory``: its directory's name, as a drill name
    ([a-z0-9_-], up to 63 characters), so two scenarios never share a DAG id by default."""
    name = re.sub(r"[^a-z0-9_-]+", "-", directory.expanduser().absolute().name.lower())
    name = name.strip("-_")[:63].rstrip("-_")
    return name or "scenario"


def scenario_installation(options: ScenarioOptions) -> pgbin.Installation:
    """The installation a scenario is built with (``--pg-bin-dir`` or ``--pg-major``)."""
    from drillkit.exceptions import ToolMissingError
    from drillkit.pgmajors import probe_version

    if options.pg_bin_dir:
        bindir = Path(options.pg_bin_dir).expanduser().absolute()
        try:
            major, version = probe_version(bindir)
        except ToolMissingError as exc:
            raise InvalidInputError(
                f"--pg-bin-dir {bindir}: {exc}; give a PostgreSQL bin directory such as "
                "/usr/lib/postgresql/15/bin"
            ) from None
        if options.pg_major is not None and major != options.pg_major:
            raise InvalidInputError(
                f"--pg-bin-dir {bindir} is PostgreSQL {version}, not --pg-major {options.pg_major}"
            )
        pgbin.require_reachable(bindir / "postgres", "--pg-bin-dir")
        return pgbin.Installation(major=major, bindir=bindir, version=version, source="pg_bin_dir")
    if options.pg_major is not None:
        return pgbin.for_major(options.pg_major)
    return pgbin.embedded()


def create_scenario(
    directory: Path, options: ScenarioOptions, *, say: Say = print
) -> dict[str, Any]:
    """Build the scenario in ``directory`` (created; must be empty) and return its ground truth."""
    directory = check_plan(directory, options)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", options.drill_name):
        raise InvalidInputError(
            f"drill name {options.drill_name!r} is not a drill name: use [a-z0-9_-], starting "
            "with a letter or digit (the DAG id is drill_<name>)"
        )
    if options.tool == "pgbackrest":
        from drillkit.scenario_pgbackrest import create_pgbackrest_scenario

        return create_pgbackrest_scenario(directory, options, say=say)
    if options.tool != "pg_basebackup":
        raise InvalidInputError(f"--tool {options.tool!r} is not one of pg_basebackup, pgbackrest")
    if options.backup_format not in BACKUP_FORMATS:
        raise InvalidInputError(
            f"backup format {options.backup_format!r} is not one of {', '.join(BACKUP_FORMATS)}"
        )
    pg = scenario_installation(options)
    make_scenario_dir(directory)
    repo, prod, sock = directory / "repo", directory / "production", directory / "run"
    wal, tablespace = repo / "wal", directory / "production-tablespace"
    for path in (repo, repo / "base", wal, sock, *([tablespace] if options.tablespace else [])):
        path.mkdir(parents=True, exist_ok=True)
        pgbin.give_to_server_user(path)
    pgbin.give_to_server_user(directory)
    say(f"production: initdb {prod} (PostgreSQL {pg.version}, {pg.bindir})")
    server_env = dict(options.server_env) if options.server_env else None
    archive_command = f"test ! -f {wal}/%f && cp %p {wal}/%f"
    start_production(pg.run, prod, sock, settings=archiving(archive_command), env=server_env)
    truth: dict[str, Any] = {
        "database": DATABASE,
        "table": "orders",
        "id_column": "id",
        "postgres": pg.describe(),
    }

    def switch() -> str:
        return _switch(sock)

    def backup(batch: int, number: int) -> dict[str, Any]:
        backup_id = f"b{number + 1:02d}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
        say(f"production: pg_basebackup {backup_id} ({options.backup_format})")
        args = ["-h", str(sock), "-U", "postgres", "-D", str(repo / "base" / backup_id)]
        args += [*BACKUP_FORMATS[options.backup_format], "-c", "fast"]
        if options.tablespace and options.backup_format == "plain":
            # A plain backup writes tablespaces to their own paths: production's is taken.
            args += ["-T", f"{tablespace}={repo / 'tablespaces' / backup_id}"]
        pg.run("pg_basebackup", args)
        return {"backup_id": backup_id, "after_batch": batch}

    try:
        side = tablespace if options.tablespace else None
        create_tables(sock, truth, tablespace=side, initial_mb=options.initial_mb, say=say)
        run_batches(sock, options, truth, switch, backup, say, after_batch=options.after_batch)
        record_end(sock, truth, switch=switch)
    finally:
        stop_server(prod, pg)
    damage = apply_damage(repo, truth, options, say)
    production = [] if options.keep_production else [prod, tablespace]
    write_truth(directory, truth, damage, remove=[*production, sock])
    bin_dirs = {pg.major: str(pg.bindir)} if pg.source == "pg_bin_dir" else None
    write_drill_spec(directory, name=options.drill_name, postgres_bin_dirs=bin_dirs)
    say(
        f"scenario ready: {repo} ({len(truth['backups'])} backups, {len(truth['batches'])} batches)"
    )
    return truth


def apply_damage(
    repo: Path, truth: dict[str, Any], options: ScenarioOptions, say: Say
) -> list[str]:
    done: list[str] = []
    newest = repo / "base" / truth["backups"][-1]["backup_id"]
    layout = tar_layout(newest)
    where = f"{truth['relation']} in {layout.base.relative_to(repo)}" if layout else ""
    data_file = newest / truth["relation"]
    if options.corrupt_newest:
        # Flip bytes inside a page's tuple area (not its header): checksums catch it, a
        # max(id) served from the index would not.
        if layout:
            _rewrite_member(layout.base, truth["relation"], _flip_tuple_bytes)
        else:
            data_file.write_bytes(_flip_tuple_bytes(data_file.read_bytes()))
        done.append(f"corrupted 64 bytes of {where or data_file.relative_to(repo)}")
    if options.truncate_newest:
        if layout:
            size = _rewrite_member(layout.base, truth["relation"], lambda d: d[: len(d) // 2])
        else:
            size = data_file.stat().st_size
            os.truncate(data_file, size // 2)
        done.append(
            f"truncated {where or data_file.relative_to(repo)} from {size} to {size // 2} bytes"
        )
    if options.remove_wal_after_batch is not None:
        batch = truth["batches"][options.remove_wal_after_batch]
        segment = batch["segment_after"]
        (repo / "wal" / segment).unlink()
        done.append(f"removed WAL segment {segment} (holds batch {batch['batch']})")
        assert parse_segment_name(segment, 16 * 1024 * 1024) is not None
    for line in done:
        say(f"damage: {line}")
    return done


def _flip_tuple_bytes(data: bytes) -> bytes:
    at = 4096 + 512
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + 64]) + data[at + 64 :]


def _rewrite_member(archive: Path, name: str, change: Callable[[bytes], bytes]) -> int:
    """Rewrite a tar(.gz) archive with one member's bytes changed; return its former size."""
    staging = archive.with_name(archive.name + ".damage")
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    size = -1
    with (
        tarfile.open(archive) as source,
        tarfile.open(staging, mode, format=tarfile.USTAR_FORMAT) as out,
    ):
        for member in source:
            handle = source.extractfile(member) if member.isfile() else None
            data = handle.read() if handle else None
            if data is not None and member_name(member) == name:
                size, data = len(data), change(data)
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    if size < 0:
        staging.unlink()
        raise InvalidInputError(f"{archive} has no member {name} to damage")
    st = archive.stat()
    os.chown(staging, st.st_uid, st.st_gid)
    os.chmod(staging, st.st_mode)
    os.replace(staging, archive)
    return size


def write_drill_spec(
    directory: Path,
    *,
    name: str,
    postgres_bin_dirs: dict[int, str] | None = None,
    catalog: dict[str, Any] | None = None,
) -> Path:
    """A ready drill spec for the scenario: three tiers, SQL, PITR (both ways) and integrity;
    ``postgres_bin_dirs`` when the scenario's binaries are where discovery would not look."""
    spec: dict[str, Any] = {
        "drill": name,
        "description": f"Restore drill of the scenario in {directory}",
        "schedule": None,
        "catalog": catalog or {"kind": "local", "path": str(directory / "repo")},
        "target": "latest",
        "rpo": "0s",
        "rto": "10m",
        "sandbox_ttl": "2h",
        "tiers": [
            {"name": "primary", "select": "latest", "sandbox": {"kind": "local"}},
            {"name": "secondary", "select": "previous", "sandbox": {"kind": "local"}},
            {"name": "tertiary", "select": "oldest", "sandbox": {"kind": "local"}},
        ],
        "services": {"app-db": {"kind": "postgres", "database": DATABASE, "user": "postgres"}},
        "production": {
            "hosts": ["db.prod.internal", "*.prod.example.com"],
            "dsns": [f"postgresql://app@db.prod.internal:5432/{DATABASE}"],
        },
        "checks": [
            {
                "name": "orders-present",
                "kind": "sql",
                "target": "app-db",
                "query": "select count(*) from orders",
                "expect": {"gt": 0},
            },
            {
                "name": "recovery-point",
                "kind": "pitr",
                "target": "app-db",
                "truth": {"table": "orders", "id_column": "id"},
                "truth_file": str(directory / "truth.json"),
            },
            {"name": "full-read", "kind": "integrity", "target": "app-db"},
        ],
        "report": {"path": str(directory / "reports")},
    }
    if postgres_bin_dirs:
        spec["postgres_bin_dirs"] = postgres_bin_dirs
    path = directory / "drill.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
