"""What the loopback mesh does, as Envoy and Istio document it, and why the chain is built the way
it is: weights are a split (retries stay in the chosen cluster), a client-side fault turns retries
and timeouts off, outlier ejection fails over between the aggregate's priorities, and the drill's
objects leave production's split alone, even with a person editing the route meanwhile.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from chainkit import SPLIT, chain_spec, drill, get, split

from drillkit.chain import apply, routes
from drillkit.chain.spec import parse_chain_spec

pytestmark = pytest.mark.k8s


def production_rule(cluster) -> str:
    stored = cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"][-1]
    return json.dumps(stored, sort_keys=True)


def test_retries_stay_in_the_chosen_weighted_cluster(cluster, front, production_front, tiers):
    """Envoy semantics the old stand-in got wrong: a failing weighted cluster is retried in
    place, never in the next weighted cluster."""
    tiers["primary"].fail_ratio = Fraction(1)
    drill(cluster, front, phases=[{"name": "baseline"}], weights={"primary": 50, "secondary": 50})
    outcomes = [get(production_front) for _ in range(10)]
    assert outcomes.count((200, "secondary")) == 5
    assert outcomes.count((503, "primary")) == 5
    # 5 requests to primary, 3 tries each (2 retries), then the 5xx reaches the caller. The
    # ejected primary is still tried: a cluster without healthy hosts is in panic mode.
    assert tiers["primary"].requests == 15


def test_outlier_ejection_fails_over_without_retries(cluster, front, tiers):
    """Five consecutive 5xx eject the primary; the aggregate's next priority takes the load."""
    tiers["primary"].fail_ratio = Fraction(1)
    d = drill(
        cluster,
        front,
        requests=12,
        replays=0,
        concurrency=1,
        phases=[{"name": "baseline"}],
        route={"retries": {"attempts": 0, "per_try_timeout": "300ms"}},
    )
    result, _ = d.run()
    [phase] = result["phases"]
    assert phase["error_rate"]["count"] == 5  # no retry: each 5xx reaches the caller
    assert phase["tiers"] == {"primary": 5, "secondary": 7}
    assert tiers["primary"].requests == 5


def test_client_side_fault_turns_retries_and_timeouts_off(cluster, front, tiers):
    """Why faults never go on the caller's route (Istio HTTPRoute.fault)."""
    d = drill(cluster, front, phases=[{"name": "baseline"}])
    vs = cluster.stored("virtualservices", "checkout-routing-chain")
    drill_rule = vs["spec"]["http"][0]
    drill_rule["fault"] = {"abort": {"httpStatus": 503, "percentage": {"value": 50}}}
    tiers["primary"].delay = 0.5  # above the 300 ms per-try timeout
    code, body = cluster.request(
        "PUT",
        "/apis/networking.istio.io/v1/namespaces/checkout/virtualservices/checkout-routing-chain",
        vs,
    )
    assert code == 200, body
    outcomes = [get(front, {"X-Drill-Context": d.context}) for _ in range(4)]
    # Aborted ones are not retried; the others wait out the slow primary: no per-try timeout.
    assert outcomes == [(200, "primary"), (503, None), (200, "primary"), (503, None)]
    assert tiers["secondary"].requests == 0


def test_only_the_signed_context_is_faulted(cluster, front):
    d = drill(cluster, front, phases=[{"name": "abort-all", "abort": {"percent": 100}}])
    d.set_fault(d.spec.chaos.phases[0])
    for headers in ({}, {"X-Drill-Context": d.context + "x"}, {"X-Drill-Context": "v1.forged"}):
        assert get(front, headers) == (200, "primary")
    assert get(front, {"X-Drill-Context": d.context}) == (200, "secondary")
    assert [rule for _, rule, _ in front.seen] == ["production"] * 3 + ["drill"]


def test_no_fault_no_fallback_whatever_production_split(cluster, front, production_front):
    """The old chain copied production's weighted split into the drill rule: at 95/4/1, ~5% of
    drill traffic 'fell back' with no fault at all, and escalation followed the weights."""
    d = drill(cluster, front, requests=100, replays=0, phases=[{"name": "baseline"}], weights=SPLIT)
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["tiers"] == {"primary": 100}
    assert phase["fallback_rate"]["count"] == 0 and decision["severity"] is None
    # Production callers still get the declared split: weights are a split, not a fallback.
    assert split(production_front) == {"primary": 95, "secondary": 4, "static-cache": 1}


def test_production_split_unchanged_by_the_drill(cluster, front, production_front):
    spec = chain_spec(chaos={"url": front.url, "phases": [{"name": "baseline"}]})
    for tier, weight in SPLIT.items():
        spec["route"]["tiers"][tier]["weight"] = weight
    config = parse_chain_spec(spec).route
    # Production exists before any drill: the chain's route, no drill rule.
    [_, (_, vs)] = routes.chain_objects(config, context_value=None)
    code, body = cluster.request(
        "POST", "/apis/networking.istio.io/v1/namespaces/checkout/virtualservices", vs
    )
    assert code == 201, body
    before_rule = production_rule(cluster)
    before = split(production_front)
    d = drill(
        cluster,
        front,
        requests=40,
        replays=0,
        weights=SPLIT,
        phases=[
            {"name": "abort-all", "abort": {"percent": 100}},
            {"name": "delay", "delay": {"fixed": "400ms"}},
        ],
    )
    during: list[dict] = []

    def fault_and_measure(phase) -> None:
        d.set_fault(phase)
        during.append(split(production_front))

    result, _ = d.run(set_fault=fault_and_measure)
    assert [p["fallback_rate"]["percent"] for p in result["phases"]] == [100.0, 100.0]
    assert before == {"primary": 95, "secondary": 4, "static-cache": 1}
    assert during == [before] * 3  # both faults on, and after the last one was cleared
    assert production_rule(cluster) == before_rule
    assert {rule for ctx, rule, _ in production_front.seen} == {"production"}


def test_a_concurrent_edit_during_a_drill_survives(cluster, front, production_front):
    """A person re-weights production while the drill runs; the drill's teardown keeps it."""
    d = drill(
        cluster,
        front,
        requests=10,
        replays=0,
        phases=[{"name": "abort-20", "abort": {"percent": 20}}, {"name": "baseline"}],
    )
    path = "/apis/networking.istio.io/v1/namespaces/checkout/virtualservices/checkout-routing-chain"

    def fault_and_edit(phase) -> None:
        d.set_fault(phase)
        if phase is not None and phase.name == "baseline":
            stored = cluster.stored("virtualservices", "checkout-routing-chain")
            for entry, weight in zip(stored["spec"]["http"][-1]["route"], (90, 10, 0), strict=True):
                entry["weight"] = weight
            code, body = cluster.request("PUT", path, stored)
            assert code == 200, body

    result, _ = d.run(set_fault=fault_and_edit)
    assert [p["fallback_rate"]["count"] for p in result["phases"]] == [2, 0]
    apply.remove_drill_rule(d.kube, d.route)
    [rule] = cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"]
    assert [r["weight"] for r in rule["route"]] == [90, 10, 0]
    assert split(production_front) == {"primary": 90, "secondary": 10}
