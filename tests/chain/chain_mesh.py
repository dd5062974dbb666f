"""Loopback stand-ins for a routing chain: three upstream tiers, a deterministic mesh front that
routes by the VirtualService read from the API emulator, and a fake Prometheus.

The front models what the drill relies on, per request:
  1. the first http rule whose match fits (exact ``x-drill-context``), else the rule without one;
  2. the rule's ``fault``: a delay, then an abort of the first tier's attempt, each hitting an
     exact share of requests (request i is hit when floor((i+1)p) > floor(ip), p = percent/100);
  3. a tier by weight (smooth weighted round robin: exact shares over any 100 requests);
  4. tries on that tier (``retries.attempts`` + 1, each cut at ``perTryTimeout``; an injected
     abort is not retried, as Envoy's fault filter sits before the router); on failure the next
     tiers down the route list, in order;
  5. the answering destination's ``headers.response.set``; after a fallback
     ``x-fallback-triggered: true`` and ``x-fallback-reason``;
  6. an idempotency cache by ``X-Idempotency-Key`` (on by default) in front of all this.
It does not cut requests at the rule's global timeout: the drill measures latency against it.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from drillkit.timeutil import parse_duration


def hit(index: int, ratio: Fraction) -> bool:
    """Whether the ``index``-th (0-based) event is one of an exact ``ratio`` share."""
    return math.floor((index + 1) * ratio) > math.floor(index * ratio)


class _Server:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for one, and every test stops four servers.
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, content = self.owner.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = _serve


class TierServer(_Server):
    """One upstream tier. Failure and bad bodies hit an exact share of DISTINCT idempotency keys
    (every try of a failing key fails, so retries cannot hide it and counts stay exact)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fail_ratio = Fraction(0)
        self.invalid_ratio = Fraction(0)
        self.delay = 0.0
        self.nondeterministic = False
        self.requests = 0
        self.keys: dict[str, int] = {}

    def handle(self, method, path, headers, body):
        key = headers.get("x-idempotency-key", "")
        with self.lock:
            self.requests += 1
            served = self.requests
            index = self.keys.setdefault(key, len(self.keys))
        if self.delay:
            time.sleep(self.delay)
        if hit(index, self.fail_ratio):
            return 503, {"Content-Type": "application/json"}, b'{"error": "upstream failed"}'
        answer: dict[str, Any] = {"sku": "drill-probe", "price": 12.5, "currency": "EUR"}
        answer["tier"] = self.name
        if hit(index, self.invalid_ratio):
            answer["price"] = "n/a"
        if self.nondeterministic:
            answer["served"] = served
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


class MeshFront(_Server):
    """The chain's host as the drill sees it. ``route`` returns the VirtualService's spec."""

    def __init__(self, *, route: Callable[[], dict[str, Any] | None], upstreams: dict) -> None:
        super().__init__()
        self.route = route
        self.upstreams: dict[str, TierServer] = upstreams  # destination host -> tier server
        self.idempotency_cache = True
        self.cache: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.counters: dict[str, int] = {}
        self.current: dict[str, dict[str, float]] = {}  # rule -> smooth WRR state
        self.seen: list[tuple[str | None, str]] = []  # (drill context, rule name)

    def _next(self, counter: str) -> int:
        with self.lock:
            value = self.counters.get(counter, 0)
            self.counters[counter] = value + 1
            return value

    @staticmethod
    def _matches(rule: dict[str, Any], headers: dict[str, str]) -> bool:
        matches = rule.get("match")
        if not matches:
            return True
        for match in matches:
            wanted = match.get("headers") or {}
            if all(headers.get(name) == cond.get("exact") for name, cond in wanted.items()):
                return True
        return False

    def _pick(self, rule: dict[str, Any]) -> int:
        """Smooth weighted round robin over the rule's destinations (as nginx does)."""
        routes = rule["route"]
        weights = [r.get("weight", 100 if len(routes) == 1 else 0) for r in routes]
        with self.lock:
            state = self.current.setdefault(rule["name"], {})
            best, best_value = 0, None
            for index, weight in enumerate(weights):
                state[str(index)] = state.get(str(index), 0) + weight
                if weight and (best_value is None or state[str(index)] > best_value):
                    best, best_value = index, state[str(index)]
            state[str(best)] -= sum(weights)
        return best

    def _try_tier(self, rule: dict, dest: dict, method: str, path: str, headers, body):
        retries = rule.get("retries") or {}
        tries = int(retries.get("attempts", 0)) + 1
        per_try = parse_duration(retries.get("perTryTimeout", "30s")).total_seconds()
        server = self.upstreams[dest["destination"]["host"]]
        outgoing = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        request_headers = (dest.get("headers") or {}).get("request") or {}
        for name in request_headers.get("remove", []):
            outgoing.pop(name, None)
        outgoing.update(request_headers.get("set", {}))
        reason = "5xx"
        for _ in range(tries):
            request = urllib.request.Request(
                server.url + path, data=body or None, method=method, headers=outgoing
            )
            try:
                with urllib.request.urlopen(request, timeout=per_try) as response:
                    return response.status, response.read(), None
            except urllib.error.HTTPError as exc:
                exc.read()
                if exc.code < 500:
                    return exc.code, b"", None
                reason = "5xx"
            except (TimeoutError, urllib.error.URLError):
                reason = "timeout"
        return None, b"", reason

    def handle(self, method, path, headers, body):
        key = headers.get("x-idempotency-key")
        if self.idempotency_cache and key and key in self.cache:
            return self.cache[key]
        spec = self.route() or {}
        rule = next(r for r in spec.get("http", []) if self._matches(r, headers))
        with self.lock:
            self.seen.append((headers.get("x-drill-context"), rule.get("name")))
        fault = rule.get("fault") or {}
        signature = json.dumps(fault, sort_keys=True)
        if "delay" in fault:
            ratio = Fraction(str(fault["delay"]["percentage"]["value"])) / 100
            if hit(self._next(f"{rule['name']}/delay/{signature}"), ratio):
                time.sleep(parse_duration(fault["delay"]["fixedDelay"]).total_seconds())
        aborted = False
        if "abort" in fault:
            ratio = Fraction(str(fault["abort"]["percentage"]["value"])) / 100
            aborted = hit(self._next(f"{rule['name']}/abort/{signature}"), ratio)
        first = self._pick(rule)
        reason = None
        answer = None
        for index, dest in enumerate(rule["route"][first:], start=first):
            if index == first and aborted:
                reason = f"abort-{fault['abort']['httpStatus']}"
                continue
            status, content, failure = self._try_tier(rule, dest, method, path, headers, body)
            if status is not None:
                answer = (status, dest, content)
                break
            reason = reason or failure
        if answer is None:
            result = (503, {"x-fallback-triggered": "true"}, b'{"error": "no tier answered"}')
        else:
            status, dest, content = answer
            out = dict(((dest.get("headers") or {}).get("response") or {}).get("set", {}))
            out["Content-Type"] = "application/json"
            if reason is not None:
                out["x-fallback-triggered"] = "true"
                out["x-fallback-reason"] = reason
            result = (status, out, content)
        if self.idempotency_cache and key:
            with self.lock:
                self.cache.setdefault(key, result)
                result = self.cache[key]
        return result


class FakePrometheus(_Server):
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
