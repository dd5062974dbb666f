"""Local sandbox backend: restore a coordinate into a private directory and run PostgreSQL on it.

The server listens on its own unix-socket directory (a TCP port only when asked), never archives,
never streams from anyone, and is promoted at the recovery target before it is handed over.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2

from drillkit import pgbin
from drillkit.catalog.protocol import BackupRepository, Materialised
from drillkit.catalog.registry import open_repository
from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE
from drillkit.exceptions import (
    DrillError,
    InvalidInputError,
    RecoveryTargetNotReachedError,
    SandboxError,
    SandboxStartError,
)
from drillkit.outputs import catalog_paths, refuse_inside
from drillkit.sandbox import config as sandbox_config
from drillkit.sandbox import netns, relay
from drillkit.sandbox.base import LABEL, SCHEMA, new_sandbox_id, valid_sandbox_id
from drillkit.sandbox.owner import current_owner
from drillkit.sandbox.seal import databases, seal_for_checks
from drillkit.sandbox.space import NoSpaceError, is_no_space, require_space, restore_sizes
from drillkit.state import read_json, sandbox_root, write_json_atomic
from drillkit.timeutil import isoformat, parse_target_time, utcnow

_LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
_SOCKET_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"
Say = Callable[[str], None]


def _major(data: Path) -> int:
    try:
        return int((data / "PG_VERSION").read_text().strip().split(".")[0])
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"{data} has no readable PG_VERSION: the backup is not a PostgreSQL data directory"
        ) from exc


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


def _isolation(namespace: netns.Namespace, *, tcp: bool) -> dict[str, Any]:
    """Which isolation layers are in effect, for the record and every report."""
    layers = [
        "allow-listed server configuration",
        "replication detached (subscriptions disabled, slots dropped)",
        "checks as a non-superuser role, one statement each",
    ]
    warnings = []
    if namespace.prefix:
        layers.insert(0, f"no network: {namespace.detail}")
    else:
        warnings.append(
            {
                "code": "SANDBOX_NETWORK_OPEN",
                "message": "the sandbox server shares the host's network "
                f"({namespace.detail}): what its data names could be reached; drillkit relies "
                "on the allow-listed configuration and the non-superuser check roles. Run "
                "drillkit as root, or where unprivileged user namespaces are allowed",
            }
        )
    if tcp:
        layers.append("TCP port asks for a scram password")
    return {
        "network": "namespace" if namespace.prefix else "open",
        "network_detail": namespace.detail,
        "tcp": {"auth": "scram-sha-256", "relayed": bool(namespace.prefix)} if tcp else None,
        "layers": layers,
        "warnings": warnings,
    }


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
        postgres: pgbin.PgSettings | None = None,
    ) -> None:
        self.root = Path(root) if root else sandbox_root()
        self.port = port
        self.start_timeout = start_timeout
        self.shared_buffers = shared_buffers
        self.superuser = superuser
        self.say = say or (lambda _msg: None)
        self.postgres = postgres

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
        repository = open_repository(
            coordinate.get("catalog") or {"kind": "local"}, postgres=self.postgres
        )
        repository.check_restorable(coordinate)
        # The backup's own major on this worker (may differ from the one that selected it).
        installation = pgbin.for_major(
            backup_major(coordinate, Path(str(coordinate.get("backup_path")))), self.postgres
        )
        drilled = [
            *catalog_paths(coordinate.get("catalog")),
            *(Path(str(coordinate[k])) for k in ("archive", "backup_path") if coordinate.get(k)),
        ]
        refuse_inside(
            self.root, setting="DRILLKIT_SANDBOX_ROOT (the sandbox root)", catalogs=drilled
        )
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
            "postgres": installation.describe(),
            "state": "provisioning",
            # Until handed over (state ready), the sandbox belongs to this process: if it dies,
            # `drillkit gc` collects the sandbox at once (see sandbox/owner.py).
            "owner": current_owner(),
        }
        os.mkdir(directory, 0o711)
        # Label first: a crash from here on leaves something `drillkit gc` recognises.
        write_json_atomic(directory / LABEL, label)
        started = time.monotonic()
        try:
            namespace = self._namespace()
            backup_bytes, wal_bytes = restore_sizes(coordinate)
            needed = require_space(
                directory,
                backup_bytes=backup_bytes,
                wal_bytes=wal_bytes,
                what=f"backup {coordinate.get('backup_id')}",
            )
            try:
                materialised, configuration = self._restore(
                    directory,
                    socket_dir,
                    repository,
                    coordinate,
                    settings,
                    port,
                    installation,
                    namespace,
                )
                achieved = self._wait_promoted(directory, socket_dir, port)
            except NoSpaceError as exc:  # found mid-restore: give it the numbers planned
                if exc.needed is not None:
                    raise
                message = str(exc).split(": needed")[0]
                raise NoSpaceError(message, path=directory, needed=needed) from exc
            # Before anything else connects: nothing replicates, checks get their own roles.
            isolation = self._seal(
                directory, socket_dir, port, data_major=_major(directory / "data")
            )
            if self.port is not None and namespace.prefix:
                label["relay"] = self._relay(directory, port)
                write_json_atomic(directory / LABEL, label)
            isolation["isolation"] = _isolation(namespace, tcp=self.port is not None)
        except BaseException:
            # Nothing keeps running after a failure; the directory (and its server.log) stays
            # for investigation until its expiry, when `drillkit gc` removes it.
            relay.stop(label.get("relay"))
            stop_server(directory / "data", installation)
            label["state"] = "failed"
            with contextlib.suppress(OSError):  # a full disk must not hide why it failed
                write_json_atomic(directory / LABEL, label)
            raise
        restore_seconds = time.monotonic() - started
        host = str(socket_dir) if self.port is None else "127.0.0.1"
        label.pop("owner", None)  # handed over to the drill run: its TTL rules from now on
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
            configuration=configuration,
            **isolation,
            achieved_recovery_point=achieved or coordinate.get("recovery_point"),
            # What the restore itself found (e.g. no manifest to verify against): for the gate.
            findings=[dict(f) for f in materialised.findings],
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
        repository: BackupRepository,
        coordinate: dict[str, Any],
        settings: dict[str, str],
        port: int,
        installation: pgbin.Installation,
        namespace: netns.Namespace,
    ) -> tuple[Materialised, dict[str, Any]]:
        """Materialise, configure and start the server; return what the catalog left and what
        the record says about the configuration."""
        user = pgbin.os_user()
        owner = (user.uid, user.gid) if user else None
        data = directory / "data"
        materialised = repository.materialise(
            coordinate, data, workdir=directory, owner=owner, say=self.say
        )
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if owner:
            os.chown(socket_dir, *owner)
            os.chown(directory, *owner)
        hba = directory / "pg_hba.conf"
        hba_lines = ["local all all trust"]  # the socket directory is 0700: drillkit only
        if self.port is not None:
            hba_lines.append("host all all 127.0.0.1/32 scram-sha-256")
        hba.write_text("\n".join(hba_lines) + "\n")
        ident = directory / "pg_ident.conf"
        ident.write_text("")
        backup_settings, seen = sandbox_config.read_backup_settings(data)
        control = sandbox_config.control_settings(
            installation.run("pg_controldata", [str(data)], check=False).stdout
        )
        config, kept = sandbox_config.sandbox_config(
            major=_major(data),
            backup_settings=backup_settings,
            control=control,
            socket_dir=socket_dir,
            hba=hba,
            ident=ident,
            port=port,
            tcp=self.port is not None,
            shared_buffers=self.shared_buffers,
            recovery=settings,
            restore=materialised.restore_command,
        )
        sandbox_config.write_config(data, config)
        (data / "recovery.signal").write_text("")
        for path in (
            hba,
            ident,
            data / "postgresql.conf",
            data / "postgresql.auto.conf",
            data / "recovery.signal",
        ):
            if owner:
                os.chown(path, *owner)
        self.say(f"starting PostgreSQL {installation.version} and replaying WAL")
        args = ["-D", str(data), "-l", str(directory / "server.log"), "-w"]
        args += ["-t", str(int(self.start_timeout)), "start"]
        # The catalog's environment (repository credentials) reaches restore_command through
        # the server's process, never its configuration.
        env = dict(materialised.environment)
        timeout = self.start_timeout + 30
        if namespace.prefix:
            result = netns.run_in(namespace, installation, "pg_ctl", args, timeout=timeout, env=env)
        else:
            result = installation.run("pg_ctl", args, check=False, timeout=timeout, env=env)
        if result.returncode != 0:
            self._raise_start_failure(directory, result.stdout + result.stderr)
        return materialised, sandbox_config.describe(kept, control, seen)

    def _namespace(self) -> netns.Namespace:
        found = netns.available()
        if self.port is not None and found.prefix and not found.tcp:
            return netns.Namespace(
                None, f"{found.detail}, but sandbox.port needs a TCP relay into it", tcp=False
            )
        return found

    def _relay(self, directory: Path, port: int) -> dict[str, Any]:
        """Relay 127.0.0.1:port (host) to the server's loopback in its namespace."""
        postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        user = pgbin.os_user()
        uid, gid = (user.uid, user.gid) if user else (os.getuid(), os.getgid())
        return relay.start(
            port=port, postmaster=postmaster, uid=uid, gid=gid, log=directory / "relay.log"
        )

    def _log_tail(self, directory: Path, lines: int = 12) -> str:
        try:
            text = (directory / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _raise_start_failure(self, directory: Path, output: str) -> None:
        log = self._log_tail(directory)
        full = self._log_tail(directory, lines=1_000_000)
        if is_no_space(full) or is_no_space(output):  # the drill host's disk, not the backup
            said = next(line for line in (full + "\n" + output).splitlines() if is_no_space(line))
            raise NoSpaceError(
                f"the sandbox's file system filled up while the server restored WAL ({said})",
                path=directory,
            )
        if "recovery ended before configured recovery target was reached" in log:
            raise RecoveryTargetNotReachedError(
                "recovery ended before the configured recovery target was reached: the archive "
                f"lacks WAL the target needs (server log: {log[-600:]})"
            )
        raise SandboxStartError(
            f"the restored server did not start; last lines of {directory / 'server.log'}:\n"
            f"{log or output.strip()}"
        )

    def connect(self, socket_dir: Path, port: int, dbname: str = "postgres") -> Any:
        """A superuser connection through the sandbox's unix socket (TCP needs a password)."""
        return psycopg2.connect(
            host=str(socket_dir),
            port=port,
            user=self.superuser,
            dbname=dbname,
            connect_timeout=5,
            # Production's event triggers (ENABLE ORIGIN ones) stay silent for drillkit's DDL.
            options="-c session_replication_role=replica",
        )

    def _seal(
        self, directory: Path, socket_dir: Path, port: int, *, data_major: int
    ) -> dict[str, Any]:
        """Detach replication and create the check roles; return the record's isolation fields."""

        def admin(dbname: str) -> Any:
            conn = self.connect(socket_dir, port, dbname)
            conn.autocommit = True
            return conn

        first = admin("postgres")
        try:
            names = databases(first)
        finally:
            first.close()
        return seal_for_checks(admin, names, directory, major=data_major)

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
        relay.stop(label.get("relay"))
        was_running = stop_server(directory / "data", _recorded_installation(label))
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


def backup_major(coordinate: dict[str, Any], backup: Path) -> int:
    """The major of the coordinate's backup: as selection saw it, else its PG_VERSION."""
    major = (coordinate.get("postgres") or {}).get("major")
    if isinstance(major, int):
        return major
    from drillkit.catalog.backups import read_pg_major

    found = read_pg_major(backup)
    if found is None:
        raise InvalidInputError(
            f"backup {backup} has no readable PG_VERSION: which PostgreSQL major restores it is "
            "unknown; the coordinate must come from drillkit's PITR selection"
        )
    return found


def _recorded_installation(label: dict[str, Any]) -> pgbin.Installation | None:
    """The installation provisioning used, as its label recorded it (when still there)."""
    recorded = label.get("postgres") or {}
    try:
        tool = pgbin.Installation(
            major=int(recorded["major"]),
            bindir=Path(str(recorded["bindir"])),
            version=str(recorded.get("version", "")),
            source=str(recorded.get("source", "label")),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return tool if tool.has("pg_ctl") else None


def _installation_of(data: Path) -> pgbin.Installation | None:
    """The installation of the data directory's own major, when this worker has it."""
    try:
        major = int((data / "PG_VERSION").read_text().strip().split(".")[0])
        return pgbin.for_major(major)
    except (OSError, ValueError, DrillError):
        return None


def stop_server(data: Path, installation: pgbin.Installation | None = None) -> bool:
    """Stop the server of ``data`` immediately (a sandbox is disposable); True if it was running.

    With the data directory's own major's pg_ctl when this worker has it; else the process is
    killed (below) as for a stale pid file."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return False
    tool = installation or _installation_of(data)
    args = ["-D", str(data), "-m", "immediate", "-w", "stop"]
    result = (
        tool.run("pg_ctl", args, check=False)
        if tool
        else subprocess.CompletedProcess(args, 1, "", "no pg_ctl of this major")
    )
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
