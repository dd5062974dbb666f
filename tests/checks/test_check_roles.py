"""The sandbox's check roles on a real server, both ways of granting them: PostgreSQL 14+'s
predefined roles, and the explicit per-schema GRANTs used for PostgreSQL 13 (which lacks
pg_read_all_data), exercised here on the embedded 18."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from drillkit.sandbox.roles import create_check_roles
from drillkit.sandbox.seal import databases

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("major", [18, 13])
def test_the_read_role_reads_everything_and_writes_nothing(fresh_pg: Any, major: int) -> None:
    app = fresh_pg.create_database("roles")
    fresh_pg.execute(
        "CREATE SCHEMA hidden; REVOKE ALL ON SCHEMA hidden FROM PUBLIC; "
        "CREATE TABLE hidden.secrets (id int PRIMARY KEY); INSERT INTO hidden.secrets VALUES (1); "
        "ALTER TABLE hidden.secrets ENABLE ROW LEVEL SECURITY; "
        f'REVOKE CONNECT ON DATABASE "{app}" FROM PUBLIC',
        app,
    )

    def admin(dbname: str) -> Any:
        conn = psycopg2.connect(host=str(fresh_pg.sock), user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    first = admin("postgres")
    try:
        names = databases(first)
    finally:
        first.close()
    secrets, description = create_check_roles(admin, names, major=major)
    assert description["amcheck"][app] == "created"

    def as_role(which: str, sql: str) -> list[tuple[Any, ...]]:
        user, password = secrets[which]["user"], secrets[which]["password"]
        conn = psycopg2.connect(host=str(fresh_pg.sock), user=user, password=password, dbname=app)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    # Reads a table in a schema PUBLIC cannot use, past row security, in a database PUBLIC
    # cannot connect to; amcheck runs; nothing is writable.
    assert as_role("read", "SELECT id FROM hidden.secrets") == [(1,)]
    assert as_role("read", "SELECT bt_index_check('hidden.secrets_pkey'::regclass)") == [("",)]
    assert as_role("read", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [
        (False,)
    ]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role("read", "INSERT INTO hidden.secrets VALUES (2)")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role("read", "CREATE EXTENSION dblink")
    # The write role writes rows, and is no more than that.
    as_role("write", "INSERT INTO hidden.secrets VALUES (3)")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role("write", "COPY hidden.secrets TO PROGRAM 'true'")
    assert fresh_pg.execute("SELECT count(*) FROM hidden.secrets", app) == [(2,)]
