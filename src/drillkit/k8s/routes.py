"""Apply and remove a tier's drill routes (Istio or Gateway API) for header-steered smoke traffic.

Guard rules run before anything is applied: the retry budget fits the route timeout, no drill
destination is production (by the drill's ProductionGuard) or the routed host itself, and no
other VirtualService applies to the host where the drill's does (every namespace, hosts fully
qualified). Gateway API routes repeat production's matches for the host. Production's own
objects are only read, never written. A failed apply removes what it applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drillkit.exceptions import (
    DrillError,
    ProductionTargetRefusedError,
    RoutingError,
    TransientDrillError,
)
from drillkit.k8s import objects, route_objects
from drillkit.k8s.client import Kube
from drillkit.k8s.config import RoutesConfig, parse_routes, service_fqdn
from drillkit.k8s.kinds import (
    HTTP_ROUTE,
    ISTIO_VERSIONS,
    REFERENCE_GRANT,
    Kind,
    destination_rule,
    virtual_service,
)
from drillkit.routing.guard import ProductionGuard


def check_routes(config: RoutesConfig, *, guard: ProductionGuard, sandbox_namespace: str) -> None:
    """The guard rules, before anything touches the cluster."""
    route_objects.check_retry_budget(
        timeout=config.timeout, per_try_timeout=config.per_try_timeout, attempts=config.attempts
    )
    for name, service in config.services.items():
        destination = service.destination(sandbox_namespace)
        if destination.rstrip(".") == service.host.rstrip("."):
            raise ProductionTargetRefusedError(
                f"route {name!r} would send drill traffic to {service.host}, the production host "
                "it routes; point sandbox_service at a Service in the drill namespace",
                service=name,
            )
        url = f"http://{destination}:{service.sandbox_port}"
        reason = guard.violation("http", {"url": url}, service=name)
        if reason:
            raise ProductionTargetRefusedError(
                f"route {name!r} would send drill traffic to production: {reason}; point "
                "sandbox_service/sandbox_host at the sandbox, or, if that host is not production, "
                "remove it from the drill spec's production list",
                service=name,
            )


def _objects(
    config: RoutesConfig,
    *,
    manifest: Mapping[str, Any],
    sandbox: Mapping[str, Any],
    production: Mapping[str, tuple[list[dict[str, Any]], bool]] | None = None,
) -> list[tuple[Kind, dict[str, Any]]]:
    sandbox_id, namespace = str(sandbox["id"]), str(sandbox["namespace"])
    context_value = manifest["context"]["value"]

    def meta(name: str, where: str) -> dict[str, Any]:
        return objects.metadata(
            name,
            namespace=where,
            drill_id=str(sandbox["drill_id"]),
            sandbox_id=sandbox_id,
            expires_at=str(sandbox["expires_at"]),
        )

    built: list[tuple[Kind, dict[str, Any]]] = []
    if config.kind == "gateway_api" and config.namespace != namespace:
        # A backendRef to another namespace needs the target namespace's ReferenceGrant.
        built.append(
            (
                REFERENCE_GRANT,
                route_objects.reference_grant(meta("", namespace), from_namespace=config.namespace),
            )
        )
    for name, service in config.services.items():
        route = route_objects.route_name(name, sandbox_id)
        if config.kind == "istio":
            destination = service.destination(namespace)
            built.append(
                (
                    destination_rule(config.api_version),
                    route_objects.destination_rule(
                        meta(route, namespace), destination=destination, config=config
                    ),
                )
            )
            built.append(
                (
                    virtual_service(config.api_version),
                    route_objects.virtual_service(
                        meta(route, config.namespace),
                        service=service,
                        destination=destination,
                        context_value=context_value,
                        sandbox_id=sandbox_id,
                        config=config,
                    ),
                )
            )
        else:
            matches, routed = (production or {}).get(name, ([], False))
            built.append(
                (
                    HTTP_ROUTE,
                    route_objects.http_route(
                        meta(route, config.namespace),
                        service=service,
                        sandbox_namespace=namespace,
                        context_value=context_value,
                        sandbox_id=sandbox_id,
                        config=config,
                        production_matches=matches,
                        production_routed=routed,
                    ),
                )
            )
    return built


def _owner(obj: Mapping[str, Any], sandbox_id: str) -> str | None:
    """None for production's objects, "" for this sandbox's own, else the other drill's id."""
    labels = obj["metadata"].get("labels") or {}
    if labels.get(objects.MANAGED_BY) != objects.MANAGER:
        return None
    owner = str(labels.get(objects.SANDBOX_LABEL))
    return "" if owner == sandbox_id else owner


