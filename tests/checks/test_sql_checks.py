"""SQL checks against a real PostgreSQL: verdicts, read-only enforcement, write refusal, timeouts,
unreachable sockets.

Decision: a write attempted by a check without ``write: true`` is ``error`` (with finding
WRITE_IN_READ_ONLY_CHECK), not ``failed``: the check never measured what it declares, so the
drill could not verify it, and nothing was written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from drillkit.checks import POSTGRES_CONNECTIONS_PER_SERVICE, run_checks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app_db(pg: Any) -> str:
    database = pg.create_database("sqlchecks")
    pg.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, amount numeric(10,2), "
        "created_at timestamptz NOT NULL DEFAULT now()); "
        "INSERT INTO orders (id, status, amount) "
        "SELECT g, CASE WHEN g % 10 = 0 THEN 'refunded' ELSE 'paid' END, g * 1.5 "
        "FROM generate_series(1, 1200) g",
        database,
    )
    return database


@pytest.fixture
def manifest(pg: Any, app_db: str, make_manifest: Callable[..., Any], pg_service: Any) -> Any:
    return make_manifest(
        {
            "orders-db": pg_service(pg.endpoint(app_db), "provisioned"),
            "orders-db-override": pg_service(pg.endpoint(app_db), "override"),
            "orders-db-default": pg_service(pg.endpoint(app_db), "spec_default"),
        }
    )


def sql(name: str, query: str, expect: dict[str, Any], **extra: Any) -> dict[str, Any]:
    check = {"name": name, "kind": "sql", "target": "orders-db", "query": query, "expect": expect}
    return check | extra


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in document["results"]}


def codes(document: dict[str, Any]) -> list[str]:
    return [f["code"] for f in document["findings"]]


def test_passed_failed_and_error(manifest: Any) -> None:
    document = run_checks(
        [
            sql("count", "select count(*) from orders", {"gte": 1000}),
            sql("too-few", "select count(*) from orders", {"gte": 5000}),
            sql("status", "select status from orders where id = 10", {"equals": "refunded"}),
            sql("amount", "select amount from orders where id = 3", {"between": [4, 5]}),
            sql("percent", "select count(*) from orders where status like 'pa%'", {"equals": 1080}),
            sql("missing-table", "select count(*) from no_such_table", {"gte": 1}),
            sql("no-rows", "select id from orders where id < 0", {"gte": 1}),
            sql("row-count", "select id from orders where id <= 3", {"rows": 3}),
        ],
        manifest,
    )
    results = by_name(document)
    assert results["count"]["status"] == "passed"
    assert results["count"]["observed"] == 1200
    assert results["count"]["expectation"] == ">= 1000"
    assert results["count"]["latency_ms"] > 0
    assert results["too-few"]["status"] == "failed"
    assert results["too-few"]["detail"] == "observed 1200, expected >= 5000"
    assert results["status"]["status"] == "passed"
    assert results["amount"]["status"] == "passed" and results["amount"]["observed"] == 4.5
    assert results["percent"]["status"] == "passed"  # a literal % is SQL, not a placeholder
    assert results["missing-table"]["status"] == "error"
    assert 'relation "no_such_table" does not exist' in results["missing-table"]["detail"]
    assert results["no-rows"]["status"] == "failed"
    assert "no rows" in results["no-rows"]["detail"]
    assert results["row-count"]["status"] == "passed" and results["row-count"]["observed"] == 1
    assert document["status"] == "error"
    assert "CHECK_ERRORED" in codes(document)


def test_all_passing_run_passes(manifest: Any) -> None:
    document = run_checks([sql("count", "select count(*) from orders", {"gte": 1000})], manifest)
    assert document["status"] == "passed"
    assert document["findings"] == []
    assert document["schema"] == "drillkit.validation/v1"


def test_a_check_without_write_cannot_write(pg: Any, app_db: str, manifest: Any) -> None:
    marker = int(uuid.uuid4().int % 10**9) + 10**6
    document = run_checks(
        [
            sql(
                "sneaky",
                f"insert into orders (id, status) values ({marker}, 'x') returning id",
                {"equals": marker},
            ),
            sql(
                "sneakier",
                f"set default_transaction_read_only = off; "
                f"insert into orders (id, status) values ({marker + 1}, 'x') returning id",
                {"equals": marker + 1},
            ),
        ],
        manifest,
    )
    assert by_name(document)["sneaky"]["status"] == "error"
    assert "read-only" in by_name(document)["sneaky"]["detail"]
    # A second statement never runs: the extended protocol refuses it.
    assert by_name(document)["sneakier"]["status"] == "error"
    assert "more than one statement" in by_name(document)["sneakier"]["detail"]
    assert codes(document) == ["WRITE_IN_READ_ONLY_CHECK", "CHECK_MULTIPLE_STATEMENTS"]
    assert document["status"] == "error"
    rows = pg.execute(f"select count(*) from orders where id in ({marker}, {marker + 1})", app_db)
    assert rows == [(0,)]


def test_write_check_commits_on_a_provisioned_sandbox(pg: Any, app_db: str, manifest: Any) -> None:
    marker = int(uuid.uuid4().int % 10**9) + 2 * 10**9
    document = run_checks(
        [
            sql(
                "write-path",
                f"insert into orders (id, status) values ({marker}, 'drill') returning id",
                {"equals": marker},
                write=True,
            )
        ],
        manifest,
    )
    assert document["status"] == "passed", document
    assert pg.execute(f"select status from orders where id = {marker}", app_db) == [("drill",)]


@pytest.mark.parametrize("target", ["orders-db-override", "orders-db-default"])
def test_write_check_is_refused_unless_the_sandbox_was_provisioned(
    pg: Any, app_db: str, manifest: Any, target: str
) -> None:
    marker = int(uuid.uuid4().int % 10**9) + 3 * 10**9
    # The refused entry points at a socket that does not exist: had drillkit tried to connect,
    # the result would be SANDBOX_UNREACHABLE, not WRITE_CHECK_REFUSED.
    manifest["services"][target]["endpoint"] = dict(
        manifest["services"][target]["endpoint"], host=f"/tmp/drillkit-absent-{uuid.uuid4().hex}"
    )
    check = sql(
        "write-path",
        f"insert into orders (id, status) values ({marker}, 'x')",
        {"rows": 0},
        write=True,
        target=target,
    )
    document = run_checks([check], manifest)
    [result] = document["results"]
    assert result["status"] == "error"
    assert result["latency_ms"] is None
    assert "provisioned" in result["detail"]
    assert codes(document) == ["WRITE_CHECK_REFUSED"]
    assert document["status"] == "error"


def test_timeout_is_an_error_never_a_pass(manifest: Any) -> None:
    started = time.monotonic()
    document = run_checks([sql("slow", "select pg_sleep(5)", {"rows": 1}, timeout="1s")], manifest)
    elapsed = time.monotonic() - started
    [result] = document["results"]
    assert result["status"] == "error"
    assert result["detail"].startswith("timed out after 1s")
    assert 900 <= result["latency_ms"] < 2500
    assert elapsed < 3
    assert codes(document) == ["CHECK_TIMED_OUT"]
    assert document["status"] == "error"


def test_missing_socket_is_sandbox_unreachable_once_per_service(
    make_manifest: Callable[..., Any], pg_service: Any
) -> None:
    endpoint = {
        "host": f"/tmp/drillkit-absent-{uuid.uuid4().hex}",
        "port": 5432,
        "user": "postgres",
        "database": "app",
    }
    manifest = make_manifest({"orders-db": pg_service(endpoint)})
    document = run_checks(
        [
            sql("a", "select 1", {"equals": 1}),
            sql("b", "select 2", {"equals": 2}),
            {"name": "c", "kind": "tcp", "target": "orders-db"},
        ],
        manifest,
    )
    assert [r["status"] for r in document["results"]] == ["error", "error", "error"]
    assert codes(document) == ["SANDBOX_UNREACHABLE"]
    assert document["findings"][0]["subject"] == "orders-db"
    assert "No such file or directory" in document["findings"][0]["message"]
    assert document["status"] == "error"


def test_connection_refused_on_tcp_host_is_unreachable(
    make_manifest: Callable[..., Any], pg_service: Any, closed_port: int
) -> None:
    endpoint = {"host": "127.0.0.1", "port": closed_port, "user": "postgres", "database": "app"}
    document = run_checks(
        [sql("a", "select 1", {"equals": 1})], make_manifest({"orders-db": pg_service(endpoint)})
    )
    assert document["results"][0]["status"] == "error"
    assert "Connection refused" in document["results"][0]["detail"]
    assert codes(document) == ["SANDBOX_UNREACHABLE"]


def test_sql_check_against_a_non_postgres_service_is_refused(
    manifest: Any, make_manifest: Callable[..., Any]
) -> None:
    manifest["services"]["orders-api"] = {
        "kind": "http",
        "resolved_by": "override",
        "endpoint": {"url": "http://127.0.0.1:9"},
    }
    document = run_checks([sql("a", "select 1", {"equals": 1}, target="orders-api")], manifest)
    assert document["results"][0]["status"] == "error"
    assert codes(document) == ["TARGET_KIND_MISMATCH"]


def test_datetimes_are_observed_as_iso_strings(manifest: Any) -> None:
    document = run_checks(
        [
            sql(
                "fixed-time",
                "select timestamptz '2026-11-21 10:00:00+02'",
                {"regex": "^2026-11-21T08:00:00Z$"},
            )
        ],
        manifest,
    )
    [result] = document["results"]
    assert result["status"] == "passed", result
    assert result["observed"] == "2026-11-21T08:00:00Z"


def test_postgres_checks_share_a_connection_cap_per_service(manifest: Any) -> None:
    # Each check counts drillkit's sessions after sleeping: none may see more than the cap.
    query = (
        "select (select count(*) from pg_stat_activity "
        "where application_name like 'drillkit check %') from pg_sleep(0.3)"
    )
    checks = [sql(f"busy-{i}", query, {"lte": POSTGRES_CONNECTIONS_PER_SERVICE}) for i in range(12)]
    started = time.monotonic()
    document = run_checks(checks, manifest)
    assert document["status"] == "passed", document
    assert max(r["observed"] for r in document["results"]) == POSTGRES_CONNECTIONS_PER_SERVICE
    assert time.monotonic() - started >= 0.6  # two waves
