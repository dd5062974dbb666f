"""The chain's cluster I/O: apply the route, set a phase's fault, remove the drill rule, shift
weights to the static cache. Everything goes through ``drillkit.k8s.client.Kube``.

The chain's objects carry production traffic, so nothing here deletes them: teardown removes the
drill rule only, and every write is checked (destinations, fault scope) before it is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from drillkit.chain import guards, routes
from drillkit.chain.model import TIERS, FaultPhase, RouteConfig
from drillkit.exceptions import RoutingError, TransientDrillError
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import Kind
from drillkit.routing.guard import ProductionGuard
from drillkit.timeutil import isoformat, utcnow

ROUTE_SCHEMA = "drillkit.chain_route/v1"
REMEDIATION_SCHEMA = "drillkit.remediation/v1"


def _ref(kind: Kind, obj: Mapping[str, Any], action: str, stored: Mapping[str, Any]) -> dict:
    return {
        "api_version": kind.api_version,
        "kind": kind.kind,
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
        "action": action,
        "resource_version": (stored.get("metadata") or {}).get("resourceVersion"),
    }


def _check_host_free(kube: Kube, config: RouteConfig) -> None:
    """Istio does not merge two VirtualServices for one host: refuse to add a second one."""
    if config.mesh != "istio":
        return
    for vs in kube.list(routes.route_kind(config), namespace=config.namespace):
        if config.host not in ((vs.get("spec") or {}).get("hosts") or []):
            continue
        name = vs["metadata"]["name"]
        if name == routes.vs_name(config):
            continue
        labels = vs["metadata"].get("labels") or {}
        if labels.get(routes.MANAGED_BY) == "drillkit":
            raise TransientDrillError(
                f"a restore drill's VirtualService {name} routes {config.host} right now; "
                "retry when it has finished",
                code="ROUTE_HOST_BUSY",
            )
        raise RoutingError(
            f"VirtualService {name} already routes {config.host}; Istio does not merge two "
            f"VirtualServices for one host. Fold its rules into this chain's spec and delete it, "
            f"or route the chain under another host",
            code="ROUTE_HOST_TAKEN",
        )


def apply_chain(
    kube: Kube,
    config: RouteConfig,
    *,
    guard: ProductionGuard,
    context_value: str,
    drill_id: str,
    expires_at: str,
) -> dict[str, Any]:
    """Create (or on 409 merge-patch) the chain with its drill rule, no fault yet."""
    kind = routes.route_kind(config)
    current = kube.get(kind, routes.vs_name(config), config.namespace)
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    if routes.REMEDIATED_AT in annotations:
        raise RoutingError(
            f"{kind.kind} {routes.vs_name(config)} was shifted to the static cache at "
            f"{annotations[routes.REMEDIATED_AT]} and a drill would restore the declared weights; "
            f"once primary is healthy, remove the annotation ({routes.REMEDIATED_AT}) and re-run",
            code="CHAIN_REMEDIATION_IN_EFFECT",
        )
    _check_host_free(kube, config)
    built = routes.chain_objects(
        config,
        context_value=context_value,
        annotations=routes.drill_annotations(drill_id=drill_id, expires_at=expires_at),
    )
    guards.check_objects(config, built, guard)
    applied = []
    for obj_kind, obj in built:
        stored, action = kube.apply(obj_kind, obj)
        applied.append(_ref(obj_kind, obj, action, stored))
    return {
        "schema": ROUTE_SCHEMA,
        "chain": config.name,
        "mesh": config.mesh,
        "host": config.host,
        "applied": applied,
        "drill_rule_expires_at": expires_at,
        "not_expressed": list(routes.GATEWAY_API_NOT_EXPRESSED)
        if config.mesh == "gateway_api"
        else [],
    }


def _stored_route(kube: Kube, config: RouteConfig) -> dict[str, Any] | None:
    return kube.get(routes.route_kind(config), routes.vs_name(config), config.namespace)


def _patch_rules(
    kube: Kube,
    config: RouteConfig,
    rules: list[dict[str, Any]],
    *,
    checked: list[dict[str, Any]],
    guard: ProductionGuard,
    annotations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``rules``; the guard checks the ``checked`` ones (those drillkit authors here) and
    the fault scope of all. Rules only sent back as stored are not drillkit's to judge."""
    key = "rules" if config.mesh == "gateway_api" else "http"
    kind = routes.route_kind(config)
    patch: dict[str, Any] = {"spec": {key: rules}}
    if annotations:
        patch["metadata"] = {"annotations": dict(annotations)}
    meta = {"name": routes.vs_name(config)}
    authored = {"kind": kind.kind, "metadata": meta, "spec": {key: checked}}
    guards.check_objects(config, [(kind, authored)], guard)
    guards.check_fault_scope({"metadata": meta, "spec": {key: rules}})
    # A JSON merge patch replaces lists whole: the rules sent are the rules stored.
    return kube.patch(kind, routes.vs_name(config), patch, namespace=config.namespace)


