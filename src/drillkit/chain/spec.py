"""Routing-chain drill specs (``kind: routing_chain``): YAML validated with errors naming the file
and the field. Unknown keys are errors, as in restore-drill specs.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from drillkit.chain.model import (
    DEFAULT_THRESHOLDS,
    METRICS,
    TIERS,
    ChainSpec,
    ChaosConfig,
    EscalationConfig,
    FaultPhase,
    PrometheusConfig,
    Remediation,
    RouteConfig,
)
from drillkit.chain.reader import HEADER_RE, NAME_RE, Reader
from drillkit.chain.routes import SERVICE_HOST
from drillkit.chain.spec_route import parse_route
from drillkit.exceptions import DrillError, InvalidInputError
from drillkit.spec import CHAIN_KIND, SCHEDULING_KEYS, scheduling_fields

TOP_KEYS = {
    "kind": f"{CHAIN_KIND}: marks this file as a routing-chain drill",
    "drill": "name ([a-z0-9-]); the DAG id is drill_<name>",
    **SCHEDULING_KEYS,
    "kubernetes_conn_id": "Airflow connection of the cluster (default kubernetes_default)",
    "environment": "environment tag signed into the drill context (default drill)",
    "context_ttl": "lifetime of the signed drill context and the drill rule (default 2h)",
    "production": "{hosts, cidrs, dsns}: what drill traffic must never reach",
    "route": "the fallback chain: mesh, namespace, host, tiers, timeout, retries, ...",
    "chaos": "synthetic drill traffic: url, path, requests, phases, ...",
    "escalation": "thresholds, runbook and remediation",
}
_CHAOS_KEYS = {
    "url",
    "path",
    "method",
    "body",
    "headers",
    "requests",
    "replays",
    "concurrency",
    "request_timeout",
    "deadline",
    "phases",
    "response_schema",
    "prometheus",
    "settle",
}
_RESERVED_HEADERS = {"x-drill-context", "x-idempotency-key", "host", "content-length"}
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
MAX_DEADLINE = 3600.0


def _phase(r: Reader, raw: Any, path: str) -> FaultPhase:
    data = r.mapping(raw, path)
    r.unknown(data, {"name", "abort", "delay"}, path)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise r.fail(f"{path}.name", "required: a short name such as abort-10 ([a-z0-9-])")
    abort_percent, abort_status, delay, delay_percent = None, 503, None, Fraction(100)
    if "abort" in data:
        abort = r.mapping(data["abort"], f"{path}.abort")
        r.unknown(abort, {"percent", "http_status"}, f"{path}.abort")
        abort_percent = r.percent(abort.get("percent"), f"{path}.abort.percent", allow_zero=False)
        abort_status = r.integer(abort, "http_status", f"{path}.abort", 503, 400, 599)
    if "delay" in data:
        spec = r.mapping(data["delay"], f"{path}.delay")
        r.unknown(spec, {"fixed", "percent"}, f"{path}.delay")
        if "fixed" not in spec:
            raise r.fail(f"{path}.delay.fixed", "required: the injected delay, e.g. 500ms or 1.2s")
        delay = r.seconds(spec, "fixed", f"{path}.delay", None)
        delay_percent = r.percent(
            spec.get("percent", 100), f"{path}.delay.percent", allow_zero=False
        )
    percents = ((f"{path}.abort.percent", abort_percent), (f"{path}.delay.percent", delay_percent))
    for at, value in percents:
        # Envoy's FractionalPercent (denominator MILLION) carries 4 decimals of a percent.
        if value is not None and (value * 10_000).denominator != 1:
            raise r.fail(at, "at most 4 decimals (Envoy counts faults in millionths)")
    return FaultPhase(name, abort_percent, abort_status, delay, delay_percent)


def _chaos(r: Reader, raw: Any) -> ChaosConfig:
    data = r.mapping(raw, "chaos")
    r.unknown(data, _CHAOS_KEYS, "chaos")
    path = data.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise r.fail("chaos.path", "a request path starting with /")
    method = data.get("method", "GET")
    if method not in ("GET", "POST", "PUT"):
        raise r.fail("chaos.method", "GET, POST or PUT (each request carries an idempotency key)")
    headers = dict(r.mapping(data.get("headers", {}), "chaos.headers"))
    for key, value in headers.items():
        if not HEADER_RE.match(str(key)) or str(key).lower() in _RESERVED_HEADERS:
            raise r.fail(
                f"chaos.headers.{key}",
                "a header name drillkit does not set itself (it sends X-Drill-Context and "
                "X-Idempotency-Key)",
            )
        if not isinstance(value, str):
            raise r.fail(f"chaos.headers.{key}", "a string value")
    requests = r.integer(data, "requests", "chaos", 100, 1, MAX_REQUESTS)
    replays = r.integer(data, "replays", "chaos", min(10, requests), 0, requests)
    request_timeout = r.seconds(data, "request_timeout", "chaos", "5s")
    deadline = r.seconds(data, "deadline", "chaos", "10m")
    if deadline > MAX_DEADLINE:
        raise r.fail("chaos.deadline", "at most 1h: a drill is bounded")
    if request_timeout > deadline:
        raise r.fail("chaos.request_timeout", "must not exceed chaos.deadline")
    phases_raw = data.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise r.fail(
            "chaos.phases", "required: a list of fault phases, e.g. [{name: abort-10, ...}]"
        )
    phases = tuple(_phase(r, p, f"chaos.phases[{i}]") for i, p in enumerate(phases_raw))
    names = [p.name for p in phases]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise r.fail(f"chaos.phases[{index}].name", f"{name!r} is used twice; names are unique")
    schema = data.get("response_schema")
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except (jsonschema.SchemaError, TypeError) as exc:
            message = getattr(exc, "message", str(exc))
            raise r.fail("chaos.response_schema", f"not a valid JSON schema: {message}") from exc
    prometheus = None
    if data.get("prometheus") is not None:
        prom = r.mapping(data["prometheus"], "chaos.prometheus")
        r.unknown(prom, {"url", "query", "timeout"}, "chaos.prometheus")
        query = prom.get("query")
        if not isinstance(query, str) or not query.strip():
            raise r.fail(
                "chaos.prometheus.query",
                "required: a PromQL ratio (0..1) of fallback answers, e.g. "
                "sum(rate(fallback_total[${window}])) / sum(rate(requests_total[${window}]))",
            )
        prometheus = PrometheusConfig(
            url=r.url(prom.get("url"), "chaos.prometheus.url"),
            query=query.strip(),
            timeout=r.seconds(prom, "timeout", "chaos.prometheus", "10s"),
        )
    return ChaosConfig(
        url=r.url(data.get("url"), "chaos.url"),
        path=path,
        method=method,
        body=data.get("body"),
        headers={str(k): v for k, v in headers.items()},
        requests=requests,
        replays=replays,
        concurrency=r.integer(data, "concurrency", "chaos", 4, 1, MAX_CONCURRENCY),
        request_timeout=request_timeout,
        deadline=deadline,
        phases=phases,
        response_schema=dict(schema) if schema is not None else None,
        prometheus=prometheus,
        settle=r.seconds(data, "settle", "chaos", "5s", zero=True),
    )


def _thresholds(r: Reader, raw: Any) -> dict[str, dict[str, Fraction]]:
    thresholds = {metric: dict(levels) for metric, levels in DEFAULT_THRESHOLDS.items()}
    data = r.mapping(raw, "escalation.thresholds")
    r.unknown(data, set(METRICS), "escalation.thresholds")
    for metric, levels_raw in data.items():
        at = f"escalation.thresholds.{metric}"
        levels = r.mapping(levels_raw if levels_raw is not None else {}, at)
        r.unknown(levels, {"P1", "P2"}, at)
        parsed = {sev: r.percent(v, f"{at}.{sev}", allow_zero=True) for sev, v in levels.items()}
        if "P1" in parsed and "P2" in parsed and parsed["P1"] <= parsed["P2"]:
            raise r.fail(
                f"{at}.P1",
                "must be above P2: a rate over P1 is also over P2, so P2 would never fire",
            )
        thresholds[str(metric)] = parsed  # replaces the default; {} switches the metric off
    return thresholds


def _remediation(r: Reader, raw: Any, route: RouteConfig) -> Remediation:
    path = "escalation.remediation"
    data = r.mapping(raw, path)
    r.unknown(data, {"shift_to_static_cache", "min_severity", "weights"}, path)
    enabled = data.get("shift_to_static_cache", False)
    if not isinstance(enabled, bool):
        raise r.fail(f"{path}.shift_to_static_cache", "true or false")
    min_severity = data.get("min_severity", "P1")
    if min_severity not in ("P1", "P2"):
        raise r.fail(f"{path}.min_severity", "P1 (default) or P2: the least severity that shifts")
    weights_raw = r.mapping(data.get("weights", {}), f"{path}.weights")
    r.unknown(weights_raw, set(TIERS), f"{path}.weights")
    weights = {t: r.integer(weights_raw, t, f"{path}.weights", 0, 0, 100) for t in TIERS}
    if enabled:
        if sum(weights.values()) != 100:
            raise r.fail(
                f"{path}.weights",
                f"weights sum to {sum(weights.values())}; they must sum to 100 "
                "(e.g. {primary: 0, secondary: 20, static-cache: 80})",
            )
        declared = route.tier("static-cache").weight
        if weights["static-cache"] <= declared:
            raise r.fail(
                f"{path}.weights.static-cache",
                f"{weights['static-cache']} does not shift weight to the static cache (the chain "
                f"already gives it {declared}); raise it above {declared}",
            )
    return Remediation(enabled, min_severity, weights)


def _escalation(r: Reader, raw: Any, route: RouteConfig) -> EscalationConfig:
    data = r.mapping(raw if raw is not None else {}, "escalation")
    r.unknown(data, {"window", "thresholds", "runbook_url", "runbook", "remediation"}, "escalation")
    runbook = data.get("runbook", [])
    if not isinstance(runbook, list) or not all(isinstance(s, str) and s for s in runbook):
        raise r.fail("escalation.runbook", "a list of steps (strings) added to the built-in ones")
    runbook_url = data.get("runbook_url")
    if runbook_url is not None:
        runbook_url = r.url(runbook_url, "escalation.runbook_url")
    return EscalationConfig(
        window=r.seconds(data, "window", "escalation", "10m"),
        thresholds=_thresholds(r, data.get("thresholds", {})),
        runbook_url=runbook_url,
        runbook=tuple(runbook),
        remediation=_remediation(r, data.get("remediation", {}), route),
    )


def parse_chain_spec(data: Any, *, source: str = "<spec>") -> ChainSpec:
    """Validate a loaded YAML mapping; raise SpecError naming ``source`` and the field path.

    The route's guard rules (timeout budget, weights, production destinations) run here too, so
    a bad chain fails when the DAG is parsed, long before anything is applied.
    """
    from drillkit.chain.guards import check_chain
    from drillkit.routing.guard import ProductionGuard

    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, TOP_KEYS, "")
    if top.get("kind") != CHAIN_KIND:
        raise r.fail("kind", f"required: {CHAIN_KIND} (restore drills use drillkit.spec instead)")
    name = top.get("drill")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise r.fail("drill", "required: the drill's name, [a-z0-9][a-z0-9-]* (at most 41)")
    conn_id = top.get("kubernetes_conn_id", "kubernetes_default")
    if not isinstance(conn_id, str) or not conn_id:
        raise r.fail("kubernetes_conn_id", "an Airflow connection id")
    environment = top.get("environment", "drill")
    try:
        from drillkit.routing.context import MAX_TTL_SECONDS, validate_environment

        validate_environment(environment)
    except InvalidInputError as exc:
        raise r.fail("environment", str(exc)) from exc
    context_ttl = int(r.seconds(top, "context_ttl", "", "2h"))
    if context_ttl > MAX_TTL_SECONDS:
        raise r.fail("context_ttl", "at most 7d: a drill context is a short-lived ticket")
    production = dict(r.mapping(top.get("production", {}), "production"))
    try:
        guard = ProductionGuard.from_spec(production)
    except InvalidInputError as exc:
        raise r.fail("production", str(exc)) from exc
    route = parse_route(r, top.get("route"), name)
    chaos = _chaos(r, top.get("chaos"))
    if context_ttl < chaos.deadline:
        raise r.fail("context_ttl", "must outlive chaos.deadline: the drill rule matches it")
    if route.mesh == "gateway_api":
        for index, phase in enumerate(chaos.phases):
            if phase.has_fault:
                raise r.fail(
                    f"chaos.phases[{index}]",
                    "Gateway API HTTPRoute (standard channel) has no fault injection: use "
                    "mesh: istio, or keep only baseline phases (name only) and inject faults in "
                    "the upstream",
                )
    if route.mesh == "istio" and any(p.has_fault for p in chaos.phases):
        primary = route.tier("primary")
        if not SERVICE_HOST.match(primary.host):
            raise r.fail(
                "route.tiers.primary.host",
                "fault phases go on the primary's pods: it must be a Service host "
                "<name>.<namespace>.svc[.cluster.local] (its namespace holds the fault filter)",
            )
        if not primary.labels:
            raise r.fail(
                "route.tiers.primary.labels",
                "required with fault phases: the labels of the primary's pods, e.g. "
                "{app: checkout-api}; the fault filter goes on their inbound side only",
            )
    escalation = _escalation(r, top.get("escalation"), route)
    try:
        check_chain(route, guard=guard, chaos_url=chaos.url)
    except DrillError as exc:
        raise r.fail(exc.details.get("path", "route"), exc.message) from exc
    return ChainSpec(
        name=name,
        source=source,
        **scheduling_fields(top, r.fail),
        kubernetes_conn_id=conn_id,
        environment=environment,
        context_ttl=context_ttl,
        production=guard.to_dict(),
        route=route,
        chaos=chaos,
        escalation=escalation,
        raw=dict(top),
    )


def load_chain_spec(path: str | Path) -> ChainSpec:
    """Read and validate a routing-chain spec file."""
    from drillkit.spec import read_spec_file

    return parse_chain_spec(read_spec_file(path), source=str(path))
