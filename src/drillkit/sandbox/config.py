"""The sandbox server's configuration: written by drillkit from an allow-list, never the backup's.

A restored data directory carries production's ``postgresql.conf``/``postgresql.auto.conf``
(commands, connection strings, slots, include directives, preload libraries, log and pid paths).
None of it is used: both files are replaced, and only settings the data needs to load or that
merely shape how values are shown are kept, each one named in the sandbox record.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drillkit.exceptions import InvalidInputError

# Settings taken from the backup's configuration files: presentation only, no I/O, no process,
# no path, no library. Anything else in those files is ignored (and listed as ignored).
KEPT_FROM_BACKUP = (
    "timezone",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "search_path",
    "standard_conforming_strings",
    "default_text_search_config",
)
# Capacities recorded in pg_control that replay needs at least as large as production's
# (prepared transactions are re-created at the end of recovery; their locks must fit).
FROM_CONTROL = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}
_INCLUDES = ("include", "include_dir", "include_if_exists")
_LINE_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*"
    r"(?P<value>'(?:[^'\\\n]|\\.|'')*'|[^\s#']+)\s*(?:#.*)?$"
)
_SAFE_VALUE_RE = re.compile(r"^[\w\s,.:+\-\"$/]*$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _unquote(raw: str) -> str:
    if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
        body = raw[1:-1].replace("''", "'")
        return re.sub(r"\\(.)", r"\1", body)
    return raw


def read_backup_settings(data: Path) -> tuple[dict[str, str], list[str]]:
    """``(settings, names seen)`` of the backup's postgresql.conf then postgresql.auto.conf.

    Parsed as text only: include directives are never followed (their names are returned so the
    record can say they were ignored)."""
    settings: dict[str, str] = {}
    seen: list[str] = []
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        path = data / name
        if path.is_symlink() or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = _LINE_RE.match(line)
            if not match:
                continue
            key = match["name"].lower()
            seen.append(key)
            if key not in _INCLUDES:
                settings[key] = _unquote(match["value"])
    return settings, sorted(set(seen))


def control_settings(controldata: str) -> dict[str, str]:
    """The capacities replay needs, from ``pg_controldata`` output."""
    found: dict[str, str] = {}
    for line in controldata.splitlines():
        key, _, value = line.partition(":")
        setting = FROM_CONTROL.get(key.strip())
        if setting and value.strip().isdigit():
            found[setting] = value.strip()
    return found


def restore_command(archive: Path) -> str:
    """``cp`` from the archive, its path quoted for /bin/sh and every ``%`` doubled for the server.

    A path the configuration file cannot hold (a control character) is refused, named."""
    text = str(archive)
    if _CONTROL_CHARS.search(text):
        raise InvalidInputError(
            f"WAL archive path {text!r} contains a control character (newline, tab...), which "
            "drillkit cannot quote safely into the server's restore_command: rename the directory"
        )
    quoted = shlex.quote(text.rstrip("/") + "/").replace("%", "%%")
    return f"cp -- {quoted}%f %p"


def sandbox_config(
    *,
    major: int,
    backup_settings: Mapping[str, str],
    control: Mapping[str, str],
    socket_dir: Path,
    hba: Path,
    ident: Path,
    port: int,
    tcp: bool,
    shared_buffers: str,
    recovery: Mapping[str, str],
    restore: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """``(full configuration, settings kept from the backup)`` for the sandbox server."""
    kept = {
        key: value
        for key, value in backup_settings.items()
        if key in KEPT_FROM_BACKUP and _SAFE_VALUE_RE.match(value)
    }
    config: dict[str, str] = {
        **kept,
        **control,
        "listen_addresses": "127.0.0.1" if tcp else "",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "unix_socket_permissions": "0700",
        "hba_file": str(hba),
        "ident_file": str(ident),
        "password_encryption": "scram-sha-256",
        # Production's archiving and recovery hooks never run here.
        "archive_mode": "off",
        "archive_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "restore_command": restore,
        # Never follow, stream to or from, or replicate with anyone.
        "primary_conninfo": "",
        "primary_slot_name": "",
        "synchronous_standby_names": "",
        "max_wal_senders": "0",
        "max_logical_replication_workers": "0",
        "max_sync_workers_per_subscription": "0",
        # Hot standby would require production's max_wal_senders: the server accepts
        # connections only once promoted, which is when drillkit needs it.
        "hot_standby": "off",
        # No library, no background worker, no job scheduler from production.
        "shared_preload_libraries": "",
        "session_preload_libraries": "",
        "local_preload_libraries": "",
        "dynamic_library_path": "$libdir",
        "external_pid_file": "",
        "logging_collector": "off",
        "log_destination": "stderr",
        "ssl": "off",
        "shared_buffers": shared_buffers,
        "huge_pages": "off",
        # A sandbox is disposable: skipping fsync makes replay faster and loses nothing.
        "fsync": "off",
        "max_wal_size": "4GB",
        # Tablespaces are restored as directories in pg_tblspc (never links to production's
        # paths); without this, recovery PANICs at consistency on such a directory.
        "allow_in_place_tablespaces": "on",
        **recovery,
    }
    if major >= 17:
        # Production's event triggers (login triggers too) never run in a sandbox.
        config["event_triggers"] = "off"
    if major >= 15:
        config["archive_library"] = ""
    else:
        config["stats_temp_directory"] = "pg_stat_tmp"
    if major < 13:
        raise InvalidInputError(f"PostgreSQL {major} is not supported; drill 13 or newer")
    return config, kept


def write_config(data: Path, config: Mapping[str, str]) -> None:
    """Replace the backup's configuration files (removed, never opened for writing: the copy
    may share storage with the repository) with drillkit's, and drop its standby.signal."""
    for name in ("postgresql.conf", "postgresql.auto.conf", "standby.signal"):
        path = data / name
        if path.is_symlink() or path.exists():
            path.unlink()
    lines = ["# written by drillkit: the backup's configuration is not used"]
    lines += [f"{key} = {conf_quote(value)}" for key, value in config.items()]
    (data / "postgresql.conf").write_text("\n".join(lines) + "\n")
    (data / "postgresql.auto.conf").write_text("")


def describe(
    kept: Mapping[str, str], control: Mapping[str, str], seen: list[str]
) -> dict[str, Any]:
    """What the record says about the configuration."""
    return {
        "source": "drillkit allow-list",
        "kept_from_backup": dict(kept),
        "from_pg_control": dict(control),
        "ignored_from_backup": [name for name in seen if name not in kept],
    }
