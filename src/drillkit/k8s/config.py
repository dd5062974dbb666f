"""The Kubernetes parts of a drill spec: sandbox ``kind: kubernetes``, catalog ``kind: cnpg`` and
``routes``, parsed strictly; every refusal names the field and what is allowed. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drillkit.exceptions import InvalidInputError
from drillkit.timeutil import parse_duration

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SANDBOX_KEYS = frozenset(
    {
        "kind",
        "worker_namespace",
        "operator_namespace",
        "egress",
        "storage_size",
        "storage_class",
        "endpoint",
        "access",
        "database",
        "user",
        "image_name",
        "manifests",
        "recovery_credentials",
        "api_server",
        "dns",
    }
)
# How data checks reach a kubernetes sandbox's database (drillkit.k8s.access.resolve_mode).
ACCESS_MODES = ("auto", "in_cluster", "port_forward")
API_SERVER_KEYS = frozenset({"port", "cidrs", "namespace"})
DNS_KEYS = frozenset({"ports", "cidrs"})
# NodeLocal DNSCache's default link-local listen address (host network: no pod selector matches it)
# https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/
NODELOCAL_DNS = "169.254.20.10/32"
CATALOG_KEYS = frozenset({"kind", "cluster", "namespace"})
ROUTE_KINDS = ("manifest", "istio", "gateway_api")
_ROUTES_KEYS = frozenset(
    {
        "kind",
        "namespace",
        "timeout",
        "retries",
        "connection_pool",
        "outlier_detection",
        "api_version",
        "services",
        "mode",
        "gateways",
    }
)
ISTIO_MODES = ("mesh", "gateway")
CLUSTER_DOMAIN = "cluster.local"  # Kubernetes' default DNS domain, as Istio's registry names it
_ROUTE_SERVICE_KEYS = frozenset(
    {"host", "port", "sandbox_service", "sandbox_port", "sandbox_host", "parent"}
)


def _fail(where: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"{where}: {problem}", code="SPEC_INVALID", path=where)


def _unknown(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(map(str, data)) - allowed)
    if extra:
        raise _fail(f"{where}.{extra[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _dns_label(value: Any, where: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise _fail(where, "required: a Kubernetes name ([a-z0-9-], at most 63 characters)")
    return value


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _fail(where, "a TCP port number (1-65535)")
    return value


def _seconds(value: Any, where: str) -> float:
    try:
        return parse_duration(value, field=where).total_seconds()
    except InvalidInputError as exc:
        raise _fail(where, str(exc).split(": ", 1)[-1]) from exc


@dataclass(frozen=True)
class EgressRule:
    cidr: str
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ApiServerAccess:
    """Egress to the Kubernetes API server. NetworkPolicy is evaluated after the Service's
    ClusterIP is translated on most CNIs, so the rule must name the endpoint addresses and their
    port (6443 on kubeadm), not 10.96.0.1:443. ``cidrs`` empty: read from the ``kubernetes``
    Service's EndpointSlices at provision time. ``namespace``: also admit pods of that namespace
    (API servers running as pods: hosted control planes, OpenShift)."""

    port: int = 6443
    cidrs: tuple[str, ...] = ()
    namespace: str | None = None


@dataclass(frozen=True)
class DnsAccess:
    """DNS egress: to any pod on these ports (kube-dns/CoreDNS on 53, OpenShift's dns-default
    pods on 5353) and to ``cidrs`` (NodeLocal DNSCache on the node's link-local address)."""

    ports: tuple[int, ...] = (53, 5353)
    cidrs: tuple[str, ...] = (NODELOCAL_DNS,)


@dataclass(frozen=True)
class SandboxConfig:
    worker_namespace: str
    operator_namespace: str = "cnpg-system"
    egress: tuple[EgressRule, ...] = ()
    storage_size: str | None = None
    storage_class: str | None = None
    endpoint: str = "dns"  # dns: <svc>.<ns>.svc; cluster_ip: the Service's cluster IP
    # How data checks reach the restored database: in_cluster (TLS to the -rw Service),
    # port_forward (through the API server), auto (in_cluster when running in a pod).
    access: str = "auto"
    database: str | None = None  # None: the source cluster's bootstrap database (else "app")
    user: str | None = None  # None: the source's bootstrap owner (else "app")
    image_name: str | None = None
    manifests: tuple[dict[str, Any], ...] = ()
    # A Secret in the source namespace with read-only object-store keys (the same keys as the
    # production credentials it stands in for): copied instead of production's write keys.
    recovery_credentials: str | None = None
    api_server: ApiServerAccess = field(default_factory=ApiServerAccess)
    dns: DnsAccess = field(default_factory=DnsAccess)


def parse_sandbox(raw: Mapping[str, Any], *, where: str = "sandbox") -> SandboxConfig:
    import ipaddress

    _unknown(raw, SANDBOX_KEYS, where)
    worker = _dns_label(raw.get("worker_namespace"), f"{where}.worker_namespace")
    egress = []
    for index, rule in enumerate(raw.get("egress") or []):
        at = f"{where}.egress[{index}]"
        if not isinstance(rule, Mapping):
            raise _fail(at, "a mapping {cidr: 10.0.0.0/8, ports: [443]}")
        _unknown(rule, frozenset({"cidr", "ports"}), at)
        try:
            cidr = str(ipaddress.ip_network(str(rule.get("cidr")), strict=False))
        except ValueError as exc:
            raise _fail(f"{at}.cidr", "an IP network such as 10.0.0.0/8") from exc
        ports = tuple(_port(p, f"{at}.ports") for p in rule.get("ports") or [])
        egress.append(EgressRule(cidr, ports))
    endpoint = raw.get("endpoint", "dns")
    if endpoint not in ("dns", "cluster_ip"):
        raise _fail(f"{where}.endpoint", "dns (default) or cluster_ip")
    access = raw.get("access", "auto")
    if access not in ACCESS_MODES:
        raise _fail(
            f"{where}.access",
            "auto (default), in_cluster (workers run in the cluster) or port_forward (they do "
            "not: through the API server)",
        )
    manifests = raw.get("manifests") or []
    if not isinstance(manifests, list) or not all(isinstance(m, Mapping) for m in manifests):
        raise _fail(f"{where}.manifests", "a list of Kubernetes objects (mappings)")
    for key in ("storage_size", "storage_class", "database", "user", "image_name"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise _fail(f"{where}.{key}", "a non-empty string")
    return SandboxConfig(
        worker_namespace=worker or "",
        operator_namespace=_dns_label(
            raw.get("operator_namespace", "cnpg-system"), f"{where}.operator_namespace"
        )
        or "",
        egress=tuple(egress),
        storage_size=raw.get("storage_size"),
        storage_class=raw.get("storage_class"),
        endpoint=endpoint,
        access=access,
        database=raw.get("database"),
        user=raw.get("user"),
        image_name=raw.get("image_name"),
        manifests=tuple(dict(m) for m in manifests),
        recovery_credentials=_dns_subdomain(
            raw.get("recovery_credentials"), f"{where}.recovery_credentials"
        ),
        api_server=_api_server(raw.get("api_server"), f"{where}.api_server"),
        dns=_dns(raw.get("dns"), f"{where}.dns"),
    )


def _cidrs(values: Any, where: str) -> tuple[str, ...]:
    import ipaddress

    if not isinstance(values, list):
        raise _fail(where, "a list of IP networks such as [10.0.0.10/32]")
    try:
        return tuple(str(ipaddress.ip_network(str(v), strict=False)) for v in values)
    except ValueError as exc:
        raise _fail(where, f"an IP network such as 10.0.0.10/32 ({exc})") from exc


def _api_server(raw: Any, where: str) -> ApiServerAccess:
    if raw is None:
        return ApiServerAccess()
    if not isinstance(raw, Mapping):
        raise _fail(where, "a mapping {port: 6443, cidrs: [...], namespace: ...}")
    _unknown(raw, API_SERVER_KEYS, where)
    return ApiServerAccess(
        port=_port(raw.get("port", 6443), f"{where}.port"),
        cidrs=_cidrs(raw.get("cidrs") or [], f"{where}.cidrs"),
        namespace=_dns_label(raw.get("namespace"), f"{where}.namespace", required=False),
    )


def _dns(raw: Any, where: str) -> DnsAccess:
    if raw is None:
        return DnsAccess()
    if not isinstance(raw, Mapping):
        raise _fail(where, "a mapping {ports: [53, 5353], cidrs: [169.254.20.10/32]}")
    _unknown(raw, DNS_KEYS, where)
    ports = raw.get("ports", [53, 5353])
    if not isinstance(ports, list) or not ports:
        raise _fail(f"{where}.ports", "a non-empty list of ports")
    return DnsAccess(
        ports=tuple(_port(p, f"{where}.ports") for p in ports),
        cidrs=_cidrs(raw.get("cidrs", [NODELOCAL_DNS]), f"{where}.cidrs"),
    )


def _dns_subdomain(value: Any, where: str) -> str | None:
    """An optional Secret name (RFC 1123 subdomain)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _HOST.match(value):
        raise _fail(where, "the name of a Secret in the source cluster's namespace")
    return value


def parse_catalog(raw: Mapping[str, Any], *, where: str = "catalog") -> tuple[str, str]:
    """``(cluster, namespace)`` of a ``kind: cnpg`` catalog."""
    _unknown(raw, CATALOG_KEYS, where)
    cluster = _dns_label(raw.get("cluster"), f"{where}.cluster")
    namespace = _dns_label(raw.get("namespace"), f"{where}.namespace")
    return cluster or "", namespace or ""


@dataclass(frozen=True)
class RouteService:
    host: str  # the production host the route is for (the default rule keeps it)
    port: int
    sandbox_service: str | None
    sandbox_port: int
    sandbox_host: str | None
    parent: dict[str, str] = field(default_factory=dict)

    def destination(self, sandbox_namespace: str) -> str:
        if self.sandbox_host:
            return self.sandbox_host
        return f"{self.sandbox_service}.{sandbox_namespace}.svc.cluster.local"


@dataclass(frozen=True)
class RoutesConfig:
    kind: str = "manifest"
    namespace: str = ""
    timeout: float = 10.0
    attempts: int = 2
    per_try_timeout: float = 3.0
    max_connections: int = 16
    max_pending_requests: int = 16
    consecutive_5xx: int = 3
    ejection_interval: float = 10.0
    base_ejection_time: float = 30.0
    api_version: str = "v1"
    services: dict[str, RouteService] = field(default_factory=dict)
    # istio: "mesh" (the drill's callers' sidecars: the VirtualService lives in ``namespace``,
    # the workers' namespace, exported only there) or "gateway" (bound to ``gateways``).
    mode: str = "mesh"
    gateways: tuple[str, ...] = ()


def service_fqdn(host: str, namespace: str) -> str:
    """The fully qualified name of a Kubernetes Service host, as Istio compares hosts.

    A short name (no dot) is read relative to ``namespace``: Istio interprets short names
    "based on the namespace of the rule, not the service" (Destination docs, "Note for
    Kubernetes users"). ``svc.ns``, ``svc.ns.svc`` and the FQDN are the same Service (the
    Kubernetes DNS search path makes them equal for a caller); other names stay as written.
    """
    host = host.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(labels) == 1:
        return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"
    if len(labels) == 2:
        return f"{host}.svc.{CLUSTER_DOMAIN}"
    if len(labels) == 3 and labels[2] == "svc":
        return f"{host}.{CLUSTER_DOMAIN}"
    return host


def _route_service(name: str, raw: Any, kind: str, where: str) -> RouteService:
    if not isinstance(raw, Mapping):
        raise _fail(where, "a mapping with host, port and sandbox_service")
    _unknown(raw, _ROUTE_SERVICE_KEYS, where)
    host = raw.get("host")
    if not isinstance(host, str) or not _HOST.match(host):
        raise _fail(f"{where}.host", "the production host name the route is for")
    if kind == "istio" and "." not in host:
        raise _fail(
            f"{where}.host",
            f"write the Service's full name ({host}.<namespace>.svc.{CLUSTER_DOMAIN}): Istio "
            "reads a short name relative to the VirtualService's namespace, not the Service's",
        )
    service = _dns_label(raw.get("sandbox_service"), f"{where}.sandbox_service", required=False)
    sandbox_host = raw.get("sandbox_host")
    if (service is None) == (sandbox_host is None):
        raise _fail(
            where, "set exactly one of sandbox_service (in the drill namespace) or sandbox_host"
        )
    if sandbox_host is not None and (
        not isinstance(sandbox_host, str) or not _HOST.match(sandbox_host)
    ):
        raise _fail(f"{where}.sandbox_host", "a host name")
    if kind == "gateway_api" and service is None:
        raise _fail(
            f"{where}.sandbox_service",
            "gateway_api routes need a Service in the drill "
            "namespace (backendRefs name Services, not hosts)",
        )
    parent = raw.get("parent") or {}
    if kind == "gateway_api":
        if not isinstance(parent, Mapping) or not isinstance(parent.get("name"), str):
            raise _fail(
                f"{where}.parent",
                "required for gateway_api: {kind: Service|Gateway, name: ..., namespace: ...}",
            )
        _unknown(parent, frozenset({"kind", "name", "namespace"}), f"{where}.parent")
        if parent.get("kind", "Service") not in ("Service", "Gateway"):
            raise _fail(f"{where}.parent.kind", "Service (mesh) or Gateway")
    port = _port(raw.get("port", 80), f"{where}.port")
    return RouteService(
        host=host,
        port=port,
        sandbox_service=service,
        sandbox_port=_port(raw.get("sandbox_port", port), f"{where}.sandbox_port"),
        sandbox_host=sandbox_host,
        parent={str(k): str(v) for k, v in dict(parent).items()},
    )


def parse_routes(raw: Mapping[str, Any] | None, *, where: str = "routes") -> RoutesConfig:
    """The ``routes`` block; ``kind: manifest`` (the default) applies nothing to a cluster."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise _fail(where, "a mapping {kind: manifest|istio|gateway_api, ...}")
    _unknown(raw, _ROUTES_KEYS, where)
    kind = raw.get("kind", "manifest")
    if kind not in ROUTE_KINDS:
        raise _fail(f"{where}.kind", f"{kind!r} is not one of {', '.join(ROUTE_KINDS)}")
    if kind == "manifest":
        if set(raw) - {"kind"}:
            raise _fail(where, "kind: manifest takes no other keys (nothing is applied)")
        return RoutesConfig()
    namespace = _dns_label(raw.get("namespace"), f"{where}.namespace")
    retries = raw.get("retries") or {}
    if not isinstance(retries, Mapping):
        raise _fail(f"{where}.retries", "{attempts: 2, per_try_timeout: 3s}")
    _unknown(retries, frozenset({"attempts", "per_try_timeout"}), f"{where}.retries")
    attempts = retries.get("attempts", 2 if kind == "istio" else 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts <= 10:
        raise _fail(f"{where}.retries.attempts", "a number of retries from 0 to 10")
    if kind == "gateway_api" and attempts:
        raise _fail(
            f"{where}.retries.attempts",
            "retries are not in the Gateway API standard "
            "channel (HTTPRoute v1): set 0 and use per_try_timeout, or use kind istio",
        )
    pool = raw.get("connection_pool") or {}
    outlier = raw.get("outlier_detection") or {}
    _unknown(
        pool, frozenset({"max_connections", "max_pending_requests"}), f"{where}.connection_pool"
    )
    _unknown(
        outlier,
        frozenset({"consecutive_5xx", "interval", "base_ejection_time"}),
        f"{where}.outlier_detection",
    )
    for key, value in (
        *pool.items(),
        *((k, v) for k, v in outlier.items() if k == "consecutive_5xx"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(f"{where}.{key}", "a positive whole number")
    version = raw.get("api_version", "v1")
    allowed_versions = ("v1", "v1beta1") if kind == "istio" else ("v1",)
    if version not in allowed_versions:
        raise _fail(f"{where}.api_version", f"one of {', '.join(allowed_versions)}")
    services_raw = raw.get("services")
    if not isinstance(services_raw, Mapping) or not services_raw:
        raise _fail(
            f"{where}.services", "required: routed service name -> {host, port, sandbox_service}"
        )
    services = {
        str(name): _route_service(str(name), spec, kind, f"{where}.services.{name}")
        for name, spec in services_raw.items()
    }
    mode, gateways = _istio_mode(raw, kind, where)
    return RoutesConfig(
        kind=kind,
        namespace=namespace or "",
        timeout=_seconds(raw.get("timeout", "10s"), f"{where}.timeout"),
        attempts=attempts,
        per_try_timeout=_seconds(
            retries.get("per_try_timeout", "3s"), f"{where}.retries.per_try_timeout"
        ),
        max_connections=pool.get("max_connections", 16),
        max_pending_requests=pool.get("max_pending_requests", 16),
        consecutive_5xx=outlier.get("consecutive_5xx", 3),
        ejection_interval=_seconds(
            outlier.get("interval", "10s"), f"{where}.outlier_detection.interval"
        ),
        base_ejection_time=_seconds(
            outlier.get("base_ejection_time", "30s"),
            f"{where}.outlier_detection.base_ejection_time",
        ),
        api_version=version,
        services=services,
        mode=mode,
        gateways=gateways,
    )


def _istio_mode(raw: Mapping[str, Any], kind: str, where: str) -> tuple[str, tuple[str, ...]]:
    """``mode`` and ``gateways`` (istio only): gateways are ``<namespace>/<name>`` names."""
    mode = raw.get("mode", "mesh")
    if kind != "istio":
        if "mode" in raw or "gateways" in raw:
            raise _fail(f"{where}.mode", "mode and gateways are for kind istio only")
        return "mesh", ()
    if mode not in ISTIO_MODES:
        raise _fail(
            f"{where}.mode",
            "mesh (the drill workers' sidecars) or gateway (named ingress gateways)",
        )
    gateways = raw.get("gateways")
    if mode == "mesh":
        if gateways is not None:
            raise _fail(f"{where}.gateways", "only with mode: gateway")
        return mode, ()
    if not isinstance(gateways, list) or not gateways:
        raise _fail(f"{where}.gateways", "required with mode gateway: [<namespace>/<gateway>]")
    for gateway in gateways:
        ns, _, name = str(gateway).partition("/")
        if not (_DNS_LABEL.match(ns) and _DNS_LABEL.match(name)) or gateway == "mesh":
            raise _fail(
                f"{where}.gateways",
                f"{gateway!r} is not <namespace>/<gateway> (the reserved 'mesh' is mode: mesh)",
            )
    return mode, tuple(str(g) for g in gateways)


def check_spec(
    *,
    catalog: Mapping[str, Any],
    sandboxes: list[Mapping[str, Any]],
    routes: Mapping[str, Any] | None,
    production: Mapping[str, Any],
) -> dict[str, Any]:
    """Cross-checks of a drill spec's Kubernetes parts; returns the ``routes`` block to keep.

    A kubernetes sandbox restores a CloudNativePG cluster's backups, so it goes with catalog
    ``cnpg``; a cnpg catalog takes kubernetes or local tiers (a local tier restores the chosen
    Backup's object store on the worker, ``drillkit.k8s.local_store``); mesh routes steer to a
    drill namespace, so they need kubernetes sandboxes; the retry budget and production
    destinations are checked here too.
    """
    from drillkit.k8s.route_objects import check_retry_budget
    from drillkit.routing.guard import ProductionGuard

    cnpg = catalog.get("kind") == "cnpg"
    for index, sandbox in enumerate(sandboxes):
        kind = sandbox.get("kind") or "local"
        if (kind == "kubernetes" and not cnpg) or (cnpg and kind not in ("kubernetes", "local")):
            raise _fail(
                f"tiers[{index}].sandbox.kind",
                "a kubernetes sandbox restores from catalog kind cnpg, and a cnpg catalog needs "
                "kubernetes or local sandboxes (a local one restores the Backup's object store "
                "on the worker): make catalog.kind and every tier's sandbox.kind agree",
            )
    config = parse_routes(routes)
    if config.kind == "manifest":
        return dict(routes or {})
    if not cnpg:
        raise _fail(
            "routes.kind",
            f"{config.kind} routes steer traffic into a drill namespace: "
            "use kubernetes sandboxes (catalog kind cnpg), or kind manifest",
        )
    for index, sandbox in enumerate(sandboxes):
        if sandbox.get("kind") != "kubernetes":
            raise _fail(
                f"tiers[{index}].sandbox.kind",
                f"{config.kind} routes steer traffic into a drill namespace, which a local tier "
                "has not: use kubernetes sandboxes in every tier, or routes kind manifest",
            )
    try:
        check_retry_budget(
            timeout=config.timeout, per_try_timeout=config.per_try_timeout, attempts=config.attempts
        )
    except InvalidInputError:
        raise
    except Exception as exc:
        raise _fail("routes.retries", str(exc)) from exc
    if config.kind == "istio" and config.mode == "mesh":
        for index, sandbox in enumerate(sandboxes):
            if sandbox.get("worker_namespace") != config.namespace:
                raise _fail(
                    "routes.namespace",
                    f"in mode mesh the drill VirtualService lives where the drill's callers do "
                    f"(exported only there): set it to the workers' namespace, "
                    f"tiers[{index}].sandbox.worker_namespace "
                    f"({sandbox.get('worker_namespace')!r})",
                )
    guard = ProductionGuard.from_spec(production)
    for name, service in config.services.items():
        if service.sandbox_host:
            reason = guard.violation(
                "http", {"url": f"http://{service.sandbox_host}"}, service=name
            )
            if reason or service.sandbox_host == service.host:
                raise _fail(
                    f"routes.services.{name}.sandbox_host",
                    f"is production ({reason or 'the routed host itself'}); drill "
                    "routes may only name the sandbox",
                )
    return dict(routes or {})
