"""Pure builders of drill routes: Istio VirtualService + DestinationRule, Gateway API HTTPRoute.

The drill rule matches the signed ``x-drill-context`` header exactly and names only the sandbox:
an unreachable sandbox answers 503 instead of failing over to production. The default rule keeps
production traffic where it was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from drillkit.exceptions import RoutingError
from drillkit.k8s.config import RoutesConfig, RouteService, service_fqdn

HEADER = "x-drill-context"  # Envoy and Gateway API match lower-case header names
# Stamped by the drill rule on every answer it routes: the proof the route is in effect.
PROOF_HEADER = "x-drill-sandbox"
# HTTPRoute v1 CRD: a rule holds at most 64 matches (one is the drill's header-only match).
MAX_MATCHES = 64
MAX_HEADER_MATCHES = 16  # HTTPRouteMatch.headers maxItems
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,5xx"


def duration(seconds: float) -> str:
    """``10s`` or ``1500ms``: a form both Istio and Gateway API (GEP-2257) accept."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def check_retry_budget(*, timeout: float, per_try_timeout: float, attempts: int) -> None:
    """Every try must fit in the route timeout: the first try plus ``attempts`` retries.

    (Istio and Envoy count ``attempts`` as retries, so a budget of per-try x attempts alone
    would let the last retry be cut off by the route timeout.)
    """
    if per_try_timeout <= 0 or timeout <= 0:
        raise RoutingError(
            "route timeout and per-try timeout must be positive; set routes.timeout and "
            "routes.retries.per_try_timeout",
            code="ROUTE_TIMEOUT_BUDGET",
        )
    tries = attempts + 1
    if per_try_timeout * tries > timeout + 1e-9:
        raise RoutingError(
            f"retry budget over the route timeout: {tries} tries x {duration(per_try_timeout)} "
            f"per try = {duration(per_try_timeout * tries)} > {duration(timeout)}; lower "
            "routes.retries.attempts or per_try_timeout, or raise routes.timeout",
            code="ROUTE_TIMEOUT_BUDGET",
        )


def route_name(service: str, sandbox_id: str) -> str:
    return f"drill-{sandbox_id}-{service}"[:253].lower().replace("_", "-")


def virtual_service(
    meta: Mapping[str, Any],
    *,
    service: RouteService,
    destination: str,
    context_value: str,
    sandbox_id: str,
    config: RoutesConfig,
) -> dict[str, Any]:
    """The drill VirtualService (istio), placed so that no production caller can see it.

    mode mesh: in the workers' namespace, ``exportTo: ["."]`` ("." exports only to the namespace
    the VirtualService is declared in, Istio VirtualService.exportTo) and ``gateways: [mesh]``
    (the reserved ``mesh`` means the sidecars), host fully qualified (a short name would be read
    relative to this namespace). The drill rule comes first (the first matching rule is used)
    and matches the service port, so other ports of a multi-port Service keep their routing; the
    production rule names no port: "if a service exposes only a single port it is not required
    to explicitly select the port", and for several the request's own port is kept.

    mode gateway: bound to the named ingress gateways and exported to their namespaces; only the
    drill rule (Istio merges VirtualServices bound to ingress gateways, so production's own
    VirtualService for the host keeps answering the rest).
    """
    namespace = str(meta["namespace"])
    host = service_fqdn(service.host, namespace)
    match: dict[str, Any] = {"headers": {HEADER: {"exact": context_value}}}
    if config.mode == "mesh":
        match["port"] = service.port
    drill_rule: dict[str, Any] = {
        "name": "drill",
        "match": [match],
        "route": [{"destination": {"host": destination, "port": {"number": service.sandbox_port}}}],
        # HTTPRoute.headers.response.set: stamped on the answers this rule routes (the proof).
        "headers": {"response": {"set": {PROOF_HEADER: sandbox_id}}},
        "timeout": duration(config.timeout),
        "retries": {
            "attempts": config.attempts,
            "perTryTimeout": duration(config.per_try_timeout),
            "retryOn": RETRY_ON,
        },
    }
    spec: dict[str, Any] = {"hosts": [host]}
    if config.mode == "mesh":
        spec["exportTo"] = ["."]
        spec["gateways"] = ["mesh"]
        spec["http"] = [
            drill_rule,
            {"name": "production", "route": [{"destination": {"host": host}}]},
        ]
    else:
        spec["exportTo"] = sorted(
            {"." if g.split("/")[0] == namespace else g.split("/")[0] for g in config.gateways}
        )
        spec["gateways"] = list(config.gateways)
        spec["http"] = [drill_rule]
    return {
        "apiVersion": f"networking.istio.io/{config.api_version}",
        "kind": "VirtualService",
        "metadata": dict(meta),
        "spec": spec,
    }


