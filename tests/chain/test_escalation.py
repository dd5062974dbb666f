"""Thresholds -> severity, pure: exactly at a threshold is not above it; the highest severity
wins; an unmeasured drill is P3, never healthy; Prometheus replaces the answers' rate."""

from __future__ import annotations

from fractions import Fraction

import pytest
from chainkit import chain_spec

from drillkit.chain.escalation import evaluate, summary
from drillkit.chain.measure import Answer, percentile, phase_figures
from drillkit.chain.model import FaultPhase
from drillkit.chain.spec import parse_chain_spec

pytestmark = pytest.mark.unit
SPEC = parse_chain_spec(chain_spec())
PHASE = FaultPhase("abort", abort_percent=Fraction(10))


def answers(total: int, *, fallback: int = 0, errors: int = 0, invalid: int = 0) -> list[Answer]:
    out = []
    for i in range(total):
        if i < errors:
            out.append(Answer(f"k{i}", 503, b"{}", {}, 0.01))
            continue
        tier = "secondary" if i < errors + fallback else "primary"
        body = b'{"price": "n/a"}' if i >= total - invalid else b'{"price": 1}'
        out.append(Answer(f"k{i}", 200, body, {"x-mesh-routing-tier": tier}, 0.01))
    return out


def check(body: bytes) -> str | None:
    return None if b'"price": 1' in body else "price: not a number"


def results(*phases: dict, prometheus: dict | None = None) -> dict:
    return {
        "schema": "drillkit.chaos/v1",
        "complete": True,
        "phases": list(phases),
        "prometheus": prometheus,
    }


def phase(first: list[Answer], replays=(), schema=False) -> dict:
    return phase_figures(PHASE, first, list(replays), budget=1.0, check=check if schema else None)


def judge(*phases, spec=SPEC, **kwargs):
    return evaluate(results(*phases, **kwargs), spec.escalation, spec.route)


@pytest.mark.parametrize(
    "fallback, total, severity",
    [
        (12, 100, None),  # 12%: at the P2 threshold, not above
        (25, 200, "P2"),  # 12.5%
        (50, 200, "P2"),  # 25%: at the P1 threshold, not above
        (51, 200, "P1"),  # 25.5%
        (100, 100, "P1"),
    ],
)
def test_fallback_rate_boundaries(fallback, total, severity):
    decision = judge(phase(answers(total, fallback=fallback)))
    assert decision["severity"] == severity
    assert decision["decision"] == ("healthy" if severity is None else "escalate")
    if severity:
        [reason] = decision["reasons"]
        assert reason["code"] == f"CHAIN_FALLBACK_RATE_{severity}"
        assert reason["percent"] == 100 * fallback / total


@pytest.mark.parametrize("invalid, severity", [(5, None), (6, "P2")])
def test_schema_failure_boundary(invalid, severity):
    decision = judge(phase(answers(100, invalid=invalid), schema=True))
    assert decision["severity"] == severity
    assert decision["figures"]["abort"]["schema_failure_percent"] == invalid


def test_highest_severity_wins_across_metrics_and_phases():
    calm = phase(answers(100, invalid=6), schema=True)  # schema P2
    bad = {**phase(answers(200, fallback=51)), "name": "delay"}  # fallback P1
    decision = judge(calm, bad)
    assert decision["severity"] == "P1"
    assert [(r["phase"], r["severity"]) for r in decision["reasons"]] == [
        ("delay", "P1"),
        ("abort", "P2"),
    ]
    text = summary(decision)
    assert text.startswith("P1: routing chain checkout-routing escalate")
    assert "CHAIN_SCHEMA_FAILURE_RATE_P2" in text and "Check the primary tier" in text


