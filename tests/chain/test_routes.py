"""Pure builders: the drill rule routes the signed context to the primary, the fallback filter makes
that route an aggregate cluster of the tiers, the fault filter sits at the primary's inbound side
for the context only; faults and destinations are checked before any write."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
from chainkit import HOSTS, chain_spec

from drillkit.chain import envoy, guards, routes
from drillkit.chain.model import FaultPhase
from drillkit.chain.spec import parse_chain_spec
from drillkit.exceptions import ProductionTargetRefusedError, RoutingError
from drillkit.k8s.kinds import virtual_service
from drillkit.routing.guard import ProductionGuard

pytestmark = pytest.mark.unit
CONTEXT = "v1.6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10.drill.1.2.sig"


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@pytest.fixture
def config():
    spec = chain_spec()
    spec["route"]["tiers"]["primary"]["weight"] = 90
    spec["route"]["tiers"]["secondary"]["weight"] = 8
    spec["route"]["tiers"]["static-cache"]["weight"] = 2
    return parse_chain_spec(spec).route


def test_production_rule_weights_timeouts_retries_and_headers(config):
    rule = routes.production_rule(config)
    assert rule["timeout"] == "1s"
    assert rule["retries"] == {
        "attempts": 2,
        "perTryTimeout": "300ms",
        "retryOn": "5xx,reset,connect-failure",
    }
    assert [(r["destination"]["host"], r["weight"]) for r in rule["route"]] == [
        (HOSTS["primary"], 90),
        (HOSTS["secondary"], 8),
        (HOSTS["static-cache"], 2),
    ]
    # Per weighted destination: Envoy sets it on that cluster's answers only. No request
    # headers: a header sent to the upstream says nothing about who answered.
    assert [r["headers"] for r in rule["route"]] == [
        {"response": {"set": {"x-mesh-routing-tier": tier}}}
        for tier in ("primary", "secondary", "static-cache")
    ]


def test_drill_rule_is_primary_only_with_production_retries_and_no_fault(config):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    drill, production = vs["spec"]["http"]
    assert canonical(production) == canonical(routes.production_rule(config))
    assert drill == {
        "name": "drill",
        "match": [{"headers": {"x-drill-context": {"exact": CONTEXT}}}],
        # One destination and no headers: the EnvoyFilter swaps its cluster for the aggregate,
        # and a route-level tier header would be stamped on every tier's answers.
        "route": [{"destination": {"host": HOSTS["primary"], "port": {"number": 8080}}}],
        "timeout": production["timeout"],
        "retries": production["retries"],
    }


def test_fallback_filter_aggregates_the_tiers_for_the_drill_route_only(config):
    objects = routes.chain_objects(config, context_value=CONTEXT)
    assert [o["kind"] for _, o in objects] == ["DestinationRule", "VirtualService", "EnvoyFilter"]
    ef = objects[2][1]
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "drill-runner"}}
    cluster, route = ef["spec"]["configPatches"]
    assert cluster["patch"]["operation"] == "ADD"
    aggregate = cluster["patch"]["value"]
    assert aggregate["cluster_type"]["name"] == "envoy.clusters.aggregate"
    assert aggregate["cluster_type"]["typed_config"]["clusters"] == [
        f"outbound|8080||{HOSTS['primary']}",
        f"outbound|8080||{HOSTS['secondary']}",
        f"outbound|80||{HOSTS['static-cache']}",
    ]
    assert route["match"]["routeConfiguration"]["vhost"] == {
        "name": "checkout-router.checkout.svc.cluster.local:8080",
        "route": {"name": "drill"},
    }
    value = route["patch"]["value"]["route"]
    assert value["cluster"] == aggregate["name"]
    assert value["retry_policy"]["retry_priority"]["name"] == (
        "envoy.retry_priorities.previous_priorities"
    )
    assert routes.chain_objects(config, context_value=None)[-1][1]["kind"] == "VirtualService"


@pytest.mark.parametrize(
    "phase, fault",
    [
        (
            FaultPhase("abort", abort_percent=Fraction(25, 2)),
            {
                "abort": {
                    "http_status": 503,
                    "percentage": {"numerator": 125000, "denominator": "MILLION"},
                }
            },
        ),
        (
            FaultPhase("d500", delay=0.5),
            {
                "delay": {
                    "fixed_delay": "500ms",
                    "percentage": {"numerator": 1000000, "denominator": "MILLION"},
                }
            },
        ),
        (
            FaultPhase("d1200", delay=1.2, delay_percent=Fraction(50)),
            {
                "delay": {
                    "fixed_delay": "1200ms",
                    "percentage": {"numerator": 500000, "denominator": "MILLION"},
                }
            },
        ),
    ],
)
def test_fault_filter_on_the_primary_inbound_for_the_context_only(config, phase, fault):
    ef = envoy.fault_filter(config, phase, CONTEXT, routes.metadata(config, "x"))
    assert ef["metadata"]["namespace"] == "checkout"  # the primary's namespace
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "checkout-api"}}
    [patch] = ef["spec"]["configPatches"]
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    typed = patch["patch"]["value"]["typed_config"]
    assert typed["headers"] == [{"name": "x-drill-context", "string_match": {"exact": CONTEXT}}]
    assert {k: v for k, v in typed.items() if k in ("abort", "delay")} == fault
    guards.check_fault_filter(config, ef, CONTEXT)
    for widen in (
        lambda t: t.pop("headers"),
        lambda t: t.update(headers=[{"name": "x-drill-context", "present_match": True}]),
    ):
        bad = copy.deepcopy(ef)
        widen(bad["spec"]["configPatches"][0]["patch"]["value"]["typed_config"])
        with pytest.raises(RoutingError) as caught:
            guards.check_fault_filter(config, bad, CONTEXT)
        assert caught.value.code == "CHAIN_FAULT_SCOPE"
    unscoped = copy.deepcopy(ef)
    del unscoped["spec"]["workloadSelector"]
    with pytest.raises(RoutingError, match="primary's inbound"):
        guards.check_fault_filter(config, unscoped, CONTEXT)


def test_without_a_drill_the_route_is_the_production_rule_alone(config):
    vs = routes.istio_virtual_service(config, context_value=None)
    assert vs["spec"] == {"hosts": [config.host], "http": [routes.production_rule(config)]}
    labels = vs["metadata"]["labels"]
    # Never "drillkit": the GC deletes expired drillkit-managed routes, and this one is production.
    assert labels["app.kubernetes.io/managed-by"] == "drillkit-routing-chain"


def test_destination_rule_on_primary(config):
    dr = routes.istio_destination_rule(config)
    assert dr["spec"]["host"] == HOSTS["primary"]
    assert dr["spec"]["trafficPolicy"]["outlierDetection"] == {
        "consecutive5xxErrors": 5,
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 50,
    }
    assert dr["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] == 100


def test_no_route_rule_may_carry_a_fault(config):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    kind = virtual_service()
    guard = ProductionGuard()
    guards.check_objects(config, [(kind, vs)], guard)
    for index in (0, 1):
        bad = copy.deepcopy(vs)
        bad["spec"]["http"][index]["fault"] = {
            "abort": {"httpStatus": 503, "percentage": {"value": 1}}
        }
        with pytest.raises(RoutingError, match="turns off a route's timeout and retries") as caught:
            guards.check_objects(config, [(kind, bad)], guard)
        assert caught.value.code == "CHAIN_FAULT_SCOPE"


def test_fallback_filter_may_patch_only_the_drill_route_and_tiers(config):
    objects = routes.chain_objects(config, context_value=CONTEXT)
    guard = ProductionGuard()
    patched = copy.deepcopy(objects)
    patched[2][1]["spec"]["configPatches"][1]["match"]["routeConfiguration"]["vhost"]["route"][
        "name"
    ] = "production"
    with pytest.raises(RoutingError, match="production's route would change"):
        guards.check_objects(config, patched, guard)
    stray = copy.deepcopy(objects)
    members = stray[2][1]["spec"]["configPatches"][0]["patch"]["value"]["cluster_type"]
    members["typed_config"]["clusters"].append("outbound|80||payments.payments.svc.cluster.local")
    with pytest.raises(RoutingError) as caught:
        guards.check_objects(config, stray, guard)
    assert caught.value.code == "CHAIN_UNDECLARED_DESTINATION"


def test_undeclared_destination_is_refused_production_one_by_the_guard(config):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    kind = virtual_service()
    guard = ProductionGuard.from_spec({"hosts": ["payments.payments.svc.cluster.local"]})
    stray = copy.deepcopy(vs)
    stray["spec"]["http"][1]["route"][1]["destination"]["host"] = "other.shop.svc.cluster.local"
    with pytest.raises(RoutingError) as caught:
        guards.check_objects(config, [(kind, stray)], guard)
    assert caught.value.code == "CHAIN_UNDECLARED_DESTINATION"
    stray["spec"]["http"][1]["route"][1]["destination"]["host"] = (
        "payments.payments.svc.cluster.local"
    )
    with pytest.raises(ProductionTargetRefusedError, match="is production"):
        guards.check_objects(config, [(kind, stray)], guard)


def test_declared_tiers_are_allowed_even_when_the_guard_lists_them():
    spec = chain_spec(production={"hosts": ["*.checkout.svc.cluster.local"]})
    config = parse_chain_spec(spec).route  # primary matches the guard: it is the chain's own tier
    guard = ProductionGuard.from_spec(spec["production"])
    guards.check_objects(config, routes.chain_objects(config, context_value=CONTEXT), guard)


def test_gateway_api_route_expresses_weights_timeouts_and_header_filters():
    spec = chain_spec(chaos={"phases": [{"name": "baseline"}]})
    spec["route"]["mesh"] = "gateway_api"
    spec["route"]["parent"] = {"kind": "Service", "name": "checkout-router", "port": 8080}
    config = parse_chain_spec(spec).route
    [(kind, route)] = routes.chain_objects(config, context_value=CONTEXT)
    assert kind.kind == "HTTPRoute"
    drill, production = route["spec"]["rules"]
    assert drill["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "Exact", "name": "x-drill-context", "value": CONTEXT}],
        }
    ]
    assert production["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    # No failover in HTTPRoute: drill traffic goes to the primary alone, never by weight.
    assert [(b["name"], b["namespace"]) for b in drill["backendRefs"]] == [
        ("checkout-api", "checkout")
    ]
    assert drill["timeouts"] == {"request": "1s", "backendRequest": "300ms"}
    assert [(b["name"], b["namespace"], b["weight"]) for b in production["backendRefs"]] == [
        ("checkout-api", "checkout", 100),
        ("checkout-api", "checkout-dr", 0),
        ("checkout-static", "edge-cache", 0),
    ]
    tier_filter = production["backendRefs"][2]["filters"][0]
    assert tier_filter["responseHeaderModifier"]["set"] == [
        {"name": "x-mesh-routing-tier", "value": "static-cache"}
    ]
    assert {k for r in route["spec"]["rules"] for k in r} == {
        "name",
        "matches",
        "backendRefs",
        "timeouts",
    }
    assert "fault injection" in routes.GATEWAY_API_NOT_EXPRESSED