def _busy(owner: str, what: str) -> TransientDrillError:
    return TransientDrillError(
        f"another drill ({owner}) routes {what} right now; retry when it has finished",
        code="ROUTE_HOST_BUSY",
    )


def _vs_applies(vs: Mapping[str, Any], callers: set[str], gateways: set[str]) -> bool:
    """Whether ``vs`` is seen by proxies in ``callers`` namespaces bound to ``gateways``.

    Istio VirtualService.exportTo: no value exports to all namespaces, "." to the declaring
    namespace only, "*" to all, else the named namespaces. ``gateways``: no value means the
    reserved ``mesh`` (every sidecar); a name without ``<namespace>/`` is in the
    VirtualService's namespace.
    """
    spec, namespace = vs.get("spec") or {}, vs["metadata"].get("namespace", "")
    export = spec.get("exportTo") or ["*"]
    seen = "*" in export or bool(callers & set(export)) or ("." in export and namespace in callers)
    bound = {
        g if g == "mesh" or "/" in g else f"{namespace}/{g}"
        for g in spec.get("gateways") or ["mesh"]
    }
    return seen and bool(bound & gateways)


def _check_istio_hosts(kube: Kube, config: RoutesConfig, sandbox_id: str) -> None:
    """No other VirtualService for a routed host where the drill's VirtualService applies.

    Istio analyser IST0109 (ConflictingMeshGatewayVirtualServiceHosts): VirtualServices with one
    host attached to the mesh gateway conflict (only ingress-gateway ones are merged), and the
    drill rule can silently lose. Every namespace is listed; hosts are compared fully qualified
    (short names relative to the VirtualService's namespace). On gateways Istio merges, so only
    another drill's route is refused there (the probe proves which rule won).
    """
    if config.mode == "mesh":
        callers, gateways = {config.namespace}, {"mesh"}
    else:
        callers = {g.split("/")[0] for g in config.gateways}
        gateways = set(config.gateways)
    hosts = {service_fqdn(s.host, config.namespace) for s in config.services.values()}
    for vs in kube.list(virtual_service(config.api_version)):
        if not _vs_applies(vs, callers, gateways):
            continue
        namespace = vs["metadata"].get("namespace", "")
        theirs = {
            service_fqdn(str(h), namespace) for h in (vs.get("spec") or {}).get("hosts") or []
        }
        taken = sorted(hosts & theirs)
        owner = _owner(vs, sandbox_id)
        if not taken or owner == "":
            continue
        if owner is not None:
            raise _busy(owner, ", ".join(taken))
        if config.mode == "mesh":
            raise RoutingError(
                f"VirtualService {namespace}/{vs['metadata']['name']} already routes "
                f"{', '.join(taken)} for callers in namespace {config.namespace}; Istio does not "
                "merge two VirtualServices for one host on the mesh (IST0109), so the drill rule "
                "could silently lose. Scope that VirtualService with exportTo (e.g. ['.'] or "
                "the namespaces of its real callers, without the drill workers' namespace), or "
                "route the drill with mode: gateway, or kind gateway_api",
                code="ROUTE_HOST_TAKEN",
            )


def _parent_key(ref: Mapping[str, Any], route_namespace: str) -> tuple[str, str, str]:
    """(kind, namespace, name) of a parentRef; Gateway API defaults: kind Gateway, the route's
    own namespace."""
    return (
        str(ref.get("kind") or "Gateway"),
        str(ref.get("namespace") or route_namespace),
        str(ref.get("name")),
    )


def _hostnames_meet(theirs: list[str], host: str) -> bool:
    """HTTPRoute.hostnames: none matches every host; ``*.example.com`` matches its subdomains."""
    if not theirs:
        return True
    for name in theirs:
        name = name.lower()
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _production_http_routes(
    kube: Kube, config: RoutesConfig, sandbox_id: str
) -> dict[str, tuple[list[dict[str, Any]], bool]]:
    """Per routed service: the matches of production's HTTPRoutes on the same parent and host
    (a rule without matches matches every path: ``/`` prefix), and whether any attaches.

    Another drill's route on the same parent and host is refused (ROUTE_HOST_BUSY).
    """
    wanted = {
        name: (
            service.parent.get("kind", "Service"),
            service.parent.get("namespace") or config.namespace,
            service.parent["name"],
        )
        for name, service in config.services.items()
    }
    found: dict[str, tuple[list[dict[str, Any]], bool]] = {n: ([], False) for n in wanted}
    for route in kube.list(HTTP_ROUTE):
        namespace = route["metadata"].get("namespace", "")
        spec = route.get("spec") or {}
        parents = {_parent_key(ref, namespace) for ref in spec.get("parentRefs") or []}
        owner = _owner(route, sandbox_id)
        if owner == "":
            continue
        for name, key in wanted.items():
            service = config.services[name]
            if key not in parents:
                continue
            if key[0] == "Gateway" and not _hostnames_meet(
                spec.get("hostnames") or [], service.host.lower()
            ):
                continue
            if owner is not None:
                raise _busy(owner, service.host)
            matches, _ = found[name]
            for rule in spec.get("rules") or [{}]:
                matches += rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
            found[name] = (matches, True)
    return found


