"""The roles checks run as: per sandbox, non-superuser logins with a random scram password.

``read``: reads every table (``pg_read_all_data``, row security bypassed so integrity reads every
row), ``pg_monitor``, and EXECUTE on amcheck's ``bt_index_check``. ``write``: the same plus
``pg_write_all_data``. Neither can reach server files or programs, create extensions or become
another role. Passwords live in a 0600 file in the sandbox directory, never in a record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg2 import sql

Connect = Callable[[str], Any]
SECRETS_DIR = "secrets"
PASSWORD_FILE = "check-roles.json"
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS INHERIT"
_AMCHECK_FUNCTIONS = (
    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
    "JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = 'amcheck' "
    "AND p.proname = 'bt_index_check'"
)
_USER_SCHEMAS = (
    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
    "AND nspname <> 'information_schema'"
)


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, computed here so the password itself never
    reaches the server (nor its logs)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
        f"{b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def write_secrets(directory: Path, roles: dict[str, dict[str, str]]) -> Path:
    """``<sandbox>/secrets/check-roles.json``, 0600 in a 0700 directory of drillkit's user."""
    folder = directory / SECRETS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(roles, handle)
    return path


def read_login(password_file: str | Path, which: str) -> tuple[str, str]:
    """``(role, password)`` of the ``read`` or ``write`` check role, read at connect time."""
    roles = json.loads(Path(password_file).read_text())
    entry = roles[which]
    return str(entry["user"]), str(entry["password"])


def create_check_roles(
    connect: Connect, databases: list[str], *, major: int
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Create both roles; return ``(secrets, description)`` (the description has no password)."""
    suffix = secrets.token_hex(4)
    roles = {
        which: {"user": f"drillkit_{which}_{suffix}", "password": secrets.token_urlsafe(24)}
        for which in ("read", "write")
    }
    amcheck: dict[str, str] = {}
    first = connect(databases[0] if databases else "postgres")
    try:
        with first.cursor() as cur:
            for which, entry in roles.items():
                ident = sql.Identifier(entry["user"])
                cur.execute(
                    sql.SQL("CREATE ROLE {} " + _ROLE_ATTRIBUTES + " PASSWORD {}").format(
                        ident, sql.Literal(scram_verifier(entry["password"]))
                    )
                )
                if major >= 14:
                    granted = ["pg_read_all_data", "pg_monitor"]
                    if which == "write":
                        granted.append("pg_write_all_data")
                    cur.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.SQL(", ").join(map(sql.Identifier, granted)), ident
                        )
                    )
                else:
                    cur.execute(sql.SQL("GRANT pg_monitor TO {}").format(ident))
    finally:
        first.close()
    for name in databases:
        conn = connect(name)
        try:
            with conn.cursor() as cur:
                amcheck[name] = _grant_in_database(cur, name, roles, major=major)
        finally:
            conn.close()
    granted_roles = ["pg_read_all_data", "pg_monitor"] if major >= 14 else ["pg_monitor"]
    description = {
        "read": {"user": roles["read"]["user"], "member_of": granted_roles},
        "write": {
            "user": roles["write"]["user"],
            "member_of": [*granted_roles, "pg_write_all_data"] if major >= 14 else granted_roles,
        },
        "superuser": False,
        "amcheck": amcheck,
    }
    if major < 14:
        description["grants"] = "explicit per-schema GRANTs (PostgreSQL 13 has no pg_read_all_data)"
    return roles, description


def _grant_in_database(cur: Any, name: str, roles: dict[str, dict[str, str]], *, major: int) -> str:
    users = [sql.Identifier(entry["user"]) for entry in roles.values()]
    both = sql.SQL(", ").join(users)
    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), both))
    if major < 14:
        _explicit_grants(cur, roles)
    status = "created"
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")
    if cur.fetchone():
        status = "present"
    else:
        try:
            cur.execute("CREATE EXTENSION amcheck")
        except Exception as exc:  # a database without a usable schema, or no contrib files
            return f"not available: {str(exc).strip().splitlines()[0]}"
    cur.execute(_AMCHECK_FUNCTIONS)
    for (signature,) in cur.fetchall():
        cur.execute(sql.SQL("GRANT EXECUTE ON FUNCTION " + signature + " TO {}").format(both))
    return status


def _explicit_grants(cur: Any, roles: dict[str, dict[str, str]]) -> None:
    """PostgreSQL 13: what pg_read_all_data/pg_write_all_data grant, schema by schema."""
    cur.execute(_USER_SCHEMAS)
    schemas = [row[0] for row in cur.fetchall()]
    read, write = (sql.Identifier(roles[w]["user"]) for w in ("read", "write"))
    for schema in schemas:
        nsp = sql.Identifier(schema)
        for stmt in (
            "GRANT USAGE ON SCHEMA {nsp} TO {read}, {write}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA {nsp} TO {read}, {write}",
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA {nsp} TO {read}, {write}",
            "GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {nsp} TO {write}",
            "GRANT USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA {nsp} TO {write}",
        ):
            cur.execute(sql.SQL(stmt).format(nsp=nsp, read=read, write=write))
