"""Integrity checks against a real PostgreSQL: full heap reads, amcheck, and a damaged page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drillkit.checks import run_checks

pytestmark = pytest.mark.integration

PAGE = 8192
INTEGRITY = {"name": "whole-db", "kind": "integrity", "target": "orders-db", "timeout": "30s"}


def make_tables(pg: Any, database: str) -> None:
    pg.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL); "
        "INSERT INTO orders SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 3000) g; "
        "CREATE INDEX orders_note ON orders (note); "
        "CREATE SCHEMA audit; CREATE TABLE audit.log (id int, what text); "
        "INSERT INTO audit.log VALUES (1, 'created')",
        database,
    )


def test_clean_sandbox_passes_with_amcheck(
    pg: Any, make_manifest: Callable[..., Any], pg_service: Any
) -> None:
    database = pg.create_database("integrity")
    make_tables(pg, database)
    manifest = make_manifest({"orders-db": pg_service(pg.endpoint(database), "provisioned")})
    document = run_checks([INTEGRITY], manifest)
    [result] = document["results"]
    assert result["status"] == "passed", result
    assert result["observed"] == {
        "tables": 2,
        "rows": 3001,
        "indexes_checked": 2,
        "amcheck": "passed",
    }
    assert document["findings"] == []
    # Only a provisioned sandbox gets the extension created.
    assert pg.execute("select count(*) from pg_extension where extname = 'amcheck'", database) == [
        (1,)
    ]


def test_amcheck_is_skipped_never_passed_on_a_target_drillkit_may_not_change(
    pg: Any, make_manifest: Callable[..., Any], pg_service: Any
) -> None:
    database = pg.create_database("integrity")
    make_tables(pg, database)
    manifest = make_manifest({"orders-db": pg_service(pg.endpoint(database), "override")})
    document = run_checks([INTEGRITY], manifest)
    [result] = document["results"]
    assert result["observed"]["amcheck"] == "skipped"
    assert result["observed"]["indexes_checked"] == 0
    assert result["observed"]["tables"] == 2  # the heap part did run
    assert "amcheck skipped" in result["detail"] and "NOT verified" in result["detail"]
    assert [(f["code"], f["severity"]) for f in document["findings"]] == [
        ("AMCHECK_UNAVAILABLE", "warning")
    ]
    assert pg.execute("select count(*) from pg_extension where extname = 'amcheck'", database) == [
        (0,)
    ]


def test_a_damaged_heap_page_fails_with_data_corruption(
    fresh_pg: Any, make_manifest: Callable[..., Any], pg_service: Any
) -> None:
    database = fresh_pg.create_database("corrupt")
    make_tables(fresh_pg, database)
    fresh_pg.execute("CHECKPOINT", database)
    [(relative,)] = fresh_pg.execute("select pg_relation_filepath('orders')", database)
    [(pages,)] = fresh_pg.execute("select pg_relation_size('orders') / 8192", database)
    assert pages >= 3
    fresh_pg.stop()
    # Overwrite tuple data in the middle of page 1, away from the page header and its checksum:
    # only the data checksum can notice this.
    data_file = Path(fresh_pg.data) / relative
    with data_file.open("r+b") as handle:
        handle.seek(PAGE + PAGE // 2)
        handle.write(b"\xde\xad\xbe\xef" * 16)
    fresh_pg.start()

    manifest = make_manifest({"orders-db": pg_service(fresh_pg.endpoint(database))})
    count_from_index = {
        "name": "count",
        "kind": "sql",
        "target": "orders-db",
        "query": "select count(*) from audit.log",
        "expect": {"equals": 1},
    }
    document = run_checks([INTEGRITY, count_from_index], manifest)
    results = {r["name"]: r for r in document["results"]}
    result = results["whole-db"]
    assert result["status"] == "failed", result
    assert "public.orders" in result["detail"]
    assert "invalid page in block 1" in result["detail"]
    assert result["observed"]["tables"] == 2
    corruption = [f for f in document["findings"] if f["code"] == "DATA_CORRUPTION"]
    assert [f["subject"] for f in corruption] == ["public.orders"]
    assert "pg_verifybackup" in corruption[0]["message"]
    # The damage in one table does not hide the others, and amcheck still ran.
    assert result["observed"]["amcheck"] == "passed"
    assert results["count"]["status"] == "passed"
    assert document["status"] == "failed"