def apply_routes(
    kube: Kube,
    *,
    routes: Mapping[str, Any] | RoutesConfig,
    manifest: Mapping[str, Any],
    sandbox: Mapping[str, Any],
    guard: ProductionGuard,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Check, then apply every route object; returns the manifest's ``routes`` block."""
    config = routes if isinstance(routes, RoutesConfig) else parse_routes(routes)
    if not sandbox.get("namespace"):
        raise RoutingError(
            f"{config.kind} routes need a kubernetes sandbox (a drill namespace to route to)",
            code="ROUTE_NEEDS_K8S_SANDBOX",
        )
    check_routes(config, guard=guard, sandbox_namespace=str(sandbox["namespace"]))
    if dry_run:
        planned = _objects(config, manifest=manifest, sandbox=sandbox)
        refs = [_ref(kind, obj) for kind, obj in planned]
        return {"backend": config.kind, "applied": [], "planned": refs, "dry_run": True}
    production = None
    if config.kind == "istio":
        _check_istio_hosts(kube, config, str(sandbox["id"]))
    else:
        production = _production_http_routes(kube, config, str(sandbox["id"]))
    built = _objects(config, manifest=manifest, sandbox=sandbox, production=production)
    applied: list[dict[str, Any]] = []
    try:
        for kind, obj in built:
            stored, action = kube.apply(kind, obj)
            applied.append(
                {
                    **_ref(kind, obj),
                    "action": action,
                    "resource_version": stored["metadata"].get("resourceVersion"),
                }
            )
    except BaseException:
        for ref in reversed(applied):
            _delete_ref(kube, ref)
        raise
    return {
        "backend": config.kind,
        "applied": applied,
        "header": route_objects.HEADER,
        # What the smoke task probes before any check: the drill rule stamps this header.
        "proof_header": route_objects.PROOF_HEADER,
        "sandbox_id": str(sandbox["id"]),
        "mode": config.mode if config.kind == "istio" else "gateway_api",
        "routes": {
            name: {
                "host": service_fqdn(s.host, config.namespace)
                if config.kind == "istio"
                else s.host,
                "port": s.port,
                "sandbox_host": s.destination(str(sandbox["namespace"])),
            }
            for name, s in config.services.items()
        },
        "dry_run": False,
    }


def _ref(kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "api_version": kind.api_version,
        "kind": kind.kind,
        "plural": kind.plural,
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
    }


def _delete_ref(kube: Kube, ref: Mapping[str, Any]) -> bool:
    kind = Kind(ref["api_version"], ref["kind"], ref["plural"])
    return kube.delete(kind, ref["name"], namespace=ref.get("namespace"))


def owned_routes(kube: Kube, selector: str) -> list[tuple[Kind, dict[str, Any]]]:
    """Drill-owned route objects outside drill namespaces, in all namespaces, by label.

    (DestinationRules and ReferenceGrants live in the drill namespace and go with it.) A kind
    whose CRD is not installed (404) has no objects; Istio is asked at v1, then v1beta1.
    """
    found: list[tuple[Kind, dict[str, Any]]] = []
    for alternatives in ([virtual_service(v) for v in ISTIO_VERSIONS], [HTTP_ROUTE]):
        for kind in alternatives:
            try:
                items = kube.list(kind, selector=selector)
            except DrillError as exc:
                if exc.details.get("status") == 404:
                    continue
                raise
            found += [(kind, obj) for obj in items]
            break
    return found


def remove_routes(kube: Kube, *, sandbox_id: str) -> list[dict[str, Any]]:
    """Delete the drill routes of one sandbox, found by label; 404 counts as done."""
    selector = f"{objects.OWNED},{objects.SANDBOX_LABEL}={sandbox_id}"
    removed = []
    for kind, obj in owned_routes(kube, selector):
        ref = _ref(kind, obj)
        if _delete_ref(kube, ref):
            removed.append(ref)
    return removed
