"""The chain against the Kubernetes API emulator (upstream CRD schemas): objects as stored,
re-apply that keeps production's rule, faults that never touch the route, teardown, GC,
remediation, and optimistic concurrency (409 on a stale resourceVersion, re-read, re-apply)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from chainkit import HOSTS, NAMESPACE, chain_spec

from drillkit.chain import apply, envoy, occ, routes
from drillkit.chain.model import FaultPhase
from drillkit.chain.spec import parse_chain_spec
from drillkit.exceptions import DrillError, RoutingError, TransientDrillError
from drillkit.k8s.client import Kube
from drillkit.k8s.gc import collect
from drillkit.routing.guard import ProductionGuard

pytestmark = pytest.mark.k8s
CONTEXT = "v1.6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10.drill.1700000000.1700003600.sig"
DRILL_ID = "6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10"
EXPIRES = "2026-11-21T12:00:00Z"
VS_NAME, DR_NAME = "checkout-routing-chain", "checkout-routing-primary"
EF_NAME, FAULT_NAME = "checkout-routing-chain-fallback", "checkout-routing-primary-fault"
EF_GROUP = "networking.istio.io/v1alpha3"
VS_PATH = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices"
EDITED = {
    "name": "production",
    "route": [{"destination": {"host": HOSTS["primary"], "port": {"number": 8080}}}],
}
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
        ("EnvoyFilter", "created"),
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
    ef = cluster.stored("envoyfilters", EF_NAME, group=EF_GROUP)
    # Nothing pruned, nothing defaulted: every field fits the upstream CRD schemas.
    assert canonical(vs["spec"]) == canonical(built["VirtualService"]["spec"])
    assert canonical(dr["spec"]) == canonical(built["DestinationRule"]["spec"])
    assert canonical(ef["spec"]) == canonical(built["EnvoyFilter"]["spec"])
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


def test_reapply_updates_the_drill_rule_and_keeps_the_stored_production_rule(cluster):
    setup(cluster)
    # Production's route belongs to production once it exists: a person re-weights it.
    code, body = cluster.request(
        "PATCH",
        f"{VS_PATH}/{VS_NAME}",
        {"spec": {"http": [cluster.stored("virtualservices", VS_NAME)["spec"]["http"][0], EDITED]}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    spec = chain_spec()
    spec["route"]["timeout"] = "2s"
    _config, _guard, _kube, result = setup(cluster, spec)
    assert [a["action"] for a in result["applied"]] == ["unchanged", "patched", "unchanged"]
    drill, production = cluster.stored("virtualservices", VS_NAME)["spec"]["http"]
    assert drill["timeout"] == "2s"
    assert canonical(production) == canonical(EDITED)


def test_each_phase_faults_only_the_primary_inbound_for_the_context(cluster):
    config, guard, kube, _ = setup(cluster)
    vs_before = cluster.stored("virtualservices", VS_NAME)
    for phase in PHASES:
        result = apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=phase)
        assert result["fault"] == phase.to_dict()
        ef = cluster.stored("envoyfilters", FAULT_NAME, group=EF_GROUP)
        typed = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
        assert typed == envoy.http_fault(phase, CONTEXT)
        assert ef["spec"]["workloadSelector"] == {"labels": {"app": "checkout-api"}}
    # The route is never written during the phases: same resourceVersion, no fault anywhere.
    assert cluster.stored("virtualservices", VS_NAME) == vs_before
    assert typed["delay"] == {
        "fixed_delay": "1200ms",
        "percentage": {"numerator": 1000000, "denominator": "MILLION"},
    }
    assert apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=None) == {
        "fault": None,
        "removed": True,
    }
    assert cluster.stored("envoyfilters", FAULT_NAME, group=EF_GROUP) is None
    assert cluster.emulator.store.warnings == []


def test_teardown_removes_the_drill_objects_and_keeps_the_production_route(cluster):
    config, guard, kube, _ = setup(cluster)
    apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=PHASES[0])
    result = apply.remove_drill_rule(kube, config)
    assert result["removed"] is True and result["rules_removed"] == 1
    assert result["fault_filter_deleted"] and result["fallback_filter_deleted"]
    vs = cluster.stored("virtualservices", VS_NAME)
    assert canonical(vs["spec"]["http"]) == canonical([routes.production_rule(config)])
    assert "annotations" not in vs["metadata"] or not vs["metadata"]["annotations"]
    assert cluster.stored("destinationrules", DR_NAME) is not None
    assert cluster.stored("envoyfilters", EF_NAME, group=EF_GROUP) is None
    assert cluster.stored("envoyfilters", FAULT_NAME, group=EF_GROUP) is None
    again = apply.remove_drill_rule(kube, config)
    assert again["removed"] is False and again["reason"] == "no drill rule present"


class RacingKube(Kube):
    """Someone edits the route between the drill's read and its write, ``races`` times."""

    def __init__(self, api, cluster, races: int) -> None:
        super().__init__(api)
        self.cluster = cluster
        self.races = races
        self.conflicts = 0

    def patch(self, kind, name, patch, *, namespace=None):
        if self.races and kind.plural == "virtualservices":
            self.races -= 1
            stored = self.cluster.stored("virtualservices", VS_NAME)
            stored["spec"]["http"].append({**EDITED, "name": f"canary-{self.races}"})
            code, body = self.cluster.request("PUT", f"{VS_PATH}/{VS_NAME}", stored)
            assert code == 200, body
        try:
            return super().patch(kind, name, patch, namespace=namespace)
        except DrillError as exc:
            self.conflicts += exc.details.get("status") == 409
            raise


