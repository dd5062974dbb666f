"""The chain's guard rules, pure: run at spec load and again before every write.

Timeout budget (Istio semantics: ``retries.attempts`` counts RETRIES, so a request makes
attempts + 1 tries), weights, distinct tiers, destinations only among the declared tiers, the
production guard on everything else, no fault on any route rule, and the primary's fault filter
matching only the signed context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from drillkit.chain import envoy
from drillkit.chain.model import CONTEXT_HEADER, RouteConfig
from drillkit.chain.routes import DRILL_RULE, SERVICE_HOST, service_ref
from drillkit.exceptions import ProductionTargetRefusedError, RoutingError
from drillkit.k8s.kinds import Kind
from drillkit.k8s.route_objects import duration
from drillkit.routing.guard import ProductionGuard, normalize_host


def _fail(cls: type[RoutingError], code: str, path: str, message: str) -> RoutingError:
    return cls(f"{path}: {message}", code=code, path=path)


def check_chain(
    config: RouteConfig, *, guard: ProductionGuard, chaos_url: str | None = None
) -> None:
    """The guard rules, pure. Each error names the spec field and the fix.

    Istio semantics: ``retries.attempts`` counts RETRIES, so a request makes attempts + 1 tries,
    and all of them must fit in the global timeout, or the last retry is cut off mid-flight.
    """
    timeout, per_try = config.timeout, config.retries.per_try_timeout
    if per_try >= timeout:
        raise _fail(
            RoutingError,
            "CHAIN_TIMEOUT_BUDGET",
            "route.retries.per_try_timeout",
            f"{duration(per_try)} is not below the global timeout {duration(timeout)}: a single "
            "try could use the whole budget and no retry could ever run; lower per_try_timeout "
            "or raise route.timeout",
        )
    tries = config.retries.tries
    if per_try * tries > timeout + 1e-9:
        raise _fail(
            RoutingError,
            "CHAIN_TIMEOUT_BUDGET",
            "route.retries.attempts",
            f"{config.retries.attempts} retries + the first try = {tries} tries x "
            f"{duration(per_try)} = {duration(per_try * tries)}, over the global timeout "
            f"{duration(timeout)}; use at most {int(timeout // per_try) - 1} retries, lower "
            "per_try_timeout, or raise route.timeout",
        )
    total = sum(t.weight for t in config.tiers)
    if total != 100:
        shares = ", ".join(f"{t.name} {t.weight}" for t in config.tiers)
        raise _fail(
            RoutingError,
            "CHAIN_WEIGHTS",
            "route.tiers",
            f"weights sum to {total} ({shares}); make them sum to 100",
        )
    hosts = [normalize_host(t.host) for t in config.tiers]
    for index, tier in enumerate(config.tiers):
        if hosts[index] in hosts[:index]:
            raise _fail(
                RoutingError,
                "CHAIN_TIER_DUPLICATE",
                f"route.tiers.{tier.name}.host",
                f"{tier.host} is also an earlier tier: a fallback to the same upstream is no "
                "fallback; give each tier its own host",
            )
        if config.mesh == "gateway_api" and not SERVICE_HOST.match(tier.host):
            raise _fail(
                RoutingError,
                "CHAIN_NOT_EXPRESSIBLE",
                f"route.tiers.{tier.name}.host",
                "for mesh gateway_api a tier must be a Service host <name>.<namespace>.svc"
                "[.cluster.local] (backendRefs name Services, not hosts)",
            )
    if chaos_url is not None:
        _check_chaos_url(config, guard, chaos_url)


def _check_chaos_url(config: RouteConfig, guard: ProductionGuard, url: str) -> None:
    host = normalize_host(urlsplit(url).hostname or "")
    if host == normalize_host(config.host):
        return  # drill traffic enters through the chain's own host, by design
    tiers = {normalize_host(t.host): t.name for t in config.tiers}
    if host in tiers:
        raise _fail(
            RoutingError,
            "CHAIN_BYPASSED",
            "chaos.url",
            f"sends drill traffic straight to the {tiers[host]} tier, past the chain and its "
            f"fault rule; point it at the routing host {config.host}",
        )
    reason = guard.violation("http", {"url": url}, service="chaos")
    if reason:
        raise _fail(
            ProductionTargetRefusedError,
            "PRODUCTION_TARGET_REFUSED",
            "chaos.url",
            f"would send drill traffic to production ({reason}) outside this chain; point it at "
            f"the routing host {config.host}",
        )


def destinations(obj: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(rule name, host)`` of every destination a VirtualService or HTTPRoute names."""
    spec = obj.get("spec") or {}
    for rule in spec.get("http") or []:
        for route in rule.get("route") or []:
            yield rule.get("name", "?"), route["destination"]["host"]
    for rule in spec.get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            namespace = ref.get("namespace", obj["metadata"].get("namespace"))
            yield rule.get("name", "?"), f"{ref['name']}.{namespace}.svc.cluster.local"


