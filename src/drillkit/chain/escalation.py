"""Measured figures -> severity. Pure.

Each configured metric is judged per phase (a fault mode that breaks the chain is not averaged
away by the phases that did not), as an exact fraction: a rate exactly AT a threshold is not
above it. The highest severity wins: P1 over P2 over P3, where P3 means the drill could not
measure (no results, a phase cut off by the deadline, nothing answered): never a silent pass.
When Prometheus is configured its rate replaces the answers' fallback rate; when it cannot
answer, the answers' rate is judged and a P3 says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from drillkit.chain.chaos import CHAOS_SCHEMA
from drillkit.chain.model import SEVERITIES, TIER_HEADER, EscalationConfig, RouteConfig
from drillkit.chain.runbook import runbook_steps

ESCALATION_SCHEMA = "drillkit.escalation/v1"
RANK = {severity: index for index, severity in enumerate(SEVERITIES)}


def level(percent: Fraction, thresholds: Mapping[str, Fraction]) -> tuple[str, Fraction] | None:
    """The most severe level whose threshold ``percent`` is strictly above."""
    for severity in ("P1", "P2"):
        threshold = thresholds.get(severity)
        if threshold is not None and percent > threshold:
            return severity, threshold
    return None


def _pct(value: Fraction) -> float:
    return round(float(value), 4)


def _judge(
    metric: str, percent: Fraction, thresholds: Mapping[str, Fraction], where: str, shown: str
) -> dict[str, Any] | None:
    hit = level(percent, thresholds)
    if hit is None:
        return None
    severity, threshold = hit
    return {
        "severity": severity,
        "code": f"CHAIN_{metric.upper()}_{severity}",
        "metric": metric,
        "phase": where,
        "percent": _pct(percent),
        "threshold_percent": _pct(threshold),
        "message": f"{metric} {shown} in phase {where} is above the {severity} threshold "
        f"{_pct(threshold)}%",
    }


def _unverified(code: str, message: str) -> dict[str, Any]:
    return {"severity": "P3", "code": code, "metric": None, "phase": None, "message": message}


def _phase_reasons(phase: Mapping[str, Any], config: EscalationConfig, *, prometheus: bool):
    reasons: list[dict[str, Any]] = []
    if not phase.get("complete"):
        why = phase.get("skipped") or f"{phase['requests']['not_sent']} request(s) not sent"
        reasons.append(
            _unverified(
                "CHAOS_INCOMPLETE",
                f"phase {phase['name']} did not run fully ({why}): raise chaos.deadline or lower "
                "chaos.requests",
            )
        )
    if "requests" in phase and phase["requests"]["sent"] == 0:
        return reasons
    untagged = phase.get("untagged_rate") or {}
    if untagged.get("count"):
        reasons.append(
            _unverified(
                "CHAIN_TIER_UNTAGGED",
                f"{untagged['count']}/{untagged['total']} answers in phase {phase['name']} carried "
                f"no {TIER_HEADER} header, so who served them (and the fallback rate) is unknown: "
                "make every tier stamp its name on its answers",
            )
        )
    for metric, thresholds in config.thresholds.items():
        figure = phase.get(metric)
        if not thresholds or figure is None or (metric == "fallback_rate" and prometheus):
            continue
        if not figure.get("total"):
            continue
        percent = Fraction(figure["count"], figure["total"]) * 100
        shown = f"{figure['count']}/{figure['total']} ({_pct(percent)}%)"
        judged = _judge(metric, percent, thresholds, phase["name"], shown)
        if judged:
            reasons.append(judged)
    return reasons


def evaluate(
    results: Mapping[str, Any] | None,
    config: EscalationConfig,
    route: RouteConfig,
    *,
    errors: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The gate's decision record (``drillkit.escalation/v1``)."""
    reasons: list[dict[str, Any]] = []
    for error in errors:
        reasons.append(_unverified(error.get("code", "DRILL_ERROR"), str(error.get("message"))))
    phases: list[Mapping[str, Any]] = []
    prometheus = None
    if not results or results.get("schema") != CHAOS_SCHEMA:
        reasons.append(
            _unverified(
                "CHAOS_NOT_MEASURED",
                "the chaos drill produced no results; the fallback chain was not measured",
            )
        )
    else:
        phases = results.get("phases") or []
        prometheus = results.get("prometheus")
        if prometheus is not None and "error" in prometheus:
            error = prometheus["error"]
            reasons.append(
                _unverified(
                    error.get("code", "PROMETHEUS_QUERY_FAILED"),
                    f"{error.get('message')} (the answers' fallback rate was judged instead)",
                )
            )
            prometheus = None
        for phase in phases:
            reasons += _phase_reasons(phase, config, prometheus=prometheus is not None)
        if not any(p.get("requests", {}).get("sent") for p in phases):
            reasons.append(
                _unverified("CHAOS_NOTHING_SENT", "no synthetic request was sent in any phase")
            )
        thresholds = config.thresholds.get("fallback_rate") or {}
        if prometheus is not None and thresholds:
            percent = Fraction(str(prometheus["value"])) * 100
            shown = f"{_pct(percent)}% (Prometheus, {prometheus['window']} window)"
            judged = _judge("fallback_rate", percent, thresholds, "prometheus", shown)
            if judged:
                reasons.append(judged)
    severity = min((r["severity"] for r in reasons), key=RANK.__getitem__, default=None)
    if severity is None:
        decision = "healthy"
    elif severity == "P3":
        decision = "could_not_verify"
    else:
        decision = "escalate"
    remediation = config.remediation
    remediate = (
        remediation.shift_to_static_cache
        and severity in ("P1", "P2")
        and RANK[severity] <= RANK[remediation.min_severity]
    )
    reasons.sort(key=lambda r: RANK[r["severity"]])
    return {
        "schema": ESCALATION_SCHEMA,
        "chain": route.name,
        "severity": severity,
        "decision": decision,
        "remediate": bool(remediate),
        "reasons": reasons,
        "figures": figures(phases, prometheus),
        "runbook": runbook_steps(route, config, reasons=reasons, remediate=bool(remediate))
        if severity
        else [],
    }


