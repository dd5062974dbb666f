"""Helpers for isolation tests: a real production server with an archive, and a publisher.

``Server`` is a real embedded PostgreSQL 18 run as the server OS user; ``Production`` archives
its WAL into ``repo/wal`` and takes plain base backups into ``repo/base`` (what LocalCatalog reads).
"""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path
from typing import Any

import psycopg2

from drillkit import pgbin
from drillkit.sandbox.local import stop_server
from drillkit.timeutil import utcnow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, root: Path, name: str, *, conf: str = "", port: int | None = None) -> None:
        self.root, self.data, self.sock = root, root / name, root / f"{name}-run"
        self.port = port or 5432
        for path in (self.sock, self.data):
            path.mkdir(parents=True, exist_ok=True)
            pgbin.give_to_server_user(path)
        pgbin.run("initdb", ["-D", str(self.data), "-U", "postgres", "--auth=trust"])
        listen = "127.0.0.1" if port else ""
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.write(
                f"listen_addresses = '{listen}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sock}'\nfsync = off\ntimezone = 'UTC'\n{conf}"
            )
        self.start()

    def start(self) -> None:
        log = self.sock / "server.log"
        pgbin.run("pg_ctl", ["-D", str(self.data), "-l", str(log), "-w", "start"])

    def stop(self) -> None:
        pgbin.run("pg_ctl", ["-D", str(self.data), "-m", "fast", "-w", "stop"], check=False)
        stop_server(self.data)

    def sql(self, query: str, db: str = "postgres") -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(host=str(self.sock), port=self.port, user="postgres", dbname=db)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


class Production(Server):
    """A production server archiving into ``repo/wal``; ``repo`` may be any (odd) name."""

    def __init__(self, root: Path, *, repo_name: str = "repo", conf: str = "") -> None:
        self.repo = root / repo_name
        self.wal = self.repo / "wal"
        for path in (self.repo, self.repo / "base", self.wal):
            path.mkdir(parents=True, exist_ok=True)
            pgbin.give_to_server_user(path)
        wal = shlex.quote(str(self.wal)).replace("%", "%%").replace("'", "''")
        archive = f"archive_command = 'test ! -f {wal}/%f && cp %p {wal}/%f'\n"
        super().__init__(
            root, "production", conf="wal_level = logical\narchive_mode = on\n" + archive
        )
        self.sql("create table heartbeat (at timestamptz primary key default clock_timestamp())")

    def switch(self) -> None:
        self.sql("insert into heartbeat default values")
        segment = self.sql("select pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            last = self.sql("select last_archived_wal from pg_stat_archiver")[0][0]
            if last and len(last) == 24 and last[8:] >= segment[8:]:
                return
            time.sleep(0.05)
        raise AssertionError(f"segment {segment} was not archived")

    def basebackup(self, *, standby: bool = False) -> str:
        """A plain backup; ``standby``: with -R (standby.signal, primary_conninfo in auto.conf)."""
        backup_id = f"b01-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
        target = self.repo / "base" / backup_id
        pgbin.run(
            "pg_basebackup",
            [
                *("-h", str(self.sock), "-p", str(self.port), "-U", "postgres", "-D", str(target)),
                *("-Fp", "-X", "none", "-c", "fast"),
                *(["-R"] if standby else []),
            ],
        )
        self.switch()
        return backup_id
