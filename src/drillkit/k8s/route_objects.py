"""Pure builders of drill routes: Istio VirtualService + DestinationRule, Gateway API HTTPRoute.

The drill rule matches the signed ``x-drill-context`` header exactly and names only the sandbox:
an unreachable sandbox answers 503 instead of failing over to production. The default rule keeps
production traffic where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drillkit.exceptions import RoutingError
from drillkit.k8s.config import RoutesConfig, RouteService

HEADER = "x-drill-context"  # Envoy and Gateway API match lower-case header names
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
    config: RoutesConfig,
) -> dict[str, Any]:
    drill_rule: dict[str, Any] = {
        "name": "drill",
        "match": [{"headers": {HEADER: {"exact": context_value}}}],
        "route": [{"destination": {"host": destination, "port": {"number": service.sandbox_port}}}],
        "timeout": duration(config.timeout),
        "retries": {
            "attempts": config.attempts,
            "perTryTimeout": duration(config.per_try_timeout),
            "retryOn": RETRY_ON,
        },
    }
    default_rule = {
        "name": "production",
        "route": [{"destination": {"host": service.host, "port": {"number": service.port}}}],
    }
    return {
        "apiVersion": f"networking.istio.io/{config.api_version}",
        "kind": "VirtualService",
        "metadata": dict(meta),
        "spec": {"hosts": [service.host], "http": [drill_rule, default_rule]},
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


def http_route(
    meta: Mapping[str, Any],
    *,
    service: RouteService,
    sandbox_namespace: str,
    context_value: str,
    config: RoutesConfig,
) -> dict[str, Any]:
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
                "matches": [
                    {"headers": [{"type": "Exact", "name": HEADER, "value": context_value}]}
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
    if parent_kind == "Service":
        # Once any route attaches to a Service (GAMMA), unmatched requests get 404: keep
        # production traffic on the Service itself.
        spec["rules"].append(
            {
                "name": "production",
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": parent["name"], "port": service.port}
                ],
            }
        )
    else:
        # A Gateway merges this route with production's own for the host; header matches win.
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
