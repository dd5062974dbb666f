"""Pure builders: the drill rule is the production rule plus the context match and a fault; the
production rule never changes; faults and destinations are checked before any write."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
from chainkit import HOSTS, chain_spec

from drillkit.chain import guards, routes
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
    primary, secondary, cache = rule["route"]
    assert primary["headers"] == {
        "request": {"remove": ["x-fallback-triggered", "x-fallback-reason"]},
        "response": {"set": {"x-mesh-routing-tier": "primary"}},
    }
    assert secondary["headers"]["request"]["set"] == {
        "x-fallback-triggered": "true",
        "x-fallback-reason": "tier-secondary",
    }
    assert cache["headers"]["response"]["set"] == {"x-mesh-routing-tier": "static-cache"}


@pytest.mark.parametrize(
    "phase, fault",
    [
        (
            FaultPhase("abort", abort_percent=Fraction(25, 2)),
            {"abort": {"httpStatus": 503, "percentage": {"value": 12.5}}},
        ),
        (
            FaultPhase("d500", delay=0.5),
            {"delay": {"fixedDelay": "500ms", "percentage": {"value": 100.0}}},
        ),
        (
            FaultPhase("d800", delay=0.8),
            {"delay": {"fixedDelay": "800ms", "percentage": {"value": 100.0}}},
        ),
        (
            FaultPhase("d1200", delay=1.2),
            {"delay": {"fixedDelay": "1200ms", "percentage": {"value": 100.0}}},
        ),
    ],
)
def test_drill_rule_is_production_plus_match_plus_fault(config, phase, fault):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    drill, production = vs["spec"]["http"]
    assert canonical(production) == canonical(routes.production_rule(config))
    with_fault = routes.drill_rule(config, CONTEXT, phase)
    assert with_fault["fault"] == fault
    assert with_fault["match"] == [{"headers": {"x-drill-context": {"exact": CONTEXT}}}]
    stripped = {k: v for k, v in with_fault.items() if k not in ("name", "match", "fault")}
    assert canonical(stripped) == canonical({k: v for k, v in production.items() if k != "name"})
    assert "fault" not in drill  # applied without a fault; phases add it


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


def test_fault_outside_the_drill_rule_is_refused(config):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    kind = virtual_service()
    guard = ProductionGuard()
    guards.check_objects(config, [(kind, vs)], guard)
    bad = copy.deepcopy(vs)
    bad["spec"]["http"][1]["fault"] = {"abort": {"httpStatus": 503, "percentage": {"value": 1}}}
    with pytest.raises(RoutingError) as caught:
        guards.check_objects(config, [(kind, bad)], guard)
    assert caught.value.code == "CHAIN_FAULT_SCOPE"
    widened = copy.deepcopy(vs)
    widened["spec"]["http"][0]["fault"] = bad["spec"]["http"][1]["fault"]
    widened["spec"]["http"][0]["match"].append({"uri": {"prefix": "/"}})
    with pytest.raises(RoutingError, match="does not match only the signed"):
        guards.check_objects(config, [(kind, widened)], guard)


def test_undeclared_destination_is_refused_production_one_by_the_guard(config):
    vs = routes.istio_virtual_service(config, context_value=CONTEXT)
    kind = virtual_service()
    guard = ProductionGuard.from_spec({"hosts": ["payments.payments.svc.cluster.local"]})
    stray = copy.deepcopy(vs)
    stray["spec"]["http"][0]["route"][1]["destination"]["host"] = "other.shop.svc.cluster.local"
    with pytest.raises(RoutingError) as caught:
        guards.check_objects(config, [(kind, stray)], guard)
    assert caught.value.code == "CHAIN_UNDECLARED_DESTINATION"
    stray["spec"]["http"][0]["route"][1]["destination"]["host"] = (
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
    assert drill["timeouts"] == {"request": "1s", "backendRequest": "300ms"}
    assert [(b["name"], b["namespace"], b["weight"]) for b in production["backendRefs"]] == [
        ("checkout-api", "checkout", 100),
        ("checkout-api", "checkout-dr", 0),
        ("checkout-static", "edge-cache", 0),
    ]
    tier_filter = production["backendRefs"][2]["filters"][1]
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
