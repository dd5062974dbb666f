"""The chaos drill: for each fault phase, set the fault on the drill rule, send N synthetic
requests carrying the signed drill context and an idempotency key, replay some keys, measure.

Bounded three ways: N requests a phase, a per-request timeout, and one deadline for the drill;
what the deadline cuts off is reported as not sent, and the result is then incomplete.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from drillkit.chain.measure import Answer, phase_figures, schema_check
from drillkit.chain.model import CONTEXT_HEADER, ChaosConfig, FaultPhase
from drillkit.checks.http import MAX_BODY_BYTES, idempotency_key
from drillkit.checks.spec import IDEMPOTENCY_HEADER
from drillkit.exceptions import DrillError
from drillkit.timeutil import isoformat, utcnow

CHAOS_SCHEMA = "drillkit.chaos/v1"
Clock = Callable[[], float]
SetFault = Callable[[FaultPhase | None], None]


def new_session(*, pool_size: int) -> requests.Session:
    """One pooled session for a chaos drill's requests to the chain, with no retries of its own
    (the chain's retries are what is measured) and nothing from the environment: proxies and
    .netrc would send drill traffic, and credentials, elsewhere."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _Sender:
    def __init__(
        self, config: ChaosConfig, *, context_value: str, deadline_at: float, clock: Clock
    ) -> None:
        self.config = config
        self.context_value = context_value
        self.deadline_at = deadline_at
        self.clock = clock
        self.session = new_session(pool_size=config.concurrency)
        self.url = config.url + config.path

    def close(self) -> None:
        self.session.close()

    def send(self, key: str) -> Answer:
        remaining = self.deadline_at - self.clock()
        if remaining <= 0:
            return Answer(key, None, error="not sent: the drill's deadline passed", sent=False)
        headers = {**self.config.headers, CONTEXT_HEADER: self.context_value}
        headers[IDEMPOTENCY_HEADER] = key
        body = None
        if self.config.body is not None and self.config.method != "GET":
            body = json.dumps(self.config.body).encode()
            headers.setdefault("Content-Type", "application/json")
        started = time.perf_counter()
        try:
            with self.session.request(
                self.config.method,
                self.url,
                headers=headers,
                data=body,
                timeout=min(self.config.request_timeout, remaining),
                allow_redirects=False,  # a redirect could leave the chain (and reach anything)
                stream=True,
            ) as response:
                content = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
                latency = time.perf_counter() - started
                return Answer(
                    key,
                    response.status_code,
                    content,
                    {k.lower(): v for k, v in response.headers.items()},
                    latency,
                )
        except requests.RequestException as exc:
            return Answer(
                key, None, latency=time.perf_counter() - started, error=type(exc).__name__
            )

    def send_all(self, keys: Sequence[str]) -> list[Answer]:
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="chaos") as pool:
            return list(pool.map(self.send, keys))


def phase_keys(drill_id: str, phase: str, attempt: int, count: int) -> list[str]:
    # The try number is in the key: a retried task must measure fresh answers, not replays of
    # the previous try's.
    return [idempotency_key(drill_id, f"chaos/{phase}/{attempt}/{i}") for i in range(count)]


def run_chaos(
    config: ChaosConfig,
    *,
    budget: float,
    context_value: str,
    drill_id: str,
    set_fault: SetFault,
    settle: float = 0.0,
    attempt: int = 1,
    clock: Clock = time.monotonic,
    prometheus: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every phase in order; the fault is cleared at the end whatever happens."""
    started_at = isoformat(utcnow())
    deadline_at = clock() + config.deadline
    sender = _Sender(config, context_value=context_value, deadline_at=deadline_at, clock=clock)
    check = schema_check(config.response_schema)
    phases: list[dict[str, Any]] = []
    try:
        for phase in config.phases:
            if clock() >= deadline_at:
                phases.append({"name": phase.name, "complete": False, "skipped": "deadline"})
                continue
            set_fault(phase)
            if settle:
                time.sleep(min(settle, max(0.0, deadline_at - clock())))
            keys = phase_keys(drill_id, phase.name, attempt, config.requests)
            first = sender.send_all(keys)
            by_key = {a.key: a for a in first}
            again = sender.send_all(keys[: config.replays])
            pairs = [(by_key[a.key], a) for a in again if a.sent]
            phases.append(phase_figures(phase, first, pairs, budget=budget, check=check))
    except BaseException:
        # Best effort, never masking the error: the teardown task removes the drill rule anyway.
        with contextlib.suppress(Exception):
            set_fault(None)
        raise
    else:
        set_fault(None)
    finally:
        sender.close()
    result: dict[str, Any] = {
        "schema": CHAOS_SCHEMA,
        "drill_id": drill_id,
        "target": sender.url,
        "budget_ms": round(budget * 1000, 3),
        "requests_per_phase": config.requests,
        "replays_per_phase": config.replays,
        "started_at": started_at,
        "finished_at": isoformat(utcnow()),
        "complete": all(p.get("complete") for p in phases),
        "phases": phases,
        "prometheus": None,
    }
    if prometheus is not None:
        try:
            result["prometheus"] = prometheus()
        except DrillError as exc:
            # Recorded, not raised: the answers' figures still count (an error rate that pages
            # P1 must not hide behind a Prometheus outage), and the gate adds a P3 for this.
            result["prometheus"] = {"source": "prometheus", "error": exc.to_dict()}
    return result