def set_fault(
    kube: Kube,
    config: RouteConfig,
    *,
    guard: ProductionGuard,
    context_value: str,
    phase: FaultPhase | None,
) -> dict[str, Any]:
    """Replace the drill rule with one carrying ``phase``'s fault (None: no fault); the other
    rules are sent back exactly as stored."""
    if config.mesh != "istio":
        raise RoutingError(
            "only Istio can inject faults; Gateway API HTTPRoute has no fault filter",
            code="CHAIN_NOT_EXPRESSIBLE",
            path="route.mesh",
        )
    stored = _stored_route(kube, config)
    if stored is None:
        raise RoutingError(
            f"the chain's route {routes.vs_name(config)} in {config.namespace} is gone; the "
            "apply task must run first",
            code="CHAIN_NOT_APPLIED",
        )
    rules = list(stored["spec"].get("http") or [])
    drill = routes.drill_rule(config, context_value, phase)
    if not rules or rules[0].get("name") != routes.DRILL_RULE:
        raise RoutingError(
            "the chain's route has no drill rule (the run's teardown or another run removed "
            "it); re-run the drill",
            code="CHAIN_NOT_APPLIED",
        )
    return _patch_rules(kube, config, [drill, *rules[1:]], checked=[drill], guard=guard)


def remove_drill_rule(kube: Kube, config: RouteConfig) -> dict[str, Any]:
    """Teardown: drop the drill rule (and with it every fault); leave every other rule as is."""
    stored = _stored_route(kube, config)
    if stored is None:
        return {"removed": False, "reason": "the chain's route does not exist"}
    key = "rules" if config.mesh == "gateway_api" else "http"
    rules = list(stored["spec"].get(key) or [])
    kept = [r for r in rules if r.get("name") != routes.DRILL_RULE]
    annotations = (stored["metadata"].get("annotations") or {}).keys()
    drill_keys = {routes.DRILL_ID_ANNOTATION, routes.DRILL_RULE_EXPIRES} & set(annotations)
    if len(kept) == len(rules) and not drill_keys:
        return {"removed": False, "reason": "no drill rule present"}
    # Only a deletion: nothing new is authored, so nothing is refused (a teardown must work).
    patch: dict[str, Any] = {"spec": {key: kept}}
    if drill_keys:
        patch["metadata"] = {"annotations": dict.fromkeys(drill_keys)}
    after = kube.patch(
        routes.route_kind(config), routes.vs_name(config), patch, namespace=config.namespace
    )
    return {
        "removed": True,
        "rules_removed": len(rules) - len(kept),
        "resource_version": after["metadata"].get("resourceVersion"),
    }


def shift_weights(
    kube: Kube,
    config: RouteConfig,
    *,
    guard: ProductionGuard,
    weights: Mapping[str, int],
    reason: str,
) -> dict[str, Any]:
    """Remediation: re-weight the production rule towards the static cache (a merge patch)."""
    if sorted(weights) != sorted(TIERS) or sum(weights.values()) != 100:
        raise RoutingError(
            f"remediation weights {dict(weights)} must name {', '.join(TIERS)} and sum to 100",
            code="CHAIN_WEIGHTS",
            path="escalation.remediation.weights",
        )
    stored = _stored_route(kube, config)
    if stored is None:
        raise RoutingError(
            f"the chain's route {routes.vs_name(config)} is gone: nothing to shift",
            code="CHAIN_NOT_APPLIED",
        )
    key = "rules" if config.mesh == "gateway_api" else "http"
    rules = copy.deepcopy(stored["spec"].get(key) or [])
    before: dict[str, int] = {}
    for rule in rules:
        if rule.get("name") != routes.PRODUCTION_RULE:
            continue
        for entry in rule.get("route") or rule.get("backendRefs") or []:
            tier = _tier_of(config, entry)
            before[tier] = entry.get("weight", 0)
            entry["weight"] = weights[tier]
    if not before:
        raise RoutingError(
            "the chain's route has no production rule to re-weight; re-apply the chain",
            code="CHAIN_NOT_APPLIED",
        )
    now = isoformat(utcnow())
    production = [r for r in rules if r.get("name") == routes.PRODUCTION_RULE]
    after = _patch_rules(
        kube,
        config,
        rules,
        checked=production,
        guard=guard,
        annotations={routes.REMEDIATED_AT: now, routes.REMEDIATION_ANNOTATION: reason[:250]},
    )
    return {
        "schema": REMEDIATION_SCHEMA,
        "chain": config.name,
        "action": "shift_to_static_cache",
        "weights_before": before,
        "weights_after": dict(weights),
        "remediated_at": now,
        "resource_version": after["metadata"].get("resourceVersion"),
    }


def _tier_of(config: RouteConfig, entry: Mapping[str, Any]) -> str:
    for tier in config.tiers:
        if "destination" in entry and entry["destination"].get("host") == tier.host:
            return tier.name
        if "name" in entry and (entry["name"], entry.get("namespace")) == routes.service_ref(
            tier.host
        ):
            return tier.name
    raise RoutingError(
        f"the production rule routes to {entry}, which is not a tier of this chain; someone "
        "edited the route by hand: re-apply the chain before shifting weights",
        code="CHAIN_UNDECLARED_DESTINATION",
    )
