"""Pure builders of the fallback-chain route: Istio VirtualService + DestinationRule (+ the
EnvoyFilters of ``drillkit.chain.envoy``), or a Gateway API HTTPRoute.

The chain's VirtualService IS the routing API's production route: its "production" rule is built
from the spec when the route is first created, and a drill never rewrites it afterwards. The
drill rule matches only the exact signed ``x-drill-context`` value and routes to the primary
with the production rule's timeout and retries; the fallback EnvoyFilter turns its Envoy route
into the aggregate cluster of the tiers. No VirtualService rule ever carries a ``fault``: Istio
switches a route's timeout and retries off when it does (see ``drillkit.chain.envoy``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from drillkit.chain.envoy import fallback_filter
from drillkit.chain.model import (
    CONTEXT_HEADER,
    TIER_HEADER,
    RouteConfig,
)
from drillkit.k8s.kinds import HTTP_ROUTE, Kind, destination_rule, virtual_service
from drillkit.k8s.route_objects import duration

ENVOY_FILTER = Kind("networking.istio.io/v1alpha3", "EnvoyFilter", "envoyfilters")

# Not "drillkit": the GC deletes expired objects managed by drillkit, and these objects carry
# production traffic. They must outlive every drill.
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "drillkit-routing-chain"
PART_OF = "app.kubernetes.io/part-of"
CHAIN_LABEL = "drillkit.io/routing-chain"
DRILL_RULE_EXPIRES = "drillkit.io/drill-rule-expires-at"
DRILL_ID_ANNOTATION = "drillkit.io/drill-id"
REMEDIATED_AT = "drillkit.io/remediated-at"
REMEDIATION_ANNOTATION = "drillkit.io/remediation"
DRILL_RULE, PRODUCTION_RULE = "drill", "production"
SERVICE_HOST = re.compile(r"^([a-z0-9][-a-z0-9]*)\.([a-z0-9][-a-z0-9]*)\.svc(\.cluster\.local)?$")


def vs_name(config: RouteConfig) -> str:
    return f"{config.name}-chain"


def dr_name(config: RouteConfig) -> str:
    return f"{config.name}-primary"


def metadata(config: RouteConfig, name: str, annotations: Mapping[str, str] | None = None):
    meta: dict[str, Any] = {
        "name": name,
        "namespace": config.namespace,
        "labels": {MANAGED_BY: MANAGER, PART_OF: "drillkit", CHAIN_LABEL: config.name},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def drill_annotations(*, drill_id: str, expires_at: str) -> dict[str, str]:
    """While a drill rule exists: whose it is and when its context stops being valid."""
    return {DRILL_ID_ANNOTATION: drill_id, DRILL_RULE_EXPIRES: expires_at}


def _weights(config: RouteConfig, weights: Mapping[str, int] | None) -> dict[str, int]:
    return dict(weights) if weights is not None else config.weights


def _istio_destination(config: RouteConfig, tier_name: str, weight: int) -> dict[str, Any]:
    # Per destination, Istio renders the headers on Envoy's weighted cluster: they are set on
    # answers of that cluster only, which is right for the production split.
    tier = config.tier(tier_name)
    return {
        "destination": {"host": tier.host, "port": {"number": tier.port}},
        "weight": weight,
        "headers": {"response": {"set": {TIER_HEADER: tier.name}}},
    }


def production_rule(
    config: RouteConfig, *, weights: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The rule every non-drill request takes: weighted tiers, timeout, retries."""
    shares = _weights(config, weights)
    return {
        "name": PRODUCTION_RULE,
        "route": [_istio_destination(config, t.name, shares[t.name]) for t in config.tiers],
        "timeout": duration(config.timeout),
        "retries": {
            "attempts": config.retries.attempts,
            "perTryTimeout": duration(config.retries.per_try_timeout),
            "retryOn": ",".join(config.retries.retry_on),
        },
    }


def context_match(context_value: str) -> list[dict[str, Any]]:
    return [{"headers": {CONTEXT_HEADER: {"exact": context_value}}}]


def drill_rule(config: RouteConfig, context_value: str) -> dict[str, Any]:
    """Matched only by the signed context: the primary alone, the production timeout and retries.

    One destination, so Istio renders ``route.cluster``, which the fallback EnvoyFilter replaces
    with the aggregate cluster. No headers here: a route-level response header would be set on
    every answer, whichever tier of the aggregate served it; the tiers stamp their own.
    """
    primary = config.tier("primary")
    rule = production_rule(config)
    return {
        "name": DRILL_RULE,
        "match": context_match(context_value),
        "route": [{"destination": {"host": primary.host, "port": {"number": primary.port}}}],
        "timeout": rule["timeout"],
        "retries": rule["retries"],
    }


