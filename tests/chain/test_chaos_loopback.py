"""The chaos drill end to end on loopback: the chain applied to the API emulator, the caller's
sidecar and the tiers' pods (chain_mesh) routing by the Istio objects read back from there.

The fallback is measured, not configured: the tier that answered stamps itself, faults sit at
the primary's inbound side, and the caller's retries (previous_priorities over the aggregate
cluster) are what moves a request to the next tier. Rates are exact.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from fractions import Fraction

import pytest
from chainkit import SCHEMA, chain_spec

from drillkit.chain import apply, routes
from drillkit.chain.chaos import run_chaos
from drillkit.chain.escalation import evaluate
from drillkit.chain.prometheus import query_fallback_rate
from drillkit.chain.spec import parse_chain_spec
from drillkit.routing.context import sign_context
from drillkit.routing.guard import ProductionGuard

pytestmark = pytest.mark.k8s
KEY = os.urandom(32)
SPLIT = {"primary": 95, "secondary": 4, "static-cache": 1}


class Drill:
    def __init__(self, cluster, front, spec: dict) -> None:
        self.spec = parse_chain_spec(spec)
        self.route = self.spec.route
        self.guard = ProductionGuard.from_spec(self.spec.production)
        self.kube = cluster.kube()
        self.cluster = cluster
        self.front = front
        self.drill_id = str(uuid.uuid4())
        self.context = sign_context(
            drill_id=self.drill_id, environment="drill", key=KEY, ttl_seconds=3600
        )
        self.applied = apply.apply_chain(
            self.kube,
            self.route,
            guard=self.guard,
            context_value=self.context,
            drill_id=self.drill_id,
            expires_at="2026-11-21T12:00:00Z",
        )

    def set_fault(self, phase) -> None:
        apply.set_fault(
            self.kube, self.route, guard=self.guard, context_value=self.context, phase=phase
        )

    def run(self, prometheus=None, set_fault=None) -> tuple[dict, dict]:
        result = run_chaos(
            self.spec.chaos,
            budget=self.route.timeout,
            context_value=self.context,
            drill_id=self.drill_id,
            set_fault=set_fault or self.set_fault,
            prometheus=prometheus,
        )
        return result, evaluate(result, self.spec.escalation, self.route)


def drill(cluster, front, *, phases=None, route=None, weights=None, **chaos) -> Drill:
    spec = chain_spec(chaos={"url": front.url, **chaos})
    if phases is not None:
        spec["chaos"]["phases"] = phases
    spec["route"].update(route or {})
    for tier, weight in (weights or {}).items():
        spec["route"]["tiers"][tier]["weight"] = weight
    return Drill(cluster, front, spec)


def get(front, headers: dict | None = None) -> tuple[int, str | None]:
    request = urllib.request.Request(front.url + "/api/v1/quote", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("x-mesh-routing-tier")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-mesh-routing-tier")


def split(front, n: int = 100) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(n):
        status, tier = get(front)
        assert status == 200
        counts[tier] = counts.get(tier, 0) + 1
    return counts


def production_rule(cluster) -> str:
    stored = cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"][-1]
    return json.dumps(stored, sort_keys=True)


@pytest.mark.parametrize(
    "percent, requests, aborted, severity",
    [
        (12, 100, 12, None),  # 12%: at the P2 threshold, not above
        (12.5, 200, 25, "P2"),
        (15, 200, 30, "P2"),
        (25, 200, 50, "P2"),  # 25%: at the P1 threshold, not above
        (25.5, 200, 51, "P1"),
    ],
)
def test_abort_at_the_primary_falls_back_by_retry(
    cluster, front, tiers, percent, requests, aborted, severity
):
    d = drill(
        cluster,
        front,
        requests=requests,
        replays=20,
        phases=[{"name": "abort", "abort": {"percent": percent, "http_status": 503}}],
    )
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["fallback_rate"] == {
        "count": aborted,
        "total": requests,
        "percent": 100 * aborted / requests,
        "by_tier": {"secondary": aborted},
    }
    # Marked by the tier that answered; every abort was retried (previous_priorities) once.
    assert phase["tiers"] == {"primary": requests - aborted, "secondary": aborted}
    assert phase["error_rate"]["count"] == 0
    assert phase["replay_mismatch_rate"]["count"] == 0
    assert phase["replay_mismatch_rate"]["total"] == 20
    assert decision["severity"] == severity
    assert {rule for _, rule, _ in d.front.seen} == {"drill"}
    assert {ctx for ctx, _, _ in d.front.seen} == {d.context}
    # The fault filter is gone when the phases end; the route never carried a fault.
    assert (
        cluster.stored(
            "envoyfilters",
            "checkout-routing-primary-fault",
            "checkout",
            group="networking.istio.io/v1alpha3",
        )
        is None
    )
    assert all(
        "fault" not in r
        for r in cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"]
    )


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


def test_primary_5xx_falls_back_on_the_first_retry(cluster, front, tiers):
    tiers["primary"].fail_ratio = Fraction(1, 4)
    d = drill(
        cluster,
        front,
        requests=100,
        replays=0,
        phases=[{"name": "baseline"}],
        # Concurrent answers complete in any order: keep ejection out of what this test isolates.
        route={"outlier_detection": {"consecutive_5xx": 100}},
    )
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["fallback_rate"]["count"] == 25
    assert phase["fallback_rate"]["by_tier"] == {"secondary": 25}
    # previous_priorities: the retry goes to the next tier, not to the primary again.
    assert tiers["primary"].requests == 100
    assert tiers["secondary"].requests == 25
    assert decision["severity"] == "P2"  # exactly 25% is not above the P1 threshold


def test_static_cache_is_the_last_tier(cluster, front, tiers):
    tiers["primary"].fail_ratio = Fraction(1)
    tiers["secondary"].fail_ratio = Fraction(1, 2)
    d = drill(cluster, front, requests=20, replays=0, phases=[{"name": "baseline"}])
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["tiers"] == {"secondary": 10, "static-cache": 10}
    assert phase["fallback_rate"]["count"] == 20 and decision["severity"] == "P1"


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


# The spec's ratios (timeout 3s, per-try 1s, delays 0.5/0.8/1.2s), scaled by 1/4.
@pytest.mark.parametrize(
    "per_try, fallbacks",
    [("250ms", [0, 0, 4]), ("100ms", [4, 4, 4])],
)
def test_delay_phases_per_try_timeout_then_fallback_within_budget(
    cluster, front, per_try, fallbacks
):
    phases = [
        {"name": "delay-500ms", "delay": {"fixed": "125ms"}},
        {"name": "delay-800ms", "delay": {"fixed": "200ms"}},
        {"name": "delay-1200ms", "delay": {"fixed": "300ms"}},
    ]
    d = drill(
        cluster,
        front,
        requests=4,
        replays=0,
        concurrency=4,
        phases=phases,
        route={
            "timeout": "750ms",
            "retries": {"attempts": 2, "per_try_timeout": per_try},
            # Per-try timeouts count as 5xx: keep ejection out of what this test isolates.
            "outlier_detection": {"consecutive_5xx": 100},
        },
    )
    result, decision = d.run()
    per_try_ms = float(per_try.removesuffix("ms"))
    assert [p["fallback_rate"]["count"] for p in result["phases"]] == fallbacks
    for phase, delay_ms, fell_back in zip(
        result["phases"], (125, 200, 300), fallbacks, strict=True
    ):
        assert phase["error_rate"]["count"] == 0
        assert phase["over_budget_rate"]["count"] == 0  # inside the 750 ms budget
        if fell_back:
            assert phase["tiers"] == {"secondary": 4}
            assert per_try_ms <= phase["latency_ms"]["p50"] < 750
        else:
            assert phase["tiers"] == {"primary": 4}
            assert delay_ms <= phase["latency_ms"]["p50"] < 750
    assert decision["severity"] == "P1"  # a phase at 100% fallback


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


@pytest.mark.parametrize("invalid, severity", [(5, None), (6, "P2")])
def test_schema_failures_five_vs_six_percent(cluster, front, tiers, invalid, severity):
    tiers["primary"].invalid_ratio = Fraction(invalid, 100)
    d = drill(
        cluster,
        front,
        requests=100,
        replays=0,
        response_schema=SCHEMA,
        phases=[{"name": "baseline"}],
    )
    result, decision = d.run()
    schema = result["phases"][0]["schema_failure_rate"]
    assert (schema["count"], schema["total"]) == (invalid, 100)
    assert schema["samples"][0]["why"].startswith("price:")
    assert decision["severity"] == severity


def test_replays_without_an_idempotency_store_are_caught(cluster, front, tiers):
    for tier in tiers.values():
        tier.store = None
    tiers["primary"].nondeterministic = True
    d = drill(cluster, front, requests=20, replays=5, phases=[{"name": "baseline"}])
    result, decision = d.run()
    replay = result["phases"][0]["replay_mismatch_rate"]
    assert (replay["count"], replay["total"]) == (5, 5)
    assert decision["severity"] == "P2"
    assert decision["reasons"][0]["metric"] == "replay_mismatch_rate"


def test_untagged_answers_are_not_guessed(cluster, front, tiers, monkeypatch):
    original = tiers["secondary"].handle

    def unstamped(*args):
        status, headers, body = original(*args)
        return status, {k: v for k, v in headers.items() if k != "x-mesh-routing-tier"}, body

    monkeypatch.setattr(tiers["secondary"], "handle", unstamped)
    d = drill(
        cluster,
        front,
        requests=10,
        replays=0,
        phases=[{"name": "abort-50", "abort": {"percent": 50}}],
    )
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["untagged_rate"]["count"] == 5 and phase["fallback_rate"]["count"] == 0
    assert decision["severity"] == "P3"
    assert decision["reasons"][0]["code"] == "CHAIN_TIER_UNTAGGED"


def test_only_the_signed_context_is_faulted(cluster, front):
    d = drill(cluster, front, phases=[{"name": "abort-all", "abort": {"percent": 100}}])
    d.set_fault(d.spec.chaos.phases[0])
    for headers in ({}, {"X-Drill-Context": d.context + "x"}, {"X-Drill-Context": "v1.forged"}):
        assert get(front, headers) == (200, "primary")
    assert get(front, {"X-Drill-Context": d.context}) == (200, "secondary")
    assert [rule for _, rule, _ in front.seen] == ["production"] * 3 + ["drill"]


def test_the_deadline_bounds_the_drill(cluster, front):
    phases = [
        {"name": "delay-1200ms", "delay": {"fixed": "1.2s"}},
        {"name": "abort-10", "abort": {"percent": 10}},
    ]
    d = drill(
        cluster,
        front,
        requests=2,
        replays=0,
        concurrency=2,
        deadline="1s",
        request_timeout="1s",
        phases=phases,
        route={"timeout": "3s", "retries": {"attempts": 1, "per_try_timeout": "1.5s"}},
    )
    result, decision = d.run()
    first, second = result["phases"]
    assert first["error_rate"]["count"] == 2  # cut at the deadline: no answer
    assert second == {"name": "abort-10", "complete": False, "skipped": "deadline"}
    assert result["complete"] is False
    assert decision["severity"] == "P1"  # errors above 5% outrank the P3 of the skipped phase
    assert "CHAOS_INCOMPLETE" in {r["code"] for r in decision["reasons"]}


def test_prometheus_rate_decides_when_configured(cluster, front, prometheus):
    prometheus.value = "0.255"
    spec = chain_spec(
        chaos={
            "url": front.url,
            "requests": 10,
            "replays": 0,
            "phases": [{"name": "baseline"}],
            "prometheus": {
                "url": prometheus.url,
                "query": 'sum(rate(fallback_total{route="checkout"}[${window}])) / '
                'sum(rate(requests_total{route="checkout"}[${window}]))',
            },
        },
        escalation={"window": "15m"},
    )
    d = Drill(cluster, front, spec)
    config = d.spec.chaos.prometheus
    result, decision = d.run(prometheus=lambda: query_fallback_rate(config, window=900))
    assert result["phases"][0]["fallback_rate"]["count"] == 0
    assert result["prometheus"]["value"] == "0.255" and result["prometheus"]["window"] == "15m"
    assert prometheus.queries == [
        'sum(rate(fallback_total{route="checkout"}[15m])) / '
        'sum(rate(requests_total{route="checkout"}[15m]))'
    ]
    assert decision["severity"] == "P1" and decision["reasons"][0]["phase"] == "prometheus"


def test_prometheus_outage_is_p3_and_the_answers_still_count(cluster, front, tiers, prometheus):
    prometheus.value = None  # no series: the query cannot say anything
    tiers["primary"].fail_ratio = Fraction(1, 10)
    spec = chain_spec(
        chaos={
            "url": front.url,
            "requests": 20,
            "replays": 0,
            "phases": [{"name": "baseline"}],
            "prometheus": {"url": prometheus.url, "query": "sum(rate(fb[${window}]))"},
        }
    )
    d = Drill(cluster, front, spec)
    config = d.spec.chaos.prometheus
    result, decision = d.run(prometheus=lambda: query_fallback_rate(config, window=600))
    assert result["prometheus"]["error"]["code"] == "PROMETHEUS_NO_DATA"
    assert decision["severity"] == "P3"  # 10% from the answers: below P2; unverified source
    tiers["primary"].fail_ratio = Fraction(3, 10)
    d = Drill(cluster, front, spec)  # a new run: new idempotency keys
    result, decision = d.run(prometheus=lambda: query_fallback_rate(config, window=600))
    assert decision["severity"] == "P1"  # 30% from the answers outranks the P3
    assert [r["code"] for r in decision["reasons"]] == [
        "CHAIN_FALLBACK_RATE_P1",
        "PROMETHEUS_NO_DATA",
    ]


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
