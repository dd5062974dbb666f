"""Local sandbox backend: restore a coordinate into a private directory and run PostgreSQL on it.

The server listens on its own unix-socket directory (a TCP port only when asked), never archives,
never streams from anyone, and is promoted at the recovery target before it is handed over.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2

from drillkit import pgbin
from drillkit.catalog.tarformat import PLAIN, backup_format
from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE
from drillkit.catalog.walfiles import restore_command
from drillkit.exceptions import (
    InvalidInputError,
    RecoveryTargetNotReachedError,
    SandboxError,
    SandboxStartError,
)
from drillkit.sandbox.base import LABEL, SCHEMA, new_sandbox_id, valid_sandbox_id
from drillkit.sandbox.copy import copy_backup
from drillkit.sandbox.untar import extract_backup
from drillkit.state import read_json, sandbox_root, write_json_atomic
from drillkit.timeutil import isoformat, parse_target_time, utcnow

_LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
_SOCKET_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"
Say = Callable[[str], None]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def recovery_settings(coordinate: dict[str, Any]) -> dict[str, str]:
    """The recovery_target_* settings for a coordinate, validated so no text reaches the config."""
    target = coordinate.get("target") or {}
    mode = target.get("mode")
    settings: dict[str, str] = {"recovery_target_action": "promote"}
    timeline = target.get("timeline")
    if not isinstance(timeline, int) or timeline < 1:
        raise InvalidInputError(f"coordinate target.timeline {timeline!r} is not a timeline number")
    settings["recovery_target_timeline"] = str(timeline)
    if mode == "time":
        moment = parse_target_time(str(target.get("time")))
        settings["recovery_target_time"] = moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        settings["recovery_target_inclusive"] = "on"
    elif mode == "lsn":
        lsn = str(target.get("lsn"))
        if not _LSN_RE.match(lsn):
            raise InvalidInputError(f"coordinate target.lsn {lsn!r} is not an LSN like 0/3000028")
        settings["recovery_target_lsn"] = lsn
        settings["recovery_target_inclusive"] = "on"
    elif mode == "immediate":
        settings["recovery_target"] = "immediate"
    else:
        raise InvalidInputError(
            f"coordinate target.mode {mode!r} is not one of time, lsn, immediate: the coordinate "
            "must come from drillkit's PITR selection"
        )
    return settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalSandboxBackend:
    """Sandboxes under ``root`` (default: drillkit's sandbox root), one directory each."""

    kind = "local"

    def __init__(
        self,
        *,
        root: Path | None = None,
        port: int | str | None = None,
        start_timeout: float = 3600.0,
        shared_buffers: str = "128MB",
        superuser: str = "postgres",
        say: Say | None = None,
    ) -> None:
        self.root = Path(root) if root else sandbox_root()
        self.port = port
        self.start_timeout = start_timeout
        self.shared_buffers = shared_buffers
        self.superuser = superuser
        self.say = say or (lambda _msg: None)

    # -- paths -------------------------------------------------------------------------------
    def path(self, sandbox_id: str) -> Path:
        if not valid_sandbox_id(sandbox_id):
            raise InvalidInputError(f"{sandbox_id!r} is not a drillkit sandbox id")
        return self.root / sandbox_id

    def socket_dir(self, directory: Path, sandbox_id: str) -> Path:
        preferred = directory / "run"
        if len(str(preferred)) <= _SOCKET_MAX:
            return preferred
        # A deep sandbox root would overflow the socket path: use a short private directory.
        return Path(tempfile.gettempdir()) / f"dk-{sandbox_id}"

    # -- provision ---------------------------------------------------------------------------
    def plan(
        self, coordinate: dict[str, Any], *, drill_id: str, sandbox_id: str, ttl: timedelta
    ) -> dict[str, Any]:
        """The record a dry run reports: where the sandbox would live; nothing is created."""
        directory = self.path(sandbox_id)
        return {
            "schema": SCHEMA,
            "backend": self.kind,
            "id": sandbox_id,
            "drill_id": drill_id,
            "dry_run": True,
            "path": str(directory),
            "endpoints": {
                "postgres": {
                    "kind": "postgres",
                    "host": str(self.socket_dir(directory, sandbox_id)),
                    "port": 5432,
                    "user": self.superuser,
                    "database": "postgres",
                }
            },
            "backup_id": coordinate.get("backup_id"),
        }

    def provision(
        self,
        coordinate: dict[str, Any],
        *,
        drill_id: str,
        name: str,
        ttl: timedelta,
        sandbox_id: str | None = None,
    ) -> dict[str, Any]:
        settings = recovery_settings(coordinate)
        backup = Path(str(coordinate.get("backup_path")))
        archive = Path(str(coordinate.get("archive")))
        fmt = backup_format(backup)
        if fmt is None:
            raise InvalidInputError(
                f"backup {backup} is not a base backup directory (no backup_label, no base.tar)"
            )
        if not archive.is_dir():
            raise InvalidInputError(f"WAL archive {archive} does not exist")
        pgbin.require_reachable(archive, "WAL archive")
        sandbox_id = sandbox_id or new_sandbox_id(name)
        directory = self.path(sandbox_id)
        if directory.exists():
            raise SandboxError(
                f"sandbox {sandbox_id} already exists at {directory}; tear it down or use a new id",
                code="SANDBOX_EXISTS",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        pgbin.require_reachable(self.root, "sandbox root")
        created = utcnow()
        socket_dir = self.socket_dir(directory, sandbox_id)
        port = _free_port() if self.port == "auto" else int(self.port or 5432)
        label: dict[str, Any] = {
            "schema": SCHEMA,
            "backend": self.kind,
            "id": sandbox_id,
            "drill_id": drill_id,
            "name": name,
            "path": str(directory),
            "socket_dir": str(socket_dir),
            "created_at": isoformat(created),
            "ttl_seconds": ttl.total_seconds(),
            "expires_at": isoformat(created + ttl),
            "backup_id": coordinate.get("backup_id"),
            "target": coordinate.get("target"),
            "state": "provisioning",
        }
        os.mkdir(directory, 0o711)
        # Label first: a crash from here on leaves something `drillkit gc` recognises.
        write_json_atomic(directory / LABEL, label)
        started = time.monotonic()
        try:
            self._restore(directory, socket_dir, backup, fmt, archive, settings, port)
            achieved = self._wait_promoted(directory, socket_dir, port)
        except BaseException:
            # Nothing keeps running after a failure; the directory (and its server.log) stays
            # for investigation until its expiry, when `drillkit gc` removes it.
            stop_server(directory / "data")
            label["state"] = "failed"
            write_json_atomic(directory / LABEL, label)
            raise
        restore_seconds = time.monotonic() - started
        host = str(socket_dir) if self.port is None else "127.0.0.1"
        label.update(
            state="ready",
            endpoints={
                "postgres": {
                    "kind": "postgres",
                    "host": host,
                    "port": port,
                    "user": self.superuser,
                    "database": "postgres",
                }
            },
            restore_seconds=round(restore_seconds, 3),
            achieved_recovery_point=achieved or coordinate.get("recovery_point"),
            achieved_recovery_point_source="pg_last_xact_replay_timestamp"
            if achieved
            else "backup end (no transaction replayed)",
        )
        write_json_atomic(directory / LABEL, label)
        return {k: v for k, v in label.items() if k not in ("state", "socket_dir", "name")}

    def _restore(
        self,
        directory: Path,
        socket_dir: Path,
        backup: Path,
        fmt: str,
        archive: Path,
        settings: dict[str, str],
        port: int,
    ) -> None:
        user = pgbin.os_user()
        owner = (user.uid, user.gid) if user else None
        data = directory / "data"
        if fmt == PLAIN:
            self.say(f"copying backup {backup.name} into {data}")
            copy_backup(backup, data, owner=owner, progress=self._copy_progress)
        else:
            self.say(f"extracting backup {backup.name} ({fmt}) into {data}")
            extract_backup(backup, data, owner=owner, progress=self._extract_progress, say=self.say)
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if owner:
            os.chown(socket_dir, *owner)
            os.chown(directory, *owner)
        hba = directory / "pg_hba.conf"
        hba_lines = ["local all all trust"]
        if self.port is not None:
            hba_lines.append("host all all 127.0.0.1/32 trust")
        hba.write_text("\n".join(hba_lines) + "\n")
        if not (data / "postgresql.conf").exists():  # Debian-style servers keep it in /etc
            (data / "postgresql.conf").write_text("")
        restore = restore_command(archive, directory)  # reads .gz/.bz2/.xz/.zst/.lz4 too
        config = {
            "listen_addresses": "127.0.0.1" if self.port is not None else "",
            "port": str(port),
            "unix_socket_directories": str(socket_dir),
            "hba_file": str(hba),
            # Production's archiving must never run here: it would write into its archive.
            "archive_mode": "off",
            "archive_command": "",
            "archive_library": "",
            "restore_command": restore,
            # Never follow or stream from production.
            "primary_conninfo": "",
            "primary_slot_name": "",
            "hot_standby": "on",
            "shared_buffers": self.shared_buffers,
            "huge_pages": "off",
            "ssl": "off",
            "shared_preload_libraries": "",
            "logging_collector": "off",
            # A sandbox is disposable: skipping fsync makes replay faster and loses nothing.
            "fsync": "off",
            "max_wal_size": "4GB",
            # Tablespaces are restored as directories in pg_tblspc (never links to production's
            # paths); without this, recovery PANICs at consistency on such a directory.
            "allow_in_place_tablespaces": "on",
            **settings,
        }
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n# drillkit sandbox settings: appended last, so they win\n")
            for key, value in config.items():
                conf.write(f"{key} = {_quote(value)}\n")
        (data / "recovery.signal").write_text("")
        for path in (hba, data / "postgresql.auto.conf", data / "recovery.signal"):
            if owner:
                os.chown(path, *owner)
        self.say("starting PostgreSQL and replaying WAL")
        result = pgbin.run(
            "pg_ctl",
            [
                "-D",
                str(data),
                "-l",
                str(directory / "server.log"),
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "start",
            ],
            check=False,
            timeout=self.start_timeout + 30,
        )
        if result.returncode != 0:
            self._raise_start_failure(directory, result.stdout + result.stderr)

    def _copy_progress(self, done: int, total: int) -> None:
        if total:
            self.say(f"copied {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    def _extract_progress(self, done: int, total: int) -> None:
        if total:
            self.say(f"extracted {done / 2**20:.0f} of {total / 2**20:.0f} MiB of archives")

    def _log_tail(self, directory: Path, lines: int = 12) -> str:
        try:
            text = (directory / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _raise_start_failure(self, directory: Path, output: str) -> None:
        log = self._log_tail(directory)
        if "recovery ended before configured recovery target was reached" in log:
            raise RecoveryTargetNotReachedError(
                "recovery ended before the configured recovery target was reached: the archive "
                f"lacks WAL the target needs (server log: {log[-600:]})"
            )
        raise SandboxStartError(
            f"the restored server did not start; last lines of {directory / 'server.log'}:\n"
            f"{log or output.strip()}"
        )

    def connect(self, socket_dir: Path, port: int) -> Any:
        host = "127.0.0.1" if self.port is not None else str(socket_dir)
        return psycopg2.connect(
            host=host, port=port, user=self.superuser, dbname="postgres", connect_timeout=5
        )

    def _wait_promoted(self, directory: Path, socket_dir: Path, port: int) -> str | None:
        """Poll until recovery has ended and the server is promoted (pg_ctl -w returns earlier)."""
        deadline = time.monotonic() + self.start_timeout
        last_error = ""
        while time.monotonic() < deadline:
            if not (directory / "data" / "postmaster.pid").exists():
                self._raise_start_failure(directory, last_error)
            try:
                with self.connect(socket_dir, port) as conn, conn.cursor() as cur:
                    cur.execute("select pg_is_in_recovery(), pg_last_xact_replay_timestamp()")
                    in_recovery, replayed = cur.fetchone()
                conn.close()
                if not in_recovery:
                    return isoformat(replayed) if replayed else None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                # InterfaceError: the server shut down mid-query (recovery ended before its
                # target) and leaving the connection's block found it closed.
                last_error = str(exc)
                if "does not exist" in last_error and "role" in last_error:
                    raise SandboxError(
                        f"the restored cluster has no role {self.superuser!r}: set the sandbox's "
                        "superuser to the cluster's bootstrap superuser",
                        code="SANDBOX_ROLE_MISSING",
                    ) from exc
            time.sleep(0.05)
        raise SandboxStartError(
            f"the sandbox was not promoted within {self.start_timeout:.0f} s (still replaying WAL?)"
        )

    # -- teardown ----------------------------------------------------------------------------
    def teardown(self, sandbox_id: str) -> dict[str, Any]:
        directory = self.path(sandbox_id)
        label = read_json(directory / LABEL) or {}
        if not directory.exists():
            return {"id": sandbox_id, "removed": False, "already_gone": True}
        was_running = stop_server(directory / "data")
        socket_dir = label.get("socket_dir")
        shutil.rmtree(directory, ignore_errors=True)
        if socket_dir and not str(socket_dir).startswith(str(directory)):
            shutil.rmtree(socket_dir, ignore_errors=True)
        if directory.exists():
            raise SandboxError(f"could not delete sandbox directory {directory}")
        return {
            "id": sandbox_id,
            "removed": True,
            "was_running": was_running,
            "path": str(directory),
        }


def stop_server(data: Path) -> bool:
    """Stop the server of ``data`` immediately (a sandbox is disposable); True if it was running."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return False
    result = pgbin.run("pg_ctl", ["-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
    if result.returncode != 0 and pid_file.exists():
        try:
            pid = int(pid_file.read_text().split()[0])
            # A stale pid file (after a reboot) may name an unrelated process: kill only a
            # postgres whose command line names this data directory.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"postgres" in cmdline and str(data).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        except (ValueError, IndexError, OSError):
            pass
    return True


__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "LABEL",
    "LocalSandboxBackend",
    "recovery_settings",
    "stop_server",
]
