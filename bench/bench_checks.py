"""Benchmark of drillkit.checks.run_checks: 200 HTTP checks over 50 local endpoints (~100 ms each).

Run: python bench/bench_checks.py        (about 25 s: the sequential run alone takes ~20 s)

Goal: the concurrent run takes at most 1.5x the slowest single check (max latency_ms of that run).
Reported: the median of warm runs (the headline), the cold first run of the process (thread stacks
not yet cached: what a fresh Airflow task sees), and the ratio to one check on an idle runner.
The endpoints run in a child process, like real sandbox services: in this process they would
compete with the runner for the GIL and measure the harness instead of the runner.
Also reported: a bare asyncio client (no checks, no judging) on the same endpoints, the floor
that the machine and the harness leave.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import timedelta
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


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One endpoint's answer: ~100 ms later, 200 with {"ok": true} when the drill context is
    there (421 otherwise), then the connection closes."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    await asyncio.sleep(ANSWER_SECONDS)
    ok = headers.get("x-drill-context") == CONTEXT
    body = json.dumps({"ok": ok}).encode()
    status = "200 OK" if ok else "421 Misdirected Request"
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    finally:
        writer.close()


def serve(count: int) -> None:
    """Child process: ``count`` endpoints on one event loop (a thread per connection would cost
    the harness more CPU than the runner it measures); prints their ports, serves until stdin
    closes."""

    async def main() -> None:
        servers = [
            await asyncio.start_server(_answer, "127.0.0.1", 0, backlog=256) for _ in range(count)
        ]
        print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


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
        floor = bare_client(ports)
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
    print(
        f"  a bare asyncio client sending the same {CHECKS} GETs (no checks, no judging): "
        f"{floor:.2f} s, {floor / single:.2f}x one check: what the machine and harness leave"
    )


def bare_client(ports: list[int]) -> float:
    """Median seconds of the same 200 GETs from a bare asyncio client: the floor."""

    async def get(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Drill-Context: {CONTEXT}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    async def once() -> float:
        started = time.perf_counter()
        answers = await asyncio.gather(*(get(ports[i % ENDPOINTS]) for i in range(CHECKS)))
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
        return time.perf_counter() - started

    return sorted(asyncio.run(once()) for _ in range(WARM_RUNS))[WARM_RUNS // 2]


def _measure(checks: list[dict[str, Any]], doc: dict[str, Any]) -> tuple[float, float]:
    """(wall seconds, slowest check's latency in seconds) of one concurrent run."""
    seconds, result = timed_run(checks, doc)
    return seconds, max(r["latency_ms"] for r in result["results"]) / 1000


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
