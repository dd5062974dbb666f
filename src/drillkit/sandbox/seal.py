"""After promotion, before any check: switch off what a restored database would do to others.

Subscriptions are disabled and detached from their publisher's slot, replication slots are
dropped, and PUBLIC user mappings of foreign servers (postgres_fdw, dblink) are removed, in every
database that accepts connections. ``max_logical_replication_workers = 0`` (see config.py) means
no apply worker can start between promotion and this step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg2 import sql

Connect = Callable[[str], Any]  # database name -> an autocommit superuser connection

_SUBSCRIPTIONS = (
    "SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
    "WHERE d.datname = current_database() ORDER BY 1"
)
_SLOTS = (
    "SELECT slot_name FROM pg_replication_slots "
    "WHERE database = current_database() OR (%s AND slot_type = 'physical') ORDER BY 1"
)
_PUBLIC_MAPPINGS = (
    "SELECT s.srvname FROM pg_user_mapping m JOIN pg_foreign_server s ON s.oid = m.umserver "
    "WHERE m.umuser = 0 ORDER BY 1"
)


def databases(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def seal(connect: Connect, names: list[str]) -> dict[str, list[str]]:
    """Disable subscriptions, drop slots and PUBLIC user mappings; return what was done."""
    done: dict[str, list[str]] = {
        "subscriptions_disabled": [],
        "slots_dropped": [],
        "public_user_mappings_dropped": [],
    }
    for index, name in enumerate(names):
        conn = connect(name)
        try:
            with conn.cursor() as cur:
                cur.execute(_SUBSCRIPTIONS)
                for (sub,) in cur.fetchall():
                    ident = sql.Identifier(sub)
                    # DISABLE and SET (slot_name = NONE) never contact the publisher (DROP would).
                    cur.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                    cur.execute(
                        sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident)
                    )
                    done["subscriptions_disabled"].append(f"{name}.{sub}")
                cur.execute(_SLOTS, (index == 0,))
                for (slot,) in cur.fetchall():
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    done["slots_dropped"].append(slot)
                cur.execute(_PUBLIC_MAPPINGS)
                for (server,) in cur.fetchall():
                    cur.execute(
                        sql.SQL("DROP USER MAPPING FOR PUBLIC SERVER {}").format(
                            sql.Identifier(server)
                        )
                    )
                    done["public_user_mappings_dropped"].append(f"{name}.{server}")
        finally:
            conn.close()
    return done


def seal_for_checks(
    connect: Connect, names: list[str], directory: Path, *, major: int
) -> dict[str, Any]:
    """Seal the databases ``names`` and create the check roles, their passwords in a 0600 file
    under ``directory``: the sandbox record's ``sealed`` and ``check_roles``."""
    from drillkit.sandbox import roles

    sealed = seal(connect, names)
    secrets, description = roles.create_check_roles(connect, names, major=major)
    password_file = roles.write_secrets(directory, secrets)
    return {"sealed": sealed, "check_roles": {**description, "roles_file": str(password_file)}}
