"""The production guard judges addresses, and checks connect to the address it judged.

Real servers: a PostgreSQL listening on loopback TCP and a loopback HTTP server. Names that do not
exist in any real resolver (``*.drill.test``) are answered by replacing the one function drillkit
resolves with (``drillkit.routing.resolve.lookup``): a check that passes against such a name
proves the client connected to the judged address, since libpq or asyncio looking the name up
again would find nothing. One test uses the real name ``localhost``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillkit import pgbin
from drillkit.checks import run_checks
from drillkit.exceptions import InvalidInputError, ProductionTargetRefusedError
from drillkit.routing import resolve
from drillkit.routing.guard import ProductionGuard

pytestmark = pytest.mark.integration
LOOPBACK = {"cidrs": ["127.0.0.0/8", "::1/128"]}
PRODUCTION = {"hosts": ["db.prod.internal"], "cidrs": ["10.20.0.0/16"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tcp_pg() -> Iterator[int]:
    """A real PostgreSQL on 127.0.0.1:<port> (trust: this test's own throwaway server)."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="drillkit-guard-"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    for path in (data, sock):
        path.mkdir()
        pgbin.give_to_server_user(path)
    pgbin.run("initdb", ["-D", str(data), "-U", "postgres", "--auth=trust"], timeout=120)
    port = _free_port()
    options = f"-c listen_addresses='127.0.0.1' -c port={port} -c unix_socket_directories='{sock}'"
    pgbin.run("pg_ctl", ["-D", str(data), "-l", str(sock / "log"), "-w", "-o", options, "start"])
    try:
        yield port
    finally:
        pgbin.run("pg_ctl", ["-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """name -> successive answers of the stand-in resolver; every lookup is recorded."""
    table: dict[str, list[list[str]]] = {}
    real = resolve.lookup

    def lookup(host: str) -> list[str]:
        if host not in table:
            return real(host)
        queue = table[host]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        lookups.append(host)
        return answer

    lookups: list[str] = []
    table["__lookups__"] = lookups  # type: ignore[assignment]
    monkeypatch.setattr(resolve, "lookup", lookup)
    return table


def _manifest(services: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": "3f9c2a1b-0000-4000-8000-000000000002",
        "context": {"header": "X-Drill-Context", "value": "v1.test", "expires_at": None},
        "services": services,
        "production": production,
    }


def _pg(host: str, port: int) -> dict[str, Any]:
    endpoint = {"host": host, "port": port, "user": "postgres", "database": "postgres"}
    dsn = f"host={host} port={port} user=postgres dbname=postgres"
    return {"kind": "postgres", "resolved_by": "provisioned", "endpoint": endpoint, "dsn": dsn}


def _sql(target: str = "db") -> dict[str, Any]:
    return {
        "name": "one",
        "kind": "sql",
        "target": target,
        "query": "select inet_server_addr()::text",
        "expect": {"equals": "127.0.0.1/32"},
    }


def _run(checks: list[dict], services: dict, production: dict) -> dict[str, Any]:
    guard = ProductionGuard.from_spec(production)
    manifest = _manifest(services, guard.to_dict())
    guard.check_manifest(manifest, resolve=True)  # what drill.smoke does before any check
    return run_checks(checks, manifest, guard=guard)


def test_sql_connects_to_the_judged_address_not_a_second_lookup(tcp_pg: int, answers):
    # First answer: loopback; any later lookup would say production.
    answers["orders.drill.test"] = [["127.0.0.1"], ["10.20.0.5"]]
    document = _run([_sql()], {"db": _pg("orders.drill.test", tcp_pg)}, PRODUCTION)
    (result,) = document["results"]
    assert result["status"] == "passed", document
    assert answers["__lookups__"] == ["orders.drill.test"], "resolved more than once"


def test_a_name_resolving_into_a_production_cidr_is_refused_before_connecting(tcp_pg, answers):
    answers["orders.drill.test"] = [["10.20.0.5"]]
    manifest = _manifest({"db": _pg("orders.drill.test", tcp_pg)}, PRODUCTION)
    guard = ProductionGuard.from_spec(PRODUCTION)
    with pytest.raises(ProductionTargetRefusedError, match=r"address 10\.20\.0\.5"):
        guard.check_manifest(manifest, resolve=True)
    # The checks refuse it on their own too (run_checks called without drill.smoke).
    document = run_checks([_sql()], manifest, guard=guard)
    assert document["results"][0]["status"] == "error"
    assert [f["code"] for f in document["findings"]] == ["PRODUCTION_TARGET_REFUSED"]


def test_any_production_address_among_several_refuses(tcp_pg, answers):
    answers["orders.drill.test"] = [["127.0.0.1", "::ffff:10.20.9.9"]]
    document = run_checks([_sql()], _manifest({"db": _pg("orders.drill.test", tcp_pg)}, PRODUCTION))
    assert [f["code"] for f in document["findings"]] == ["PRODUCTION_TARGET_REFUSED"]


def test_localhost_is_production_when_the_spec_lists_loopback(tcp_pg):
    document = run_checks([_sql()], _manifest({"db": _pg("localhost", tcp_pg)}, LOOPBACK))
    assert document["results"][0]["status"] == "error"
    assert [f["code"] for f in document["findings"]] == ["PRODUCTION_TARGET_REFUSED"]
    assert (
        "127.0.0.1" in document["findings"][0]["message"]
        or "::1" in (document["findings"][0]["message"])
    )
    allowed = run_checks([_sql()], _manifest({"db": _pg("localhost", tcp_pg)}, PRODUCTION))
    assert allowed["results"][0]["status"] == "passed", allowed


def test_a_name_that_does_not_resolve_is_an_error_saying_so(answers):
    answers["gone.drill.test"] = [[]]
    document = run_checks([_sql()], _manifest({"db": _pg("gone.drill.test", 5432)}, PRODUCTION))
    (result,) = document["results"]
    assert result["status"] == "error"
    assert "could not be resolved" in result["detail"] or "no address" in result["detail"]


def test_http_connects_to_the_judged_address_with_the_host_header(http_server, routes, answers):
    server = http_server({"/health": routes.json({"ok": True})})
    answers["api.drill.test"] = [["127.0.0.1"], ["10.20.0.7"]]
    url = f"http://api.drill.test:{server.port}"
    services = {"api": {"kind": "http", "resolved_by": "override", "endpoint": {"url": url}}}
    manifest = _manifest(services, PRODUCTION)
    manifest["context"]["value"] = server.expected_context
    check = {
        "name": "h",
        "kind": "http",
        "target": "api",
        "path": "/health",
        "expect": {"status": 200},
    }
    guard = ProductionGuard.from_spec(PRODUCTION)
    guard.check_manifest(manifest, resolve=True)
    document = run_checks([check], manifest, guard=guard)
    assert document["results"][0]["status"] == "passed", document
    assert server.requests[0].headers["host"] == f"api.drill.test:{server.port}"
    assert answers["__lookups__"] == ["api.drill.test"]


def test_tcp_connects_to_the_judged_address(tcp_pg: int, answers):
    answers["pg.drill.test"] = [["127.0.0.1"], ["10.20.0.8"]]
    services = {"db": {"kind": "tcp", "resolved_by": "override", "endpoint": {}}}
    services["db"]["endpoint"] = {"host": "pg.drill.test", "port": tcp_pg}
    check = {"name": "t", "kind": "tcp", "target": "db"}
    document = _run([check], services, PRODUCTION)
    assert document["results"][0]["status"] == "passed", document
    assert answers["__lookups__"] == ["pg.drill.test"]


# Every spelling a resolver reads as loopback or a wildcard; none may reach the server.
BYPASSES = [
    "0",
    "0.0.0.0",
    "0x0",
    "::",
    "[::]",
    "127.1",
    "0x7f.1",
    "0177.0.0.1",
    "017700000001",
    "2130706433",
    "127.0.0.1.",
    "::ffff:127.0.0.1",
    "[::ffff:7f00:1]",
    "0:0:0:0:0:ffff:7f00:1",
    "localhost",
    "LOCALHOST.",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits: 127.0.0.1 after NFKC
    "\u0661\u0662\u0667.\u0660.\u0660.\u0661",  # Arabic-Indic digits
    "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth "localhost"
    "l\u043ecalhost",  # Cyrillic o
]


@pytest.mark.parametrize("host", BYPASSES)
def test_no_spelling_of_loopback_reaches_a_loopback_production(tcp_pg: int, host: str):
    services = {"db": {"kind": "tcp", "resolved_by": "override", "endpoint": {}}}
    services["db"]["endpoint"] = {"host": host, "port": tcp_pg}
    manifest = _manifest(services, LOOPBACK)
    guard = ProductionGuard.from_spec(LOOPBACK)
    # A non-ASCII host is malformed to the manifest already; to the checks it is production.
    with pytest.raises((ProductionTargetRefusedError, InvalidInputError)):
        guard.check_manifest(manifest, resolve=True)
    document = run_checks([{"name": "t", "kind": "tcp", "target": "db"}], manifest, guard=guard)
    assert document["results"][0]["status"] == "error", (host, document)
    assert [f["code"] for f in document["findings"]] == ["PRODUCTION_TARGET_REFUSED"]


@pytest.mark.parametrize("host", ["0", "0.0.0.0", "::", "[::]", "0x0.0", "::ffff:0.0.0.0"])
def test_a_local_wildcard_is_always_refused(tcp_pg: int, host: str):
    services = {"db": {"kind": "tcp", "resolved_by": "override", "endpoint": {}}}
    services["db"]["endpoint"] = {"host": host, "port": tcp_pg}
    document = run_checks([{"name": "t", "kind": "tcp", "target": "db"}], _manifest(services, {}))
    assert [f["code"] for f in document["findings"]] == ["PRODUCTION_TARGET_REFUSED"], host
    assert "wildcard" in document["findings"][0]["message"]


def test_every_judged_address_is_tried_in_the_resolvers_order(tcp_pg: int, answers):
    """``localhost`` often answers ::1 first; a server on 127.0.0.1 only is still reached, and
    only through addresses the guard judged."""
    answers["both.drill.test"] = [["::1", "127.0.0.1"]]
    tcp = {"kind": "tcp", "resolved_by": "override", "endpoint": {}}
    tcp["endpoint"] = {"host": "both.drill.test", "port": tcp_pg}
    document = _run(
        [_sql(), {"name": "t", "kind": "tcp", "target": "raw"}],
        {"db": _pg("both.drill.test", tcp_pg), "raw": tcp},
        PRODUCTION,
    )
    assert [r["status"] for r in document["results"]] == ["passed", "passed"], document
    assert answers["__lookups__"] == ["both.drill.test"]
