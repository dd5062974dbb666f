"""The check runner: warm-up first, then the timed checks, concurrently under a bound, each within
its timeout, every target resolved through the routing manifest; returns ``drillkit.validation/v1``.

HTTP checks run as coroutines on one event loop per phase; sql, tcp, pitr and integrity checks
block, one worker thread each. Both report to the same watchdog, which gives up on a check past
its budget and cancels it (a coroutine is cancelled, a blocking client has its socket shut).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drillkit.checks import http, integrity, pitr, sql, tcp
from drillkit.checks.results import (
    CHECK_ERRORED,
    SANDBOX_UNREACHABLE,
    TARGET_KIND_MISMATCH,
    VERDICT_CODES,
    WRITE_CHECK_REFUSED,
    CheckResult,
    CheckTimedOut,
    EndpointUnreachable,
    Outcome,
    build_validation,
    seconds_text,
)
from drillkit.checks.spec import POSTGRES_KINDS, CheckSpec, HttpConfig, SqlConfig, parse_checks
from drillkit.exceptions import DrillError, InvalidInputError, RoutingError
from drillkit.findings import Finding
from drillkit.routing.guard import ProductionGuard
from drillkit.routing.resolve import UnresolvableHostError
from drillkit.timeutil import utcnow

try:
    from drillkit.routing.manifest import resolve_target
except ImportError:  # drillkit.routing is written alongside; until it lands, read the manifest here

    def resolve_target(manifest: Mapping[str, Any], service: str) -> dict[str, Any]:
        services = manifest.get("services") or {}
        if service not in services:  # refused exactly like the real one: no fallback target
            raise RoutingError(
                f"service {service!r} is not in the routing manifest; fix the check's target",
                code="TARGET_NOT_IN_MANIFEST",
            )
        return dict(services[service])


MANIFEST_SCHEMA = "drillkit.routing_manifest/v1"
# All checks of a typical drill in flight at once (threads mostly wait on sockets): on 2 cores,
# 200 HTTP checks over 50 endpoints take ~1.1-1.2x their slowest check (bench/bench_checks.py);
# a bound of 16 would queue them into 13 waves.
DEFAULT_CONCURRENCY = 256
# A sandbox keeps PostgreSQL's default max_connections (100): postgres checks share a small cap.
POSTGRES_CONNECTIONS_PER_SERVICE = 8
# A runner's own I/O timeouts fire at the budget and say more (unreachable vs slow): let them win.
_WATCHDOG_GRACE_SECONDS = 0.25

Runner = Callable[["CheckContext"], Outcome]
# HTTP checks run as coroutines in one event loop per phase (http.run_http_check); these others
# block, one worker thread each.
_RUNNERS: dict[str, Runner] = {
    "sql": sql.run_sql_check,
    "tcp": tcp.run_tcp_check,
    "pitr": pitr.run_pitr_check,
    "integrity": integrity.run_integrity_check,
}


@dataclass(kw_only=True, eq=False)
class CheckContext:
    """One check's run: its manifest entry, shared clients, time budget and cancel hooks."""

    spec: CheckSpec
    service: str
    entry: Mapping[str, Any]
    drill_id: str
    drill_header: tuple[str, str] | None
    http_origins: frozenset[tuple[str, str, int]]
    guard: ProductionGuard = field(default_factory=ProductionGuard)
    budget: float = 0.0
    started: float = 0.0
    cancelled: bool = False
    _cancels: list[Callable[[], object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self) -> float:
        return self.started + self.budget - time.monotonic()

    def pin(self, host: str, port: int, database: str | None = None) -> tuple[str, ...]:
        """The addresses to connect to for ``host``: resolved once and judged by the guard.

        Connecting to this address (never to the name again) is what makes the guard's judgement
        hold. Raises ProductionTargetRefusedError, or EndpointUnreachable when the name does not
        resolve (the check is an error saying so, never a pass).
        """
        try:
            return self.guard.pin(host, port, database, service=self.service)
        except UnresolvableHostError as exc:
            raise EndpointUnreachable(str(exc)) from exc

    def begin(self, run_deadline: float | None) -> bool:
        """Start the clock; False when the check was given up before it started."""
        with self._lock:
            now = time.monotonic()
            left = self.spec.timeout if run_deadline is None else run_deadline - now
            if self.cancelled or left <= 0:
                return False
            self.started, self.budget = now, min(self.spec.timeout, left)
            return True

    def give_up_unstarted(self) -> bool:
        with self._lock:
            if self.started:
                return False
            self.cancelled = True
            return True

    def on_cancel(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if not self.cancelled:
                self._cancels.append(callback)
                return
        _quietly(callback)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            callbacks, self._cancels = self._cancels, []
        for callback in callbacks:
            _quietly(callback)


def _quietly(callback: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # cancelling something already closed is fine
        callback()


def run_checks(
    checks: Sequence[CheckSpec] | Sequence[Mapping[str, Any]],
    manifest: Mapping[str, Any],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    params: Mapping[str, Any] | None = None,
    deadline: datetime | None = None,
    sandbox: Mapping[str, Any] | None = None,
    guard: ProductionGuard | None = None,
) -> dict[str, Any]:
    """Run ``checks`` against the manifest's endpoints and return ``drillkit.validation/v1``.

    ``params`` fills run-time inputs of pitr checks (see ``pitr.bind_params``); ``deadline`` (an
    aware datetime) bounds the whole run; ``sandbox`` (the tier's sandbox record) gives checks of
    its postgres services its check roles, and its isolation warnings to the findings. Bad input
    raises InvalidInputError before any I/O. ``guard`` (default: the manifest's own
    ``production`` block) judges every address a check connects to; checks connect to the
    address it judged.
    """
    specs = [c for c in checks if isinstance(c, CheckSpec)]
    if len(specs) != len(checks):
        specs = parse_checks(list(checks))
    elif len({s.name for s in specs}) != len(specs):
        raise InvalidInputError("check names must be unique; parse the spec with parse_checks()")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(f"concurrency {concurrency!r} must be an integer >= 1")
    if not isinstance(manifest, Mapping) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise InvalidInputError(f"the manifest is not a {MANIFEST_SCHEMA} document")
    specs = pitr.bind_params(specs, params)
    manifest = sql.with_sandbox_login(manifest, sandbox)
    if guard is None:
        guard = ProductionGuard.from_spec(manifest.get("production"))
    run = _Run(manifest, specs, concurrency=concurrency, deadline=deadline, guard=guard)
    warm = run.phase([s for s in specs if s.warmup], warmup=True)
    timed = run.phase([s for s in specs if not s.warmup], warmup=False)
    findings = [*isolation_findings(sandbox), *run.findings]
    return build_validation(results=timed, warmup=warm, findings=findings)


def isolation_findings(sandbox: Mapping[str, Any] | None) -> list[Finding]:
    """Warnings for isolation layers the sandbox record says were not in effect."""
    found = []
    for warning in ((sandbox or {}).get("isolation") or {}).get("warnings") or []:
        if isinstance(warning, Mapping) and warning.get("code"):
            found.append(
                Finding(
                    code=str(warning["code"]),
                    message=str(warning.get("message")),
                    severity="warning",
                    subject=str((sandbox or {}).get("id")),
                )
            )
    return found


@dataclass(eq=False)
class _Job:
    index: int
    ctx: CheckContext
    semaphore: threading.Semaphore | None


class _Run:
    """State shared by the checks of one run: clients, connection caps, findings, dead services."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        specs: list[CheckSpec],
        *,
        concurrency: int,
        deadline: datetime | None,
        guard: ProductionGuard,
    ) -> None:
        self.manifest = manifest
        self.guard = guard
        self.concurrency = concurrency
        self.deadline = None
        if deadline is not None:
            self.deadline = time.monotonic() + (deadline - utcnow()).total_seconds()
        self._found: list[tuple[int, int, Finding]] = []
        self.unreachable: set[str] = set()
        self.pg_slots: dict[str, threading.Semaphore] = {}
        self.drill_id = str(manifest.get("drill_id") or "")
        http_specs = [s for s in specs if isinstance(s.config, HttpConfig)]
        self.header = _drill_header(manifest) if http_specs else None
        unsafe = [s for s in http_specs if s.config.method in http.UNSAFE_METHODS]  # type: ignore[union-attr]
        if unsafe and not self.drill_id:
            raise InvalidInputError(
                "the manifest has no drill_id, needed to derive idempotency keys for POST, PUT, "
                "PATCH and DELETE checks; pass the manifest built by drillkit.routing"
            )
        self.origins = http.http_origins(manifest.get("services") or {})

    @property
    def findings(self) -> list[Finding]:
        return [finding for _index, _seq, finding in sorted(self._found, key=lambda f: f[:2])]

    def phase(self, specs: list[CheckSpec], *, warmup: bool) -> list[CheckResult]:
        results: dict[int, CheckResult] = {}
        jobs: list[_Job] = []
        for index, spec in enumerate(specs):
            prepared = self._prepare(spec)
            if isinstance(prepared, CheckContext):
                jobs.append(_Job(index, prepared, self._slot(spec, prepared.service)))
            else:
                results[index] = self._finish(spec, prepared, None, warmup)
        if jobs:
            self._execute(jobs, results, warmup)
        return [results[i] for i in range(len(specs))]

    def _prepare(self, spec: CheckSpec) -> CheckContext | DrillError:
        """Resolve the target through the manifest and refuse what must not run; no I/O here."""
        try:
            entry = resolve_target(self.manifest, spec.target)
        except RoutingError as exc:
            return exc
        endpoint = entry.get("endpoint") or {}
        if spec.kind in POSTGRES_KINDS and entry.get("kind") != "postgres":
            return DrillError(
                f"a {spec.kind} check needs a postgres service, but {spec.target} is "
                f"{entry.get('kind')!r}: target the database's service",
                code=TARGET_KIND_MISMATCH,
            )
        if isinstance(spec.config, HttpConfig) and not endpoint.get("url"):
            return DrillError(
                f"an http check needs a service with an endpoint url; {spec.target} has none",
                code=TARGET_KIND_MISMATCH,
            )
        if isinstance(spec.config, SqlConfig) and spec.config.write and not sql.is_sandbox(entry):
            return DrillError(
                f"it writes (write: true) but {spec.target} was resolved by "
                f"{entry.get('resolved_by')!r}, not provisioned by this drill: writes go only to "
                "a sandbox drillkit provisioned; drop write: true or target the sandbox",
                code=WRITE_CHECK_REFUSED,
            )
        return CheckContext(
            spec=spec,
            service=spec.target,
            entry=entry,
            drill_id=self.drill_id,
            drill_header=self.header,
            http_origins=self.origins,
            guard=self.guard,
        )

    def _slot(self, spec: CheckSpec, service: str) -> threading.Semaphore | None:
        if spec.kind not in POSTGRES_KINDS:
            return None
        return self.pg_slots.setdefault(
            service, threading.Semaphore(POSTGRES_CONNECTIONS_PER_SERVICE)
        )

    def _execute(self, jobs: list[_Job], results: dict[int, CheckResult], warmup: bool) -> None:
        inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        # ("start", job) when a blocking check starts; ("done", [(job, payload, elapsed), ...])
        # when checks finish: one at a time from a thread, in batches from the event loop.
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        http_jobs = [job for job in jobs if job.ctx.spec.kind == "http"]
        blocking = [job for job in jobs if job.ctx.spec.kind != "http"]
        for job in blocking:
            inbox.put(job)
        for _ in range(min(self.concurrency, len(blocking))):
            self._spawn(inbox, events)
        if http_jobs:
            _thread.start_new_thread(asyncio.run, (self._work_http(http_jobs, events),))
        open_jobs = set(jobs)
        running: dict[_Job, float] = {}  # job -> when its budget ends
        while open_jobs:
            try:
                kind, what = events.get(timeout=self._wait(running))
                if kind == "start" and what in open_jobs:
                    running[what] = what.ctx.started + what.ctx.budget
                for job, payload, elapsed in what if kind == "done" else ():
                    if job in open_jobs:
                        running.pop(job, None)
                        open_jobs.discard(job)
                        results[job.index] = self._finish(job.ctx.spec, payload, elapsed, warmup)
            except queue.Empty:
                pass
            now = time.monotonic()
            for job in [j for j, ends in running.items() if now >= ends + _WATCHDOG_GRACE_SECONDS]:
                del running[job]
                open_jobs.discard(job)
                job.ctx.cancel()
                elapsed = now - job.ctx.started
                results[job.index] = self._finish(
                    job.ctx.spec, _over_budget(job.ctx), elapsed, warmup
                )
                self._spawn(inbox, events)  # the stuck thread no longer counts
            if self.deadline is not None and now >= self.deadline:
                for job in [j for j in open_jobs if j not in running]:
                    if job.ctx.give_up_unstarted():
                        open_jobs.discard(job)
                        late = CheckTimedOut("not started: the run's deadline had passed")
                        results[job.index] = self._finish(job.ctx.spec, late, None, warmup)

    def _wait(self, running: dict[_Job, float]) -> float | None:
        """Seconds until the watchdog must look again: a budget or the run's deadline ends."""
        wake = [ends + _WATCHDOG_GRACE_SECONDS for ends in running.values()]
        if self.deadline is not None:
            late = time.monotonic() >= self.deadline
            wake.append(self.deadline + (_WATCHDOG_GRACE_SECONDS if late else 0))
        return max(min(wake) - time.monotonic(), 0) if wake else None

    def _spawn(self, inbox: queue.SimpleQueue[_Job], events: queue.SimpleQueue[Any]) -> None:
        # A bare thread, like a daemon one: a check stuck past its timeout must not keep the
        # process alive. Not threading.Thread: its start() waits until the new thread holds the
        # GIL, which staggers 200 starts behind running checks (bench: ~0.33 s -> ~0.28 s).
        _thread.start_new_thread(self._work, (inbox, events))

    def _work(self, inbox: queue.SimpleQueue[_Job], events: queue.SimpleQueue[Any]) -> None:
        while True:
            try:
                job = inbox.get_nowait()
            except queue.Empty:
                return
            if job.semaphore is not None:
                job.semaphore.acquire()
            try:
                if not job.ctx.begin(self.deadline):
                    continue
                events.put(("start", job))
                started = time.perf_counter()
                payload: Outcome | BaseException
                if job.ctx.service in self.unreachable:  # never hammer a service known to be down
                    payload = EndpointUnreachable(f"not run: {job.ctx.service} was unreachable")
                else:
                    try:
                        payload = _RUNNERS[job.ctx.spec.kind](job.ctx)
                    except Exception as exc:
                        payload = exc
                events.put(("done", [(job, payload, time.perf_counter() - started)]))
            finally:
                if job.semaphore is not None:
                    job.semaphore.release()

    async def _work_http(self, jobs: list[_Job], events: queue.SimpleQueue[Any]) -> None:
        """Every HTTP check of the phase in this thread's event loop, ``concurrency`` at a time,
        each cancelled at its budget (the watchdog's rule, kept in the loop). Results reach the
        watchdog in batches, one per loop pass: a wake-up per check costs GIL hand-offs."""
        loop = asyncio.get_running_loop()
        bound = asyncio.Semaphore(self.concurrency)
        finished: list[tuple[_Job, Any, float]] = []

        def flush() -> None:  # one wake-up of the watchdog per loop pass, not one per check
            events.put(("done", finished[:]))
            finished.clear()

        async def run(job: _Job) -> None:
            async with bound:
                if not job.ctx.begin(self.deadline):
                    return
                started = time.perf_counter()
                payload: Outcome | BaseException
                if job.ctx.service in self.unreachable:
                    payload = EndpointUnreachable(f"not run: {job.ctx.service} was unreachable")
                else:
                    try:  # the watchdog's budget, kept here: the coroutine is cancelled at it
                        async with asyncio.timeout(job.ctx.budget + _WATCHDOG_GRACE_SECONDS):
                            payload = await http.run_http_check(job.ctx)
                    except TimeoutError:
                        payload = _over_budget(job.ctx)
                    except Exception as exc:
                        payload = exc
                if not finished:
                    loop.call_soon(flush)
                finished.append((job, payload, time.perf_counter() - started))

        await asyncio.gather(*(run(job) for job in jobs))

    def _finish(
        self,
        spec: CheckSpec,
        payload: Outcome | BaseException,
        elapsed: float | None,
        warmup: bool,
    ) -> CheckResult:
        expectation = _expectation(spec)
        if isinstance(payload, Outcome):
            status, observed, detail = payload.status, payload.observed, payload.detail
            expectation = payload.expectation or expectation
            findings = list(payload.findings)
        else:
            status, observed, detail = "error", None, str(payload)
            findings = [self._finding_for(spec, payload)]
            if isinstance(payload, EndpointUnreachable):
                self.unreachable.add(spec.target)
        for finding in findings:
            if warmup and finding.code not in VERDICT_CODES and finding.severity == "error":
                finding = dataclasses.replace(finding, severity="warning")
            # Sorted by the check's place in the spec later: completion order is not stable.
            self._found.append((spec.index, len(self._found), finding))
        return CheckResult(
            name=spec.name,
            kind=spec.kind,
            target=spec.target,
            status=status,
            latency_ms=None if elapsed is None else round(elapsed * 1000, 1),
            observed=observed,
            expectation=expectation,
            detail=detail,
            warmup=warmup,
        )

    def _finding_for(self, spec: CheckSpec, exc: BaseException) -> Finding:
        if isinstance(exc, EndpointUnreachable):
            return Finding(
                code=SANDBOX_UNREACHABLE,
                message=f"{spec.target} did not accept a connection ({exc}): check that the "
                "sandbox is up and the manifest endpoint is right; drillkit does not try any "
                "other endpoint",
                subject=spec.target,
            )
        if isinstance(exc, CheckTimedOut):
            return Finding(
                code=exc.code,
                message=f"check {spec.name} did not finish in time ({exc}): raise its timeout if "
                f"{spec.target} is just slow, or find out why it hangs",
                subject=spec.name,
            )
        if isinstance(exc, RoutingError):  # the manifest refused the target: about the service
            return Finding(code=exc.code, message=exc.message, subject=spec.target)
        if isinstance(exc, DrillError):
            return Finding(code=exc.code, message=f"check {spec.name}: {exc}", subject=spec.name)
        return Finding(
            code=CHECK_ERRORED,
            message=f"check {spec.name} crashed with {type(exc).__name__}: {exc}; this is a "
            "drillkit bug or an unexpected answer from the service",
            subject=spec.name,
        )


def _over_budget(ctx: CheckContext) -> CheckTimedOut:
    cut = " (the run's deadline)" if ctx.budget < ctx.spec.timeout else ""
    return CheckTimedOut(f"timed out after {seconds_text(ctx.budget)}{cut}")


def _expectation(spec: CheckSpec) -> str:
    config = spec.config
    if spec.kind == "sql":
        return config.expect.describe()  # type: ignore[union-attr]
    if spec.kind == "http":
        return http.describe(config)  # type: ignore[arg-type]
    if spec.kind == "pitr":
        return pitr.describe(config)  # type: ignore[arg-type]
    if spec.kind == "integrity":
        return integrity.EXPECTATION
    return tcp.describe(spec.timeout)


def _drill_header(manifest: Mapping[str, Any]) -> tuple[str, str]:
    context = manifest.get("context")
    if (
        not isinstance(context, Mapping)
        or not isinstance(context.get("header"), str)
        or not isinstance(context.get("value"), str)
        or not context["value"]
    ):
        raise InvalidInputError(
            "the manifest has no signed drill context (context.header and context.value): HTTP "
            "checks cannot be routed to the sandbox without it; pass the manifest built by "
            "drillkit.routing"
        )
    return context["header"], context["value"]
