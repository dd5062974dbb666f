"""Apply and remove a tier's drill routes (Istio or Gateway API) for header-steered smoke traffic.

Guard rules run before anything is applied: the retry budget fits the route timeout, no drill
destination is production (by the drill's ProductionGuard) or the routed host itself, and no
other VirtualService owns the host. A failed apply removes what it applied.
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
from drillkit.k8s.config import RoutesConfig, parse_routes
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
    config: RoutesConfig, *, manifest: Mapping[str, Any], sandbox: Mapping[str, Any]
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
    if config.kind == "gateway_api":
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
                        config=config,
                    ),
                )
            )
        else:
            built.append(
                (
                    HTTP_ROUTE,
                    route_objects.http_route(
                        meta(route, config.namespace),
                        service=service,
                        sandbox_namespace=namespace,
                        context_value=context_value,
                        config=config,
                    ),
                )
            )
    return built


def _check_hosts_free(kube: Kube, config: RoutesConfig, sandbox_id: str) -> None:
    """Istio does not merge VirtualServices for one host: refuse to add a second one."""
    if config.kind != "istio":
        return
    hosts = {s.host for s in config.services.values()}
    for vs in kube.list(virtual_service(config.api_version), namespace=config.namespace):
        taken = hosts & set((vs.get("spec") or {}).get("hosts") or [])
        if not taken:
            continue
        labels = vs["metadata"].get("labels") or {}
        owner = labels.get(objects.SANDBOX_LABEL)
        if labels.get(objects.MANAGED_BY) != objects.MANAGER:
            raise RoutingError(
                f"VirtualService {vs['metadata']['name']} already routes {', '.join(taken)}; "
                "Istio does not merge two VirtualServices for one host. Route the drill through "
                "a host without its own VirtualService, or use kind gateway_api",
                code="ROUTE_HOST_TAKEN",
            )
        if owner != sandbox_id:
            raise TransientDrillError(
                f"another drill ({owner}) routes {', '.join(taken)} right now; retry when it "
                "has finished",
                code="ROUTE_HOST_BUSY",
            )


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
    built = _objects(config, manifest=manifest, sandbox=sandbox)
    refs = [_ref(kind, obj) for kind, obj in built]
    if dry_run:
        return {"backend": config.kind, "applied": [], "planned": refs, "dry_run": True}
    _check_hosts_free(kube, config, str(sandbox["id"]))
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
        "routes": {
            name: {"host": s.host, "sandbox_host": s.destination(str(sandbox["namespace"]))}
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
