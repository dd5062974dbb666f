"""The chain against the Kubernetes API emulator (upstream CRD schemas): objects as stored, 409
re-apply, fault phases that never touch the production rule, teardown, GC, remediation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from chainkit import HOSTS, NAMESPACE, chain_spec

from drillkit.chain import apply, routes
from drillkit.chain.model import FaultPhase
from drillkit.chain.spec import parse_chain_spec
from drillkit.exceptions import DrillError, RoutingError
from drillkit.k8s.gc import collect
from drillkit.routing.guard import ProductionGuard

pytestmark = pytest.mark.k8s
CONTEXT = "v1.6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10.drill.1700000000.1700003600.sig"
DRILL_ID = "6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10"
EXPIRES = "2026-11-21T12:00:00Z"
VS_NAME, DR_NAME = "checkout-routing-chain", "checkout-routing-primary"
PHASES = [
    FaultPhase("abort-10", abort_percent=Fraction(10)),
    FaultPhase("delay-500ms", delay=0.5),
    FaultPhase("delay-800ms", delay=0.8),
    FaultPhase("delay-1200ms", delay=1.2),
]


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def setup(cluster, spec=None):
    parsed = parse_chain_spec(spec or chain_spec())
    guard = ProductionGuard.from_spec(parsed.production)
    kube = cluster.kube()
    result = apply.apply_chain(
        kube,
        parsed.route,
        guard=guard,
        context_value=CONTEXT,
        drill_id=DRILL_ID,
        expires_at=EXPIRES,
    )
    return parsed.route, guard, kube, result


def test_applied_objects_are_stored_exactly_as_built(cluster):
    config, _guard, _kube, result = setup(cluster)
    assert [(a["kind"], a["action"]) for a in result["applied"]] == [
        ("DestinationRule", "created"),
        ("VirtualService", "created"),
    ]
    built = dict(
        (obj["kind"], obj)
        for _, obj in routes.chain_objects(
            config,
            context_value=CONTEXT,
            annotations=routes.drill_annotations(drill_id=DRILL_ID, expires_at=EXPIRES),
        )
    )
    vs = cluster.stored("virtualservices", VS_NAME)
    dr = cluster.stored("destinationrules", DR_NAME)
    # Nothing pruned, nothing defaulted: every field fits the upstream CRD schemas.
    assert canonical(vs["spec"]) == canonical(built["VirtualService"]["spec"])
    assert canonical(dr["spec"]) == canonical(built["DestinationRule"]["spec"])
    assert cluster.emulator.store.warnings == []
    assert vs["metadata"]["uid"] and vs["metadata"]["resourceVersion"]
    assert vs["metadata"]["annotations"] == {
        "drillkit.io/drill-id": DRILL_ID,
        "drillkit.io/drill-rule-expires-at": EXPIRES,
    }
    assert vs["metadata"]["labels"]["drillkit.io/routing-chain"] == "checkout-routing"
    drill, production = vs["spec"]["http"]
    assert drill["match"] == [{"headers": {"x-drill-context": {"exact": CONTEXT}}}]
    assert canonical(production) == canonical(routes.production_rule(config))
    assert dr["spec"]["host"] == HOSTS["primary"]


def test_reapply_is_a_merge_patch_over_409(cluster):
    setup(cluster)
    spec = chain_spec()
    spec["route"]["timeout"] = "2s"
    config, _guard, _kube, result = setup(cluster, spec)
    assert [a["action"] for a in result["applied"]] == ["patched", "patched"]
    vs = cluster.stored("virtualservices", VS_NAME)
    assert [r["timeout"] for r in vs["spec"]["http"]] == ["2s", "2s"]
    assert canonical(vs["spec"]["http"][1]) == canonical(routes.production_rule(config))


def test_each_phase_faults_only_the_drill_rule(cluster):
    config, guard, kube, _ = setup(cluster)
    production = canonical(cluster.stored("virtualservices", VS_NAME)["spec"]["http"][1])
    for phase in PHASES:
        apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=phase)
        drill, stored_production = cluster.stored("virtualservices", VS_NAME)["spec"]["http"]
        assert drill["fault"] == routes.istio_fault(phase)
        assert "fault" not in stored_production
        assert canonical(stored_production) == production  # byte-identical, every phase
    assert cluster.stored("virtualservices", VS_NAME)["spec"]["http"][0]["fault"]["delay"] == {
        "fixedDelay": "1200ms",
        "percentage": {"value": 100.0},
    }
    apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=None)
    assert "fault" not in cluster.stored("virtualservices", VS_NAME)["spec"]["http"][0]
    assert cluster.emulator.store.warnings == []


def test_teardown_removes_the_drill_rule_and_keeps_the_production_route(cluster):
    config, guard, kube, _ = setup(cluster)
    apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=PHASES[0])
    result = apply.remove_drill_rule(kube, config)
    assert result["removed"] is True and result["rules_removed"] == 1
    vs = cluster.stored("virtualservices", VS_NAME)
    assert canonical(vs["spec"]["http"]) == canonical([routes.production_rule(config)])
    assert "annotations" not in vs["metadata"] or not vs["metadata"]["annotations"]
    assert cluster.stored("destinationrules", DR_NAME) is not None
    assert apply.remove_drill_rule(kube, config) == {
        "removed": False,
        "reason": "no drill rule present",
    }


def test_drill_gc_never_deletes_the_chain(cluster):
    """The chain carries production traffic: expired restore-drill routes go, the chain stays."""
    setup(cluster)
    removed = collect(cluster.kube(), now=datetime.now(UTC) + timedelta(days=3650))
    assert removed == []
    assert cluster.stored("virtualservices", VS_NAME) is not None
    assert cluster.stored("destinationrules", DR_NAME) is not None


def test_remediation_shifts_weights_and_blocks_the_next_drill(cluster):
    config, guard, kube, _ = setup(cluster)
    apply.remove_drill_rule(kube, config)
    weights = {"primary": 0, "secondary": 20, "static-cache": 80}
    result = apply.shift_weights(kube, config, guard=guard, weights=weights, reason="P1 test")
    assert result["weights_before"] == {"primary": 100, "secondary": 0, "static-cache": 0}
    vs = cluster.stored("virtualservices", VS_NAME)
    [rule] = vs["spec"]["http"]
    assert [r["weight"] for r in rule["route"]] == [0, 20, 80]
    assert canonical(rule) == canonical(routes.production_rule(config, weights=weights))
    assert vs["metadata"]["annotations"]["drillkit.io/remediation"] == "P1 test"
    with pytest.raises(RoutingError) as caught:
        setup(cluster)
    assert caught.value.code == "CHAIN_REMEDIATION_IN_EFFECT"
    assert [
        r["weight"] for r in cluster.stored("virtualservices", VS_NAME)["spec"]["http"][0]["route"]
    ] == [0, 20, 80]


def test_a_foreign_virtual_service_for_the_host_is_refused(cluster):
    code, body = cluster.request(
        "POST",
        f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "checkout-router", "namespace": NAMESPACE},
            "spec": {
                "hosts": ["checkout-router.checkout.svc.cluster.local"],
                "http": [{"route": [{"destination": {"host": HOSTS["primary"]}}]}],
            },
        },
    )
    assert code == 201, body
    with pytest.raises(RoutingError) as caught:
        setup(cluster)
    assert caught.value.code == "ROUTE_HOST_TAKEN"
    assert cluster.stored("virtualservices", VS_NAME) is None
    assert cluster.stored("destinationrules", DR_NAME) is None


def test_gateway_api_http_route_is_stored_as_built(cluster):
    for namespace in ("checkout-dr", "edge-cache"):
        cluster.ensure_namespace(namespace)
    spec = chain_spec(chaos={"phases": [{"name": "baseline"}]})
    spec["route"]["mesh"] = "gateway_api"
    spec["route"]["parent"] = {"kind": "Service", "name": "checkout-router", "port": 8080}
    config, guard, kube, result = setup(cluster, spec)
    assert result["not_expressed"] and [a["kind"] for a in result["applied"]] == ["HTTPRoute"]
    stored = cluster.stored("httproutes", VS_NAME, group="gateway.networking.k8s.io/v1")
    [(_, built)] = routes.chain_objects(config, context_value=CONTEXT)
    assert canonical(stored["spec"]) == canonical(built["spec"])
    assert cluster.emulator.store.warnings == []
    apply.remove_drill_rule(kube, config)
    stored = cluster.stored("httproutes", VS_NAME, group="gateway.networking.k8s.io/v1")
    assert [r["name"] for r in stored["spec"]["rules"]] == ["production"]
    with pytest.raises(DrillError, match="only Istio can inject faults"):
        apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=PHASES[0])
