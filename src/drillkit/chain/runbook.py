"""The steps a paged person follows, written from the chain's own names (hosts, namespace, route).

Built-in steps come first, per metric that fired; the spec's own steps and URL follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from drillkit.chain import routes
from drillkit.chain.model import EscalationConfig, RouteConfig
from drillkit.k8s.route_objects import duration


def _metric_steps(metric: str, route: RouteConfig) -> list[str]:
    primary, secondary = route.tier("primary"), route.tier("secondary")
    cache = route.tier("static-cache")
    steps = {
        "fallback_rate": [
            f"Check the primary tier {primary.host}: ready endpoints, recent deploys and its own "
            "5xx rate; a fallback rate that rises with the injected delay means the per-try "
            f"timeout ({duration(route.retries.per_try_timeout)}) is too tight for primary.",
            f"Look for outlier ejections of primary (DestinationRule {routes.dr_name(route)}): "
            f"istioctl proxy-config endpoint <client-pod> --cluster "
            f"'outbound|{primary.port}||{primary.host}'.",
        ],
        "error_rate": [
            f"Requests failed end to end: check that {secondary.host} and {cache.host} answer; a "
            "5xx without x-mesh-routing-tier is an abort no tier absorbed.",
        ],
        "schema_failure_rate": [
            "Answers do not fit the response schema: the phase's 'tiers' and the schema samples "
            f"show which tier served them; a stale static cache ({cache.host}) is the usual "
            "cause: refresh its content.",
        ],
        "replay_mismatch_rate": [
            "Replayed idempotency keys got different answers: the routing API's idempotency "
            "store is not shared by every tier (or expires too early), so retried writes can "
            "repeat; check the listed keys in the routing API's logs.",
        ],
        "over_budget_rate": [
            f"Requests took longer than the global timeout ({duration(route.timeout)}): callers "
            "time out before the chain answers; check primary latency and the retry budget.",
        ],
    }
    return steps.get(metric, [])


def runbook_steps(
    route: RouteConfig,
    escalation: EscalationConfig,
    *,
    reasons: Iterable[Mapping[str, Any]],
    remediate: bool,
) -> list[str]:
    reasons = list(reasons)
    kind = "httproute" if route.mesh == "gateway_api" else "virtualservice"
    name = routes.vs_name(route)
    steps = [
        f"Confirm the drill left no fault behind: kubectl -n {route.namespace} get {kind} {name} "
        "-o yaml shows no rule named 'drill' (the teardown task removes it)"
        + (
            f", and kubectl get envoyfilter -A -l {routes.CHAIN_LABEL}={route.name} lists nothing."
            if route.mesh == "istio"
            else "."
        ),
    ]
    clear = (
        f"kubectl -n {route.namespace} annotate {kind} {name} {routes.REMEDIATED_AT}- "
        f"{routes.REMEDIATION_ANNOTATION}-"
    )
    if any(r["code"] == "CHAIN_REMEDIATION_IN_EFFECT" for r in reasons):
        steps.append(
            "An earlier run shifted production weight to the static cache and drills wait for a "
            f"person: once primary is healthy, set the production rule's weights back by hand "
            f"(a drill never rewrites production's rule), run {clear} and trigger this drill."
        )
    if any(r["severity"] == "P3" for r in reasons):
        steps.append(
            "The drill could not measure the chain: read the log of the failed task "
            "(apply_fallback_chain or chaos_drill), fix the cause and trigger the DAG again; "
            "until then the fallback chain is unproven."
        )
    seen: list[str] = []
    for reason in reasons:
        metric = reason.get("metric")
        if metric and metric not in seen:
            seen.append(metric)
            steps += _metric_steps(metric, route)
    weights = escalation.remediation.weights
    if remediate:
        steps.append(
            f"Production weights were shifted to the static cache ({weights}). Once primary is "
            "healthy, set the production rule's weights back by hand (a drill never rewrites "
            f"production's rule), run {clear} and trigger this drill."
        )
    elif escalation.remediation.shift_to_static_cache:
        steps.append(
            "No automatic shift to the static cache (severity below "
            f"{escalation.remediation.min_severity}); shift by hand if users are affected."
        )
    steps += list(escalation.runbook)
    if escalation.runbook_url:
        steps.append(f"Full runbook: {escalation.runbook_url}")
    return steps