@pytest.mark.parametrize("step", ["reapply", "teardown", "remediation"])
def test_a_concurrent_edit_of_the_route_survives_every_drill_write(cluster, step):
    config, guard, kube, _ = setup(cluster)
    racing = RacingKube(kube.api, cluster, races=1)
    if step == "reapply":
        apply.apply_chain(
            racing,
            config,
            guard=guard,
            context_value=CONTEXT + "2",
            drill_id=DRILL_ID,
            expires_at=EXPIRES,
        )
    elif step == "teardown":
        apply.remove_drill_rule(racing, config)
    else:
        weights = {"primary": 0, "secondary": 20, "static-cache": 80}
        apply.shift_weights(racing, config, guard=guard, weights=weights, reason="P1 test")
    assert racing.conflicts == 1  # the stale write was refused, then re-read and re-applied
    names = [r["name"] for r in cluster.stored("virtualservices", VS_NAME)["spec"]["http"]]
    assert "canary-0" in names  # the concurrent edit survived
    if step == "reapply":
        assert names[0] == "drill"
        stored = cluster.stored("virtualservices", VS_NAME)["spec"]["http"][0]
        assert stored["match"][0]["headers"]["x-drill-context"]["exact"] == CONTEXT + "2"
    elif step == "teardown":
        assert "drill" not in names
    else:
        production = cluster.stored("virtualservices", VS_NAME)["spec"]["http"][1]
        assert [r["weight"] for r in production["route"]] == [0, 20, 80]


def test_write_conflicts_are_bounded(cluster):
    config, _guard, kube, _ = setup(cluster)
    racing = RacingKube(kube.api, cluster, races=100)
    with pytest.raises(TransientDrillError) as caught:
        apply.remove_drill_rule(racing, config)
    assert caught.value.code == "CHAIN_WRITE_CONFLICT"
    assert racing.conflicts == occ.MAX_ATTEMPTS
    names = [r["name"] for r in cluster.stored("virtualservices", VS_NAME)["spec"]["http"]]
    assert names[:2] == ["drill", "production"] and len(names) == 2 + occ.MAX_ATTEMPTS


def test_the_api_server_refuses_a_stale_resource_version(cluster):
    """Kubernetes API conventions (concurrency control): a write naming an old resourceVersion
    is a 409 Conflict, a merge patch included; the emulator must answer as the server does."""
    setup(cluster)
    stale = cluster.stored("virtualservices", VS_NAME)["metadata"]["resourceVersion"]
    patch = {"metadata": {"annotations": {"a": "1"}}}
    code, _ = cluster.request(
        "PATCH", f"{VS_PATH}/{VS_NAME}", patch, content_type="application/merge-patch+json"
    )
    assert code == 200
    patch["metadata"]["resourceVersion"] = stale
    code, body = cluster.request(
        "PATCH", f"{VS_PATH}/{VS_NAME}", patch, content_type="application/merge-patch+json"
    )
    assert code == 409 and body["reason"] == "Conflict"


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


def test_faults_need_the_drill_rule_and_leave_a_foreign_filter_alone(cluster):
    config, guard, kube, _ = setup(cluster)
    apply.remove_drill_rule(kube, config)
    with pytest.raises(RoutingError) as caught:
        apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=PHASES[0])
    assert caught.value.code == "CHAIN_NOT_APPLIED"
    assert cluster.stored("envoyfilters", FAULT_NAME, group=EF_GROUP) is None
    config, guard, kube, _ = setup(cluster)
    foreign = {
        "apiVersion": EF_GROUP,
        "kind": "EnvoyFilter",
        "metadata": {"name": FAULT_NAME, "namespace": NAMESPACE},
        "spec": {"configPatches": []},
    }
    code, body = cluster.request(
        "POST", f"/apis/{EF_GROUP}/namespaces/{NAMESPACE}/envoyfilters", foreign
    )
    assert code == 201, body
    with pytest.raises(RoutingError) as caught:
        apply.set_fault(kube, config, guard=guard, context_value=CONTEXT, phase=None)
    assert caught.value.code == "CHAIN_NAME_TAKEN"
    assert cluster.stored("envoyfilters", FAULT_NAME, group=EF_GROUP) is not None


def test_spec_change_removes_what_the_built_object_no_longer_has():
    built = {"metadata": {"labels": {"a": "1"}}, "spec": {"configPatches": [1]}}
    stored = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {"configPatches": [0], "workloadSelector": {"labels": {"app": "x"}}},
    }
    assert occ.spec_change(built)(stored) == {
        "spec": {"workloadSelector": None, "configPatches": [1]}
    }
    assert occ.spec_change(built)({**stored, "spec": built["spec"]}) is None