def test_errors_and_replay_mismatches_have_default_thresholds():
    decision = judge(phase(answers(100, errors=6)))
    assert decision["severity"] == "P1"  # error_rate above 5%
    assert decision["reasons"][0]["metric"] == "error_rate"
    first = answers(10)
    again = [Answer(a.key, 200, a.body + b" ", a.headers) for a in first[:2]]
    decision = judge(phase(first, replays=list(zip(first[:2], again, strict=True))))
    assert (
        decision["severity"] == "P2" and decision["reasons"][0]["metric"] == "replay_mismatch_rate"
    )
    figures = phase(first, replays=list(zip(first[:2], again, strict=True)))
    assert figures["replay_mismatch_rate"]["mismatched_keys"] == ["k0", "k1"]


def test_unmeasured_or_incomplete_drill_is_p3_never_healthy():
    spec = SPEC
    decision = evaluate(None, spec.escalation, spec.route)
    assert (decision["severity"], decision["decision"]) == ("P3", "could_not_verify")
    assert decision["reasons"][0]["code"] == "CHAOS_NOT_MEASURED"
    assert any("could not measure" in step for step in decision["runbook"])
    cut = [*answers(10), Answer("late", None, error="not sent", sent=False)]
    decision = judge(phase(cut))
    assert decision["severity"] == "P3" and decision["reasons"][0]["code"] == "CHAOS_INCOMPLETE"
    skipped = {"name": "delay", "complete": False, "skipped": "deadline"}
    decision = judge(phase(answers(10)), skipped)
    assert decision["severity"] == "P3"
    errors = [{"code": "K8S_FORBIDDEN", "message": "no RBAC"}]
    decision = evaluate(None, spec.escalation, spec.route, errors=errors)
    assert decision["reasons"][0]["code"] == "K8S_FORBIDDEN"


def test_prometheus_rate_replaces_the_answers_rate():
    quiet = phase(answers(100, fallback=30))  # 30% from answers: ignored when Prometheus is set
    prom = {"value": "0.125", "percent": 12.5, "window": "10m", "query": "q"}
    decision = judge(quiet, prometheus=prom)
    assert decision["severity"] == "P2" and decision["reasons"][0]["phase"] == "prometheus"
    decision = judge(quiet, prometheus={**prom, "value": "0.12"})
    assert decision["severity"] is None  # exactly 12%: not above


def test_remediation_only_at_or_above_its_severity():
    spec = parse_chain_spec(
        chain_spec(
            escalation={
                "remediation": {
                    "shift_to_static_cache": True,
                    "weights": {"primary": 0, "secondary": 20, "static-cache": 80},
                }
            }
        )
    )
    assert judge(phase(answers(200, fallback=51)), spec=spec)["remediate"] is True
    assert judge(phase(answers(200, fallback=25)), spec=spec)["remediate"] is False  # P2 < P1
    assert evaluate(None, spec.escalation, spec.route)["remediate"] is False  # never on P3


def test_latency_percentiles_are_nearest_rank():
    values = [0.1 * i for i in range(1, 21)]
    assert percentile(values, 50) == pytest.approx(1.0)
    assert percentile(values, 95) == pytest.approx(1.9)
    assert percentile([], 50) is None
    figures = phase([Answer(f"k{i}", 200, b"", {}, v) for i, v in enumerate(values)])
    assert figures["over_budget_rate"]["count"] == 10  # 1.1 .. 2.0 s over the 1 s budget
    assert figures["latency_ms"]["max"] == pytest.approx(2000)


def test_fallback_is_the_answering_tier_only():
    # x-fallback-triggered was only ever a request header towards the upstream: not evidence.
    assert not Answer("a", 200, headers={"x-fallback-triggered": "true"}).is_fallback
    assert Answer("a", 200, headers={"x-fallback-triggered": "true"}).is_untagged
    assert Answer("a", 200, headers={"x-mesh-routing-tier": "static-cache"}).is_fallback
    assert not Answer("a", 200, headers={"x-mesh-routing-tier": "primary"}).is_fallback
    assert not Answer("a", 200).is_fallback  # untagged: counted apart, not as fallback
    assert Answer("a", None, error="ReadTimeout").is_error and Answer("a", 503).is_error
