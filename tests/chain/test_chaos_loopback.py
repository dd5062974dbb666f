"""The chaos drill end to end on loopback: the chain applied to the API emulator, the caller's
sidecar and the tiers' pods (chain_mesh) routing by the Istio objects read back from there.

The fallback is measured, not configured: the tier that answered stamps itself, faults sit at
the primary's inbound side, and the caller's retries (previous_priorities over the aggregate
cluster) are what moves a request to the next tier. Rates are exact.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from chainkit import SCHEMA, Drill, chain_spec, drill

from drillkit.chain.prometheus import query_fallback_rate

pytestmark = pytest.mark.k8s


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
