"""Benchmark of drillkit.checks.run_checks: 200 HTTP checks over 50 local endpoints (~100 ms each).

Run: python bench/bench_checks.py        (about 25 s: the sequential run alone takes ~20 s)

Goal: the concurrent run takes at most 1.5x the slowest single check (max latency_ms of that run).
Reported: the median of warm runs (the headline), the cold first run of the process (thread stacks
not yet cached: what a fresh Airflow task sees), and the ratio to one check on an idle runner.
The endpoints run in a child process, like real sandbox services: in this process they would
compete with the runner for the GIL and measure the harness instead of the runner.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from drillkit.checks import DEFAULT_CONCURRENCY, run_checks
from drillkit.timeutil import utcnow

ENDPOINTS = 50
CHECKS = 200
ANSWER_SECONDS = 0.1
GOAL = 1.5
WARM_RUNS = 5
CONTEXT = "v1.bench-drill.signature"
# Bounds the whole benchmark even if something hangs: sequential needs ~CHECKS * 0.1 s.
RUN_DEADLINE = timedelta(seconds=CHECKS * ANSWER_SECONDS * 3)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(ANSWER_SECONDS)
        ok = self.headers.get("X-Drill-Context") == CONTEXT
        body = json.dumps({"ok": ok}).encode()
        self.send_response(200 if ok else 421)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(count: int) -> None:
    """Child process: start ``count`` servers, print their ports, serve until stdin closes."""
    ports = []
    for _ in range(count):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.request_queue_size = 256  # 200 connections may arrive at once
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports.append(server.server_address[1])
    print(" ".join(map(str, ports)), flush=True)
    sys.stdin.read()


def manifest(ports: list[int]) -> dict[str, Any]:
    services = {
        f"svc-{i}": {
            "kind": "http",
            "resolved_by": "override",
            "endpoint": {"url": f"http://127.0.0.1:{port}"},
        }
        for i, port in enumerate(ports)
    }
    return {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": "bench-drill",
        "environment": "drill",
        "context": {"header": "X-Drill-Context", "value": CONTEXT, "expires_at": None},
        "services": services,
        "production": {"hosts": [], "cidrs": [], "dsns": []},
    }


def timed_run(checks: list[dict[str, Any]], doc: dict[str, Any], **kwargs: Any):
    started = time.perf_counter()
    result = run_checks(checks, doc, deadline=utcnow() + RUN_DEADLINE, **kwargs)
    seconds = time.perf_counter() - started
    if result["status"] != "passed":
        failed = [r for r in result["results"] if r["status"] != "passed"][:3]
        raise SystemExit(f"benchmark run did not pass: {result['status']} {failed}")
    return seconds, result


def main() -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(ENDPOINTS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ports = [int(p) for p in child.stdout.readline().split()]  # type: ignore[union-attr]
        doc = manifest(ports)
        checks = [
            {
                "name": f"check-{i}",
                "kind": "http",
                "target": f"svc-{i % ENDPOINTS}",
                "path": "/health",
                "expect": {"status": 200, "json": [{"path": "$.ok", "equals": True}]},
            }
            for i in range(CHECKS)
        ]
        cold = _measure(checks, doc)
        single, _ = timed_run(checks[:1], doc)
        warm = sorted((_measure(checks, doc) for _ in range(WARM_RUNS)), key=lambda m: m[0])
        concurrent, slowest = warm[len(warm) // 2]
        sequential, _ = timed_run(checks, doc, concurrency=1)
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=10)
    ratio = concurrent / slowest
    print(
        f"checks: {CHECKS} over {ENDPOINTS} endpoints  concurrent {concurrent:.2f} s  "
        f"slowest single {slowest:.3f} s  ratio {ratio:.2f}x (goal <= {GOAL}x, "
        f"{'met' if ratio <= GOAL else 'MISSED'})  sequential {sequential:.1f} s"
    )
    print(
        f"  default concurrency {DEFAULT_CONCURRENCY}; median of {WARM_RUNS} warm runs "
        f"(all: {', '.join(f'{m[0]:.2f}' for m in warm)} s)"
    )
    print(
        f"  cold first run {cold[0]:.2f} s, slowest single {cold[1]:.3f} s, ratio "
        f"{cold[0] / cold[1]:.2f}x; one check on an idle runner {single:.3f} s: concurrent is "
        f"{concurrent / single:.2f}x that (warm), {cold[0] / single:.2f}x (cold)"
    )


def _measure(checks: list[dict[str, Any]], doc: dict[str, Any]) -> tuple[float, float]:
    """(wall seconds, slowest check's latency in seconds) of one concurrent run."""
    seconds, result = timed_run(checks, doc)
    return seconds, max(r["latency_ms"] for r in result["results"]) / 1000


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
