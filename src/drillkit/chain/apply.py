"""The chain's cluster I/O: apply the route, set a phase's fault, remove the drill rule, shift
weights to the static cache. Everything goes through ``drillkit.k8s.client.Kube``.

The chain's route and DestinationRule carry production traffic, so nothing here deletes them:
teardown removes the drill rule and the drill's EnvoyFilters only. Every write is checked
(destinations, fault scope) before it is sent, and every patch of an existing object carries the
resourceVersion it was computed from (``drillkit.chain.occ``): a concurrent edit is never lost.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from drillkit.chain import envoy, guards, occ, routes
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
    """Create the chain, or put this run's drill rule into the stored route; then the fallback
    EnvoyFilter. No fault yet. A stored production rule is never rewritten."""
    kind = routes.route_kind(config)
    current = kube.get(kind, routes.vs_name(config), config.namespace)
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    if routes.REMEDIATED_AT in annotations:
        raise RoutingError(
            f"{kind.kind} {routes.vs_name(config)} was shifted to the static cache at "
            f"{annotations[routes.REMEDIATED_AT]}; drills wait for a person: once primary is "
            f"healthy, set the production weights back and remove the annotation "
            f"({routes.REMEDIATED_AT}), then re-run",
            code="CHAIN_REMEDIATION_IN_EFFECT",
        )
    _check_host_free(kube, config)
    drill_meta = routes.drill_annotations(drill_id=drill_id, expires_at=expires_at)
    built = routes.chain_objects(config, context_value=context_value, annotations=drill_meta)
    guards.check_objects(config, built, guard)
    applied = []
    for obj_kind, obj in built:
        if obj_kind == kind:
            change = _drill_rule_change(config, obj, drill_meta)
        else:
            change = occ.spec_change(obj)
        stored, action = occ.ensure(kube, obj_kind, obj, change)
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


def _rules_key(config: RouteConfig) -> str:
    return "rules" if config.mesh == "gateway_api" else "http"


def _drill_rule_change(
    config: RouteConfig, built: Mapping[str, Any], drill_meta: Mapping[str, str]
) -> occ.Change:
    """Into the stored route: this run's drill rule first, every other rule as stored."""
    key = _rules_key(config)
    drill = next(r for r in built["spec"][key] if r.get("name") == routes.DRILL_RULE)

    def change(stored: dict[str, Any]) -> dict[str, Any] | None:
        rules = list((stored.get("spec") or {}).get(key) or [])
        others = [r for r in rules if r.get("name") != routes.DRILL_RULE]
        have = stored["metadata"].get("annotations") or {}
        if rules == [drill, *others] and all(have.get(k) == v for k, v in drill_meta.items()):
            return None
        return {"spec": {key: [drill, *others]}, "metadata": {"annotations": dict(drill_meta)}}

    return change


def _stored_route(kube: Kube, config: RouteConfig) -> dict[str, Any] | None:
    return kube.get(routes.route_kind(config), routes.vs_name(config), config.namespace)


def set_fault(
    kube: Kube,
    config: RouteConfig,
    *,
    guard: ProductionGuard,
    context_value: str,
    phase: FaultPhase | None,
) -> dict[str, Any]:
    """Put ``phase``'s fault on the primary's inbound side, for this run's drill context only
    (None or a phase without a fault: remove the fault filter). The route is not touched."""
    if config.mesh != "istio":
        raise RoutingError(
            "only Istio can inject faults; Gateway API HTTPRoute has no fault filter",
            code="CHAIN_NOT_EXPRESSIBLE",
            path="route.mesh",
        )
    stored = _stored_route(kube, config)
    rules = list(((stored or {}).get("spec") or {}).get("http") or [])
    if not any(r.get("name") == routes.DRILL_RULE for r in rules):
        raise RoutingError(
            f"the chain's route {routes.vs_name(config)} in {config.namespace} has no drill rule "
            "(the apply task did not run, or a teardown removed it); re-run the drill",
            code="CHAIN_NOT_APPLIED",
        )
    name, namespace = envoy.fault_name(config), envoy.primary_namespace(config)
    if phase is None or not phase.has_fault:
        return {"fault": None, "removed": _delete_own(kube, config, name, namespace)}
    meta = routes.metadata(config, name)
    obj = envoy.fault_filter(config, phase, context_value, meta)
    guards.check_fault_filter(config, obj, context_value)
    stored_filter, action = occ.ensure(kube, routes.ENVOY_FILTER, obj, occ.spec_change(obj))
    return {"fault": phase.to_dict(), **_ref(routes.ENVOY_FILTER, obj, action, stored_filter)}