def istio_virtual_service(
    config: RouteConfig,
    *,
    context_value: str | None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    http = [drill_rule(config, context_value)] if context_value else []
    http.append(production_rule(config))
    return {
        "apiVersion": f"networking.istio.io/{config.api_version}",
        "kind": "VirtualService",
        "metadata": metadata(config, vs_name(config), annotations),
        "spec": {"hosts": [config.host], "http": http},
    }


def istio_destination_rule(config: RouteConfig) -> dict[str, Any]:
    """Connection limits and outlier ejection on the primary tier."""
    pool, outlier = config.pool, config.outlier
    return {
        "apiVersion": f"networking.istio.io/{config.api_version}",
        "kind": "DestinationRule",
        "metadata": metadata(config, dr_name(config)),
        "spec": {
            "host": config.tier("primary").host,
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {
                        "maxConnections": pool.max_connections,
                        "connectTimeout": duration(pool.connect_timeout),
                    },
                    "http": {
                        "http1MaxPendingRequests": pool.http1_max_pending_requests,
                        "http2MaxRequests": pool.http2_max_requests,
                        "maxRetries": pool.max_retries,
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": outlier.consecutive_5xx,
                    "interval": duration(outlier.interval),
                    "baseEjectionTime": duration(outlier.base_ejection_time),
                    "maxEjectionPercent": outlier.max_ejection_percent,
                },
            },
        },
    }


# What the standard-channel HTTPRoute cannot carry (checked against its CRD): no retry policy,
# no fault injection, no outlier detection or connection pool (no DestinationRule equivalent).
GATEWAY_API_NOT_EXPRESSED = (
    "fallback between tiers (backendRef weights are a split; the drill rule routes to primary)",
    "retries (attempts, per-try timeout as a retry budget, retryOn)",
    "fault injection",
    "outlier detection",
    "connection pool limits",
)


def service_ref(host: str) -> tuple[str, str]:
    """``(name, namespace)`` of a Service host ``name.namespace.svc[.cluster.local]``."""
    match = SERVICE_HOST.match(host)
    if not match:
        raise ValueError(host)
    return match.group(1), match.group(2)


def _gateway_rule(
    config: RouteConfig, name: str, context_value: str | None, weights: Mapping[str, int] | None
) -> dict[str, Any]:
    shares = _weights(config, weights)
    backends = []
    # HTTPRoute weights are a split too, and it has no failover: the drill rule routes to the
    # primary alone, so a drill never sends drill traffic to a tier by weight.
    tiers = [config.tier("primary")] if context_value else list(config.tiers)
    for tier in tiers:
        service, namespace = service_ref(tier.host)
        backends.append(
            {
                "group": "",
                "kind": "Service",
                "name": service,
                "namespace": namespace,
                "port": tier.port,
                "weight": shares[tier.name] if not context_value else 1,
                "filters": [
                    {
                        "type": "ResponseHeaderModifier",
                        "responseHeaderModifier": {
                            "set": [{"name": TIER_HEADER, "value": tier.name}]
                        },
                    },
                ],
            }
        )
    # The API server defaults a missing match to PathPrefix "/": spell it out, so the stored
    # route is the built one and a re-apply changes nothing.
    match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": "/"}}
    if context_value:
        match["headers"] = [{"type": "Exact", "name": CONTEXT_HEADER, "value": context_value}]
    rule: dict[str, Any] = {"name": name, "matches": [match], "backendRefs": backends}
    rule["timeouts"] = {
        "request": duration(config.timeout),
        "backendRequest": duration(config.retries.per_try_timeout),
    }
    return rule


def gateway_http_route(
    config: RouteConfig,
    *,
    context_value: str | None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The chain as a Gateway API HTTPRoute: weights, timeouts and header filters only."""
    parent_cfg = config.parent
    assert parent_cfg is not None, "mesh gateway_api needs route.parent"
    if parent_cfg.kind == "Service":
        parent: dict[str, Any] = {"group": "", "kind": "Service", "name": parent_cfg.name}
    else:
        parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": parent_cfg.name}
    if parent_cfg.namespace:
        parent["namespace"] = parent_cfg.namespace
    if parent_cfg.port:
        parent["port"] = parent_cfg.port
    rules = [_gateway_rule(config, DRILL_RULE, context_value, None)] if context_value else []
    rules.append(_gateway_rule(config, PRODUCTION_RULE, None, None))
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules}
    if parent_cfg.kind == "Gateway":
        spec["hostnames"] = [config.host]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(config, vs_name(config), annotations),
        "spec": spec,
    }


def chain_objects(
    config: RouteConfig,
    *,
    context_value: str | None,
    annotations: Mapping[str, str] | None = None,
) -> list[tuple[Kind, dict[str, Any]]]:
    """What ``apply`` writes, in order: the DestinationRule before the route that relies on it."""
    if config.mesh == "gateway_api":
        route = gateway_http_route(config, context_value=context_value, annotations=annotations)
        return [(HTTP_ROUTE, route)]
    objects = [
        (destination_rule(config.api_version), istio_destination_rule(config)),
        (
            virtual_service(config.api_version),
            istio_virtual_service(config, context_value=context_value, annotations=annotations),
        ),
    ]
    if context_value:
        objects.append((ENVOY_FILTER, fallback_filter(config, metadata(config, "", annotations))))
    return objects


def route_kind(config: RouteConfig) -> Kind:
    return HTTP_ROUTE if config.mesh == "gateway_api" else virtual_service(config.api_version)