def figures(phases: Iterable[Mapping[str, Any]], prometheus: Mapping[str, Any] | None) -> dict:
    """The measured numbers a person reads first, per phase."""
    out: dict[str, Any] = {}
    for phase in phases:
        if "requests" not in phase:
            out[phase["name"]] = {"skipped": phase.get("skipped")}
            continue
        schema = phase.get("schema_failure_rate")
        out[phase["name"]] = {
            "sent": phase["requests"]["sent"],
            "fallback_percent": phase["fallback_rate"]["percent"],
            "error_percent": phase["error_rate"]["percent"],
            "schema_failure_percent": schema["percent"] if schema else None,
            "replay_mismatches": phase["replay_mismatch_rate"]["count"],
            "latency_ms": phase["latency_ms"],
            "over_budget": phase["over_budget_rate"]["count"],
            "tiers": phase["tiers"],
        }
    if prometheus is not None:
        out["prometheus"] = {
            "fallback_percent": prometheus["percent"],
            "query": prometheus["query"],
        }
    return out


def summary(decision: Mapping[str, Any]) -> str:
    """One paragraph for the page: severity, what fired, and the first steps."""
    severity = decision.get("severity") or "none"
    lines = [f"{severity}: routing chain {decision.get('chain')} {decision.get('decision')}"]
    lines += [f"- {r['code']}: {r['message']}" for r in decision.get("reasons", [])]
    lines.append(
        "Measured: " + ", ".join(_figure_line(n, f) for n, f in decision["figures"].items())
    )
    lines += [f"{i}. {step}" for i, step in enumerate(decision.get("runbook", []), 1)]
    return "\n".join(lines)


def _figure_line(name: str, figure: Mapping[str, Any]) -> str:
    if "fallback_percent" not in figure:
        return f"{name}: skipped"
    if "sent" not in figure:
        return f"{name}: fallback {figure['fallback_percent']}%"
    return (
        f"{name}: fallback {figure['fallback_percent']}%, errors {figure['error_percent']}%, "
        f"p95 {figure['latency_ms']['p95']} ms"
    )