def _delete_own(kube: Kube, config: RouteConfig, name: str, namespace: str) -> bool:
    """Delete a drill EnvoyFilter of this chain (by its label); someone else's is left alone."""
    stored = kube.get(routes.ENVOY_FILTER, name, namespace)
    if stored is None:
        return False
    if (stored["metadata"].get("labels") or {}).get(routes.CHAIN_LABEL) != config.name:
        raise RoutingError(
            f"EnvoyFilter {name} in {namespace} is not this chain's (no {routes.CHAIN_LABEL}="
            f"{config.name} label); drillkit leaves it alone: rename or delete it",
            code="CHAIN_NAME_TAKEN",
        )
    return kube.delete(routes.ENVOY_FILTER, name, namespace=namespace)


def remove_drill_rule(kube: Kube, config: RouteConfig) -> dict[str, Any]:
    """Teardown: delete the fault and fallback EnvoyFilters, and drop the drill rule from the
    route (optimistically: a concurrent edit of any other rule survives)."""
    result: dict[str, Any] = {"removed": False}
    if config.mesh == "istio":
        result["fault_filter_deleted"] = (
            config.tier("primary").labels is not None
            and routes.SERVICE_HOST.match(config.tier("primary").host) is not None
            and _delete_own(kube, config, envoy.fault_name(config), envoy.primary_namespace(config))
        )
        result["fallback_filter_deleted"] = _delete_own(
            kube, config, envoy.fallback_name(config), config.namespace
        )
    key = _rules_key(config)
    counted: dict[str, int] = {}

    def change(stored: dict[str, Any]) -> dict[str, Any] | None:
        rules = list((stored.get("spec") or {}).get(key) or [])
        kept = [r for r in rules if r.get("name") != routes.DRILL_RULE]
        annotations = set((stored["metadata"].get("annotations") or {}).keys())
        drill_keys = {routes.DRILL_ID_ANNOTATION, routes.DRILL_RULE_EXPIRES} & annotations
        counted["rules"] = len(rules) - len(kept)
        if len(kept) == len(rules) and not drill_keys:
            return None
        # Only a deletion: nothing new is authored, so nothing is refused (a teardown must work).
        patch: dict[str, Any] = {"spec": {key: kept}}
        if drill_keys:
            patch["metadata"] = {"annotations": dict.fromkeys(drill_keys)}
        return patch

    after, action = occ.update(
        kube, routes.route_kind(config), routes.vs_name(config), config.namespace, change
    )
    if action == "absent":
        return {**result, "reason": "the chain's route does not exist"}
    if action == "unchanged":
        return {**result, "reason": "no drill rule present"}
    assert after is not None
    return {
        **result,
        "removed": True,
        "rules_removed": counted["rules"],
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
    """Remediation: re-weight the production rule towards the static cache (optimistically)."""
    if sorted(weights) != sorted(TIERS) or sum(weights.values()) != 100:
        raise RoutingError(
            f"remediation weights {dict(weights)} must name {', '.join(TIERS)} and sum to 100",
            code="CHAIN_WEIGHTS",
            path="escalation.remediation.weights",
        )
    key = _rules_key(config)
    kind = routes.route_kind(config)
    before: dict[str, int] = {}
    now = isoformat(utcnow())

    def change(stored: dict[str, Any]) -> dict[str, Any]:
        rules = copy.deepcopy((stored.get("spec") or {}).get(key) or [])
        before.clear()
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
        production = [r for r in rules if r.get("name") == routes.PRODUCTION_RULE]
        meta = {"name": routes.vs_name(config)}
        guards.check_objects(
            config,
            [(kind, {"kind": kind.kind, "metadata": meta, "spec": {key: production}})],
            guard,
        )
        return {
            "spec": {key: rules},
            "metadata": {
                "annotations": {
                    routes.REMEDIATED_AT: now,
                    routes.REMEDIATION_ANNOTATION: reason[:250],
                }
            },
        }

    after, _ = occ.update(kube, kind, routes.vs_name(config), config.namespace, change)
    if after is None:
        raise RoutingError(
            f"the chain's route {routes.vs_name(config)} is gone: nothing to shift",
            code="CHAIN_NOT_APPLIED",
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
