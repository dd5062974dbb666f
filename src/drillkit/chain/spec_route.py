"""The ``route`` block of a routing-chain spec: mesh, host, the three tiers, timeout, retries,
outlier detection and connection pool, parsed strictly (drillkit.chain.guards judges the whole).
"""

from __future__ import annotations

import re
from typing import Any

from drillkit.chain.model import (
    MESHES,
    TIERS,
    ConnectionPool,
    GatewayParent,
    OutlierDetection,
    Retries,
    RouteConfig,
    TierTarget,
)
from drillkit.chain.reader import DNS_LABEL, Reader

# Envoy's retry conditions (x-envoy-retry-on and retry-grpc-on) that Istio passes through.
RETRY_CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
_ROUTE_KEYS = {
    "mesh",
    "namespace",
    "host",
    "port",
    "api_version",
    "parent",
    "tiers",
    "timeout",
    "retries",
    "outlier_detection",
    "connection_pool",
    "drill_client",
}
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def labels(r: Reader, raw: Any, path: str) -> dict[str, str] | None:
    """A Kubernetes label selector's ``matchLabels`` (a workloadSelector's labels)."""
    if raw is None:
        return None
    data = r.mapping(raw, path)
    if not data:
        raise r.fail(path, "at least one label, e.g. {app: checkout-api}")
    for key, value in data.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise r.fail(f"{path}.{key}", "a Kubernetes label name, e.g. app")
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            raise r.fail(f"{path}.{key}", "a Kubernetes label value (a string, quote numbers)")
    return {str(k): str(v) for k, v in data.items()}


def _tiers(r: Reader, raw: Any, path: str) -> tuple[TierTarget, ...]:
    data = r.mapping(raw, path)
    r.unknown(data, set(TIERS), path)
    missing = [t for t in TIERS if t not in data]
    if missing:
        raise r.fail(
            f"{path}.{missing[0]}", f"required: the chain has the tiers {', '.join(TIERS)}"
        )
    tiers = []
    for name in TIERS:
        at = f"{path}.{name}"
        tier = r.mapping(data[name], at)
        r.unknown(tier, {"host", "port", "weight", "labels"}, at)
        tiers.append(
            TierTarget(
                name=name,
                host=r.host(tier.get("host"), f"{at}.host"),
                port=r.integer(tier, "port", at, None, 1, 65535),
                weight=r.integer(tier, "weight", at, None, 0, 100),
                labels=labels(r, tier.get("labels"), f"{at}.labels"),
            )
        )
    return tuple(tiers)


def _parent(r: Reader, raw: Any, path: str) -> GatewayParent:
    data = r.mapping(raw, path)
    r.unknown(data, {"kind", "name", "namespace", "port"}, path)
    kind = data.get("kind", "Service")
    if kind not in ("Service", "Gateway"):
        raise r.fail(f"{path}.kind", "Service (GAMMA: the mesh) or Gateway")
    name = data.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise r.fail(f"{path}.name", "required: the parent Service or Gateway name")
    namespace = data.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not DNS_LABEL.match(namespace)):
        raise r.fail(f"{path}.namespace", "a Kubernetes namespace name")
    port = r.integer(data, "port", path, None, 1, 65535) if "port" in data else None
    return GatewayParent(kind=kind, name=name, namespace=namespace, port=port)


def parse_route(r: Reader, raw: Any, name: str) -> RouteConfig:
    data = r.mapping(raw, "route")
    r.unknown(data, _ROUTE_KEYS, "route")
    mesh = data.get("mesh", "istio")
    if mesh not in MESHES:
        raise r.fail("route.mesh", f"{mesh!r} is not supported; use one of {', '.join(MESHES)}")
    namespace = data.get("namespace")
    if not isinstance(namespace, str) or not DNS_LABEL.match(namespace):
        raise r.fail("route.namespace", "required: the namespace of the routing API's route")
    api_version = data.get("api_version", "v1")
    if api_version not in ("v1", "v1beta1"):
        raise r.fail("route.api_version", "v1 (default) or v1beta1 for Istio before 1.22")
    retries = r.mapping(data.get("retries", {}), "route.retries")
    r.unknown(retries, {"attempts", "per_try_timeout", "retry_on"}, "route.retries")
    retry_on = retries.get("retry_on", ["5xx", "reset", "connect-failure"])
    if isinstance(retry_on, str) or not isinstance(retry_on, list) or not retry_on:
        raise r.fail("route.retries.retry_on", "a list such as [5xx, reset, connect-failure]")
    for index, condition in enumerate(retry_on):
        if condition not in RETRY_CONDITIONS:
            raise r.fail(
                f"route.retries.retry_on[{index}]",
                f"{condition!r} is not an Envoy retry condition; use e.g. 5xx, reset, "
                "connect-failure, gateway-error, refused-stream",
            )
    outlier = r.mapping(data.get("outlier_detection", {}), "route.outlier_detection")
    r.unknown(
        outlier,
        {"consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent"},
        "route.outlier_detection",
    )
    pool = r.mapping(data.get("connection_pool", {}), "route.connection_pool")
    r.unknown(
        pool,
        {
            "max_connections",
            "connect_timeout",
            "http1_max_pending_requests",
            "http2_max_requests",
            "max_retries",
        },
        "route.connection_pool",
    )
    od, cp = "route.outlier_detection", "route.connection_pool"
    parent = None
    if mesh == "gateway_api":
        parent = _parent(r, data.get("parent"), "route.parent")
    elif "parent" in data:
        raise r.fail("route.parent", "only for mesh: gateway_api (Istio routes by host)")
    return RouteConfig(
        name=name,
        mesh=mesh,
        namespace=namespace,
        host=r.host(data.get("host"), "route.host"),
        port=r.integer(data, "port", "route", 80, 1, 65535),
        api_version=api_version,
        tiers=_tiers(r, data.get("tiers"), "route.tiers"),
        timeout=r.seconds(data, "timeout", "route", "3s"),
        retries=Retries(
            attempts=r.integer(retries, "attempts", "route.retries", 2, 0, 10),
            per_try_timeout=r.seconds(retries, "per_try_timeout", "route.retries", "1s"),
            retry_on=tuple(retry_on),
        ),
        outlier=OutlierDetection(
            consecutive_5xx=r.integer(outlier, "consecutive_5xx", od, 5, 1, 1000),
            interval=r.seconds(outlier, "interval", od, "10s"),
            base_ejection_time=r.seconds(outlier, "base_ejection_time", od, "30s"),
            max_ejection_percent=r.integer(outlier, "max_ejection_percent", od, 50, 1, 100),
        ),
        pool=ConnectionPool(
            max_connections=r.integer(pool, "max_connections", cp, 100, 1, 1_000_000),
            connect_timeout=r.seconds(pool, "connect_timeout", cp, "1s"),
            http1_max_pending_requests=r.integer(
                pool, "http1_max_pending_requests", cp, 64, 1, 1_000_000
            ),
            http2_max_requests=r.integer(pool, "http2_max_requests", cp, 256, 1, 1_000_000),
            max_retries=r.integer(pool, "max_retries", cp, 16, 0, 1_000_000),
        ),
        parent=parent,
        drill_client=labels(r, data.get("drill_client"), "route.drill_client"),
    )