def check_objects(
    config: RouteConfig, objects: list[tuple[Kind, dict[str, Any]]], guard: ProductionGuard
) -> None:
    """Before every write: only declared tiers as destinations, faults only on the drill rule."""
    declared = set()
    for tier in config.tiers:
        declared.add(normalize_host(tier.host))
        if SERVICE_HOST.match(tier.host):
            service, namespace = service_ref(tier.host)
            declared.add(f"{service}.{namespace}.svc.cluster.local")
    clusters = {envoy.istio_cluster(t) for t in config.tiers}
    for _kind, obj in objects:
        if obj.get("kind") == "EnvoyFilter":
            _check_aggregate(config, obj, clusters)
        for rule, host in destinations(obj):
            if normalize_host(host) in declared:
                continue
            reason = guard.violation("http", {"url": f"http://{host}"}, service=rule)
            cls = ProductionTargetRefusedError if reason else RoutingError
            raise _fail(
                cls,
                "PRODUCTION_TARGET_REFUSED" if reason else "CHAIN_UNDECLARED_DESTINATION",
                "route.tiers",
                f"rule {rule!r} of {obj['kind']} {obj['metadata']['name']} names {host}, which "
                f"is not a tier of this chain{' and is production: ' + reason if reason else ''};"
                " only route.tiers hosts may be destinations",
            )
        check_fault_scope(obj)


def _check_aggregate(config: RouteConfig, obj: Mapping[str, Any], clusters: set[str]) -> None:
    """The fallback filter aggregates only the tiers' clusters and patches only the drill rule."""
    for patch in (obj.get("spec") or {}).get("configPatches") or []:
        value = (patch.get("patch") or {}).get("value") or {}
        members = ((value.get("cluster_type") or {}).get("typed_config") or {}).get("clusters")
        for member in members or []:
            if member not in clusters:
                raise RoutingError(
                    f"EnvoyFilter {obj['metadata']['name']} aggregates {member}, which is not a "
                    "tier of this chain; only route.tiers may be fallbacks",
                    code="CHAIN_UNDECLARED_DESTINATION",
                    path="route.tiers",
                )
        if patch.get("applyTo") == "HTTP_ROUTE":
            vhost = ((patch.get("match") or {}).get("routeConfiguration") or {}).get("vhost") or {}
            if (vhost.get("route") or {}).get("name") != DRILL_RULE:
                raise RoutingError(
                    f"EnvoyFilter {obj['metadata']['name']} patches a route other than the drill "
                    "rule: production's route would change; drillkit refuses to write it",
                    code="CHAIN_FAULT_SCOPE",
                    path="route",
                )


def check_fault_scope(obj: Mapping[str, Any]) -> None:
    """No fault on any VirtualService rule drillkit writes: Istio documents that a route with a
    client-side fault has its timeout and retries off, so the drill would measure nothing."""
    for rule in (obj.get("spec") or {}).get("http") or []:
        if "fault" in rule:
            raise RoutingError(
                f"rule {rule.get('name')!r} of VirtualService {obj['metadata']['name']} has a "
                "fault: Istio turns off a route's timeout and retries when it has one; drillkit "
                "injects faults at the primary's inbound side instead and refuses to write it",
                code="CHAIN_FAULT_SCOPE",
                path="chaos.phases",
            )


def check_fault_filter(config: RouteConfig, obj: Mapping[str, Any], context_value: str) -> None:
    """Every HTTPFault matches exactly this run's signed context, on the primary's pods only."""
    selector = ((obj.get("spec") or {}).get("workloadSelector") or {}).get("labels")
    wanted = [{"name": CONTEXT_HEADER, "string_match": {"exact": context_value}}]
    faults = envoy.faults_of(obj)
    scoped = (
        bool(context_value)
        and bool(faults)
        and all(f.get("headers") == wanted for f in faults)
        and selector == config.tier("primary").labels
        and all(
            (p.get("match") or {}).get("context") == "SIDECAR_INBOUND"
            for p in obj["spec"]["configPatches"]
        )
    )
    if not scoped:
        raise RoutingError(
            f"EnvoyFilter {obj['metadata']['name']} would inject a fault beyond this run's "
            "signed x-drill-context on the primary's inbound side: faults would reach production "
            "traffic; drillkit refuses to write it",
            code="CHAIN_FAULT_SCOPE",
            path="chaos.phases",
        )
