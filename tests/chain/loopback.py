"""Loopback HTTP servers for the chain tests: a quiet threading server base, exact-share fault
hits, Envoy's FractionalPercent, EnvoyFilter workload selection, and a fake Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from drillkit.timeutil import parse_duration

Config = Callable[[str], list[dict[str, Any]]]  # plural -> stored objects (all namespaces)


class Unsupported(Exception):
    """Configuration the stand-in does not model: a test must not rely on a guess."""


def hit(index: int, ratio: Fraction) -> bool:
    """Whether the ``index``-th (0-based) event is one of an exact ``ratio`` share."""
    return math.floor((index + 1) * ratio) > math.floor(index * ratio)


def seconds(value: str | None) -> float | None:
    return None if value is None else parse_duration(value).total_seconds()


def fraction(percentage: dict[str, Any]) -> Fraction:
    """Envoy FractionalPercent: numerator over HUNDRED (default), TEN_THOUSAND or MILLION."""
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
    return Fraction(
        int(percentage.get("numerator", 0)), scale[percentage.get("denominator", "HUNDRED")]
    )


class Quiet(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects (a 1 s SYN retry)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a caller that timed out closed the socket: Envoy's per-try timeout did that


class Server:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        handler = type("Handler", (Handler,), {"owner": self})
        self.httpd = Quiet(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes):
        raise NotImplementedError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK
    owner: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, content = self.owner.handle(self.command, self.path, headers, body)
        with contextlib.suppress(OSError):
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    do_GET = do_POST = do_PUT = _serve


def selects(obj: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """An EnvoyFilter applies to the workloads of its own namespace its workloadSelector
    selects, all of them without one (Istio EnvoyFilter reference, ``workloadSelector``)."""
    if obj["metadata"].get("namespace") != namespace:
        return False
    wanted = ((obj.get("spec") or {}).get("workloadSelector") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def header_matches(rule_headers: list[dict[str, Any]], headers: dict[str, str]) -> bool:
    """Envoy HeaderMatcher, ``string_match.exact`` only (what drillkit writes)."""
    for matcher in rule_headers:
        exact = (matcher.get("string_match") or {}).get("exact")
        if exact is None or set(matcher) - {"name", "string_match"}:
            raise Unsupported(f"header matcher {matcher}")
        if headers.get(matcher["name"].lower()) != exact:
            return False
    return True


class FakePrometheus(Server):
    """Answers ``/api/v1/query`` with real Prometheus JSON; ``value`` None answers no series."""

    def __init__(self) -> None:
        super().__init__()
        self.value: str | None = "0"
        self.series = 1
        self.status = 200
        self.queries: list[str] = []

    def handle(self, method, path, headers, body):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(path)
        if parts.path != "/api/v1/query":
            return 404, {}, b"404 page not found"
        query = parse_qs(parts.query).get("query", [""])[0]
        self.queries.append(query)
        if self.status != 200:
            error = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
            return self.status, {"Content-Type": "application/json"}, json.dumps(error).encode()
        result = []
        if self.value is not None:
            result = [
                {"metric": {"route": f"r{i}"}, "value": [1763700000.123, self.value]}
                for i in range(self.series)
            ]
        payload = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()
