"""The chaos drill end to end on loopback: the chain applied to the API emulator, the mesh front
routing by the VirtualService it reads back from there, three tier servers. Rates are exact."""

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
        apply.apply_chain(
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

    def run(self, prometheus=None) -> tuple[dict, dict]:
        result = run_chaos(
            self.spec.chaos,
            budget=self.route.timeout,
            context_value=self.context,
            drill_id=self.drill_id,
            set_fault=self.set_fault,
            prometheus=prometheus,
        )
        return result, evaluate(result, self.spec.escalation, self.route)


def drill(cluster, front, *, phases=None, route=None, **chaos) -> Drill:
    spec = chain_spec(chaos={"url": front.url, **chaos})
    if phases is not None:
        spec["chaos"]["phases"] = phases
    spec["route"].update(route or {})
    return Drill(cluster, front, spec)


def production_rule_unchanged(cluster, config) -> bool:
    stored = cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"][-1]
    canonical = json.dumps(stored, sort_keys=True)
    return canonical == json.dumps(routes.production_rule(config), sort_keys=True)


@pytest.mark.parametrize(
    "percent, requests, aborted, severity",
    [
        (12, 100, 12, None),  # 12%: at the P2 threshold, not above
        (12.5, 200, 25, "P2"),
        (25, 200, 50, "P2"),  # 25%: at the P1 threshold, not above
        (25.5, 200, 51, "P1"),
    ],
)
def test_abort_phase_fallback_rate_is_exact(cluster, front, percent, requests, aborted, severity):
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
        "reasons": {"abort-503": aborted},
    }
    assert phase["tiers"] == {"primary": requests - aborted, "secondary": aborted}
    assert phase["error_rate"]["count"] == 0
    assert (
        phase["replay_mismatch_rate"]["count"] == 0 and phase["replay_mismatch_rate"]["total"] == 20
    )
    assert decision["severity"] == severity
    # Only drill traffic reached the front, and all of it took the drill rule.
    assert {rule for _, rule in d.front.seen} == {"drill"}
    assert {ctx for ctx, _ in d.front.seen} == {d.context}
    stored = cluster.stored("virtualservices", "checkout-routing-chain")["spec"]["http"]
    assert "fault" not in stored[0]  # cleared when the phases ended
    assert production_rule_unchanged(cluster, d.route)


def test_primary_5xx_is_retried_then_falls_back(cluster, front, tiers):
    tiers["primary"].fail_ratio = Fraction(1, 4)
    d = drill(cluster, front, requests=100, replays=0, phases=[{"name": "baseline"}])
    result, decision = d.run()
    [phase] = result["phases"]
    assert phase["fallback_rate"]["count"] == 25
    assert phase["fallback_rate"]["reasons"] == {"5xx": 25}
    # 75 answered on the first try; 25 failing keys x 3 tries (2 retries, Istio semantics).
    assert tiers["primary"].requests == 75 + 25 * 3
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


def test_delay_phases_against_the_timeout_budget(cluster, front):
    phases = [
        {"name": "delay-500ms", "delay": {"fixed": "500ms"}},
        {"name": "delay-800ms", "delay": {"fixed": "800ms"}},
        {"name": "delay-1200ms", "delay": {"fixed": "1.2s"}},
    ]
    d = drill(cluster, front, requests=4, replays=0, concurrency=4, phases=phases)
    result, decision = d.run()
    over = [p["over_budget_rate"]["count"] for p in result["phases"]]
    assert over == [0, 0, 4]  # the budget is the route's global timeout, 1s
    for phase, floor_ms in zip(result["phases"], (500, 800, 1200), strict=True):
        assert floor_ms <= phase["latency_ms"]["p50"] <= phase["latency_ms"]["max"]
        assert phase["latency_ms"]["budget"] == 1000
        assert phase["fallback_rate"]["count"] == 0  # a delay before routing is no fallback
    assert decision["severity"] is None  # over_budget_rate has no default threshold
    d.spec.escalation.thresholds["over_budget_rate"] = {"P2": Fraction(50)}
    assert evaluate(result, d.spec.escalation, d.route)["severity"] == "P2"


def test_slow_primary_times_out_per_try_and_falls_back(cluster, front, tiers):
    tiers["primary"].delay = 0.25
    d = drill(
        cluster,
        front,
        requests=4,
        replays=0,
        concurrency=4,
        phases=[{"name": "baseline"}],
        route={"retries": {"attempts": 1, "per_try_timeout": "100ms"}},
    )
    result, _ = d.run()
    [phase] = result["phases"]
    assert phase["fallback_rate"]["reasons"] == {"timeout": 4}
    assert phase["tiers"] == {"secondary": 4}
    assert phase["latency_ms"]["p50"] >= 200  # two tries of 100ms before the fallback


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
    front.idempotency_cache = False
    tiers["primary"].nondeterministic = True
    d = drill(cluster, front, requests=20, replays=5, phases=[{"name": "baseline"}])
    result, decision = d.run()
    replay = result["phases"][0]["replay_mismatch_rate"]
    assert (replay["count"], replay["total"]) == (5, 5)
    assert decision["severity"] == "P2"
    assert decision["reasons"][0]["metric"] == "replay_mismatch_rate"


def test_weights_split_drill_traffic_exactly(cluster, front):
    tiers = {
        "primary": {"host": "checkout-api.checkout.svc.cluster.local", "port": 8080, "weight": 80},
        "secondary": {
            "host": "checkout-api.checkout-dr.svc.cluster.local",
            "port": 8080,
            "weight": 15,
        },
        "static-cache": {
            "host": "checkout-static.edge-cache.svc.cluster.local",
            "port": 80,
            "weight": 5,
        },
    }
    d = drill(
        cluster,
        front,
        requests=100,
        replays=0,
        phases=[{"name": "baseline"}],
        route={"tiers": tiers},
    )
    result, decision = d.run()
    assert result["phases"][0]["tiers"] == {"primary": 80, "secondary": 15, "static-cache": 5}
    assert result["phases"][0]["fallback_rate"]["count"] == 20 and decision["severity"] == "P2"


def test_production_traffic_never_sees_the_fault(cluster, front):
    d = drill(cluster, front, phases=[{"name": "abort-all", "abort": {"percent": 100}}])
    d.set_fault(d.spec.chaos.phases[0])

    def get(headers: dict) -> tuple[str | None, str | None]:
        request = urllib.request.Request(front.url + "/api/v1/quote", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.headers.get("x-mesh-routing-tier"), response.headers.get(
                "x-fallback-triggered"
            )

    for headers in ({}, {"X-Drill-Context": d.context + "x"}, {"X-Drill-Context": "v1.forged"}):
        assert get(headers) == ("primary", None)
    assert get({"X-Drill-Context": d.context}) == ("secondary", "true")
    assert [rule for _, rule in front.seen] == ["production"] * 3 + ["drill"]


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