def destination_rule(
    meta: Mapping[str, Any], *, destination: str, config: RoutesConfig
) -> dict[str, Any]:
    """Limits connections to the sandbox and ejects failing endpoints."""
    return {
        "apiVersion": f"networking.istio.io/{config.api_version}",
        "kind": "DestinationRule",
        "metadata": dict(meta),
        "spec": {
            "host": destination,
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"maxConnections": config.max_connections},
                    "http": {"http1MaxPendingRequests": config.max_pending_requests},
                },
                "outlierDetection": {
                    "consecutive5xxErrors": config.consecutive_5xx,
                    "interval": duration(config.ejection_interval),
                    "baseEjectionTime": duration(config.base_ejection_time),
                    "maxEjectionPercent": 100,
                },
            },
        },
    }


def drill_matches(
    context_value: str, production_matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every production match of the host with the drill header added, then the header alone.

    Gateway API precedence across rules (HTTPRouteRule.matches): an Exact path, then the longest
    Prefix, then a method match, then the most header matches, then query params. A drill match
    that repeats a production match and adds the header ties on path and method and has one
    header match more, so it wins for drill traffic; the header-only match (implicit ``/``)
    covers paths no production rule names.
    """
    header = {"type": "Exact", "name": HEADER, "value": context_value}
    found: list[dict[str, Any]] = []
    for match in production_matches:
        headers = [h for h in match.get("headers") or [] if h.get("name", "").lower() != HEADER]
        if len(headers) >= MAX_HEADER_MATCHES:
            raise RoutingError(
                f"a production match of this host already has {len(headers)} header matches, "
                f"the most one HTTPRouteMatch holds ({MAX_HEADER_MATCHES}): the drill rule cannot "
                "add its header to it. Route the drill through another host, or use kind istio",
                code="ROUTE_TOO_MANY_MATCHES",
            )
        copied = {**copy.deepcopy(match), "headers": [*copy.deepcopy(headers), header]}
        if copied not in found:
            found.append(copied)
    found.append({"headers": [header]})
    if len(found) > MAX_MATCHES:
        raise RoutingError(
            f"production's routes for this host have {len(found) - 1} distinct matches; one "
            f"HTTPRoute rule holds at most {MAX_MATCHES}, so the drill rule cannot repeat them "
            "all. Route the drill through a host with fewer rules, or use kind istio",
            code="ROUTE_TOO_MANY_MATCHES",
        )
    return found


def http_route(
    meta: Mapping[str, Any],
    *,
    service: RouteService,
    sandbox_namespace: str,
    context_value: str,
    sandbox_id: str,
    config: RoutesConfig,
    production_matches: list[dict[str, Any]] | None = None,
    production_routed: bool = False,
) -> dict[str, Any]:
    """The drill HTTPRoute; ``production_matches``: the matches of production's own routes for
    the same parent and host; ``production_routed``: production routes already attach to it."""
    parent_kind = service.parent.get("kind", "Service")
    parent: dict[str, Any] = {"kind": parent_kind, "name": service.parent["name"]}
    if parent_kind == "Service":
        parent["group"] = ""  # GAMMA: a route attached to the production Service (mesh)
        parent["port"] = service.port
    if service.parent.get("namespace"):
        parent["namespace"] = service.parent["namespace"]
    spec: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [
            {
                "name": "drill",
                "matches": drill_matches(context_value, production_matches or []),
                "filters": [
                    {
                        "type": "ResponseHeaderModifier",
                        "responseHeaderModifier": {
                            "set": [{"name": PROOF_HEADER, "value": sandbox_id}]
                        },
                    }
                ],
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": service.sandbox_service,
                        "namespace": sandbox_namespace,
                        "port": service.sandbox_port,
                    }
                ],
                "timeouts": {
                    "request": duration(config.timeout),
                    "backendRequest": duration(config.per_try_timeout),
                },
            },
        ],
    }
    if parent_kind == "Service" and not production_routed:
        # Once any route attaches to a Service (GAMMA), unmatched requests get 404: keep
        # production traffic on the Service itself (production's own routes do it otherwise).
        spec["rules"].append(
            {
                "name": "production",
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": parent["name"], "port": service.port}
                ],
            }
        )
    if parent_kind != "Service":
        # A Gateway merges this route with production's own for the host.
        spec["hostnames"] = [service.host]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": dict(meta),
        "spec": spec,
    }


def reference_grant(meta: Mapping[str, Any], *, from_namespace: str) -> dict[str, Any]:
    """Lets HTTPRoutes in ``from_namespace`` send to Services in the drill namespace (only)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {**dict(meta), "name": "drill-routes"},
        "spec": {
            "from": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "HTTPRoute",
                    "namespace": from_namespace,
                }
            ],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
