"""Helpers for restore tests: select a coordinate, query a sandbox, prove what a restore touched."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg2

from drillkit.catalog import LocalCatalog
from drillkit.pitr import select_coordinate
from drillkit.sandbox.local import LocalSandboxBackend
from drillkit.timeutil import parse_iso, parse_target_time


def query(endpoint: dict, sql: str):
    conn = psycopg2.connect(
        host=endpoint["host"], port=endpoint["port"], user=endpoint["user"], dbname="app"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            st = path.stat()
            digest.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}:".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def select(repo: Path, target: str | None, **kwargs):
    snapshot = LocalCatalog(repo).snapshot()
    return select_coordinate(
        snapshot, target=parse_target_time(target) if target else None, **kwargs
    )


def assert_tablespace_inside(record: dict, truth: dict) -> None:
    """The scenario's tablespace was restored inside the sandbox and nothing links outward."""
    endpoint = record["endpoints"]["postgres"]
    tablespace = truth["tablespace"]
    ((location,),) = query(
        endpoint,
        f"select pg_tablespace_location(oid) from pg_tablespace where spcname = "
        f"'{tablespace['name']}'",
    )
    assert location.startswith("pg_tblspc/"), location  # a directory in the data directory
    assert query(endpoint, f"select count(*) from {tablespace['table']}") == [(500,)]
    sandbox = Path(record["path"])
    assert (sandbox / "data" / location).is_dir()
    for dirpath, dirnames, filenames in os.walk(sandbox):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            assert not path.is_symlink(), f"{path} links to {os.readlink(path)}"
    assert not (sandbox / "data" / "tablespace_map").exists()
    assert not Path(tablespace["path"]).exists()  # production's path (removed) was not recreated


def assert_every_target_restores_exactly(
    repo: Path,
    truth: dict,
    *,
    name: str,
    also: Callable[[dict, dict], None] = lambda _coordinate, _record: None,
) -> None:
    """Restore to each ground-truth target in turn: exactly the rows committed before it, none
    after it, a measured restore, and not one byte of the repository changed. ``also`` adds a
    check of the coordinate and the sandbox record while the sandbox runs."""
    before = tree_digest(repo)
    backend = LocalSandboxBackend()
    for expected in truth["targets"]:
        coordinate = select(repo, expected["target"])
        record = backend.provision(coordinate, drill_id="t", name=name, ttl=timedelta(hours=1))
        try:
            endpoint = record["endpoints"]["postgres"]
            ((max_id, count),) = query(endpoint, "select max(id), count(*) from orders")
            assert max_id == expected["max_id"]
            assert count == expected["max_id"]
            assert query(endpoint, f"select 1 from orders where id = {expected['absent_id']}") == []
            achieved = parse_iso(record["achieved_recovery_point"])
            assert achieved <= parse_target_time(expected["target"])
            assert record["restore_seconds"] > 0
            also(coordinate, record)
        finally:
            assert backend.teardown(record["id"])["removed"] is True
    assert tree_digest(repo) == before, "a drill wrote into the repository it drilled"


def assert_restores_with_tablespace(coordinate: dict, truth: dict, *, name: str) -> None:
    """Restore ``coordinate`` (the scenario's only target): its rows, and its tablespace inside
    the sandbox."""
    (expected,) = truth["targets"][-1:]
    backend = LocalSandboxBackend()
    record = backend.provision(coordinate, drill_id="t", name=name, ttl=timedelta(hours=1))
    try:
        endpoint = record["endpoints"]["postgres"]
        assert query(endpoint, "select max(id) from orders") == [(expected["max_id"],)]
        assert_tablespace_inside(record, truth)
    finally:
        backend.teardown(record["id"])
