"""The drill report: one verdict per run with the evidence behind it, as JSON and JUnit XML.

Built from the tiers' XCom and the run's telemetry events; carries no secret: ``redact`` removes
passwords, tokens and context MACs from every field, and readers apply it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from drillkit.gate import (
    DRY_RUN,
    NOT_REACHED,
    VERDICT_UNVERIFIED,
    TierJudgement,
    overall_verdict,
)
from drillkit.redaction import redact
from drillkit.telemetry import timeline
from drillkit.timeutil import isoformat, parse_iso, utcnow

# v2 added timeline, data_loss_seconds, per-tier selection and timings, and run timings.
SCHEMA = "drillkit.report/v2"
SCHEMAS = ("drillkit.report/v1", SCHEMA)


def _judgement(decision: dict[str, Any]) -> TierJudgement:
    return TierJudgement(
        tier=decision.get("tier", "?"),
        status=decision.get("status", NOT_REACHED),
        reason=decision.get("reason", "not reached"),
        backup_id=decision.get("backup_id"),
        findings=decision.get("findings", []),
        restore_seconds=decision.get("restore_seconds"),
    )


def build_report(
    *,
    drill: str,
    dag_id: str,
    run_id: str,
    tiers: list[dict[str, Any]],
    dry_run: bool,
    run_error: dict[str, Any] | None = None,
    events: Iterable[dict[str, Any] | None] = (),
    rto_budget_seconds: float | None = None,
    requested_target: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``tiers``: per tier (in order) its gate decision and its tasks' XCom results;
    ``events``: the run's telemetry events (``drillkit.event/v1``), for the timeline;
    ``requested_target``: what the run asked for (``drill.requested_target``), recorded even
    when no tier selected a backup."""
    from drillkit.drill import drill_id_for

    tried = [t for t in tiers if t["decision"] and t["decision"].get("decision") != "not_reached"]
    if run_error:
        # The run was refused before any tier ran: the gates' "upstream failed" decisions say
        # nothing about the backups, so no tier counts as tried.
        tried = []
    judgements = [_judgement(t["decision"]) for t in tried]
    # A refused run configuration means nothing was drilled: never a pass, never a backup fault.
    verdict = VERDICT_UNVERIFIED if run_error else overall_verdict(judgements)
    deciding = next(
        (t for t, j in zip(tried, judgements, strict=True) if j.status in ("passed", DRY_RUN)),
        tried[-1] if tried else None,
    )
    coordinate = (deciding or {}).get("coordinate") or {}
    sandbox = (deciding or {}).get("sandbox") or {}
    validation = (deciding or {}).get("validation") or {}
    findings = [f for j in judgements for f in j.findings]
    if run_error:
        findings.insert(0, {**run_error, "severity": "error"})
    tier_lines = [f"{j.tier}: {j.status} ({j.reason})" for j in judgements]
    run_timeline = timeline(events)
    restore_seconds = sandbox.get("restore_seconds")
    summary = (
        f"{verdict}: drill {drill}, "
        + (f"backup {coordinate.get('backup_id')}, " if coordinate else "")
        + (f"PostgreSQL {major}, " if (major := _major(coordinate, sandbox)) else "")
        + f"tiers tried: {len(judgements)}"
    )
    if run_error:
        summary = (
            f"{verdict}: drill {drill}: the run was refused before any tier ran "
            f"({run_error.get('code')}: {run_error.get('message')}); no tier was tried and no "
            "backup was judged"
        )
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "drill": drill,
        "dag_id": dag_id,
        "run_id": run_id,
        "drill_id": drill_id_for(dag_id, run_id),
        "verdict": verdict,
        "dry_run": dry_run,
        "summary": summary,
        "deciding_tier": (deciding or {}).get("decision", {}).get("tier"),
        "tiers": [
            {
                **j.to_dict(),
                "decision": t["decision"].get("decision"),
                "selection": _selection(t.get("coordinate")),
                "sandbox_id": (t.get("sandbox") or {}).get("id"),
                "teardown": t.get("teardown"),
                "timings": {e["event"]: e["at"] for e in run_timeline if e.get("tier") == j.tier},
            }
            for t, j in zip(tried, judgements, strict=True)
        ],
        "target": {
            "requested": (coordinate.get("target") or {}).get("requested")
            or (requested_target or {}).get("requested"),
            "source": (requested_target or {}).get("source"),
            "mode": (coordinate.get("target") or {}).get("mode"),
            "recovery_point": sandbox.get("achieved_recovery_point")
            or coordinate.get("recovery_point"),
            "expected_data_loss_seconds": coordinate.get("expected_data_loss_seconds"),
        },
        "backup_id": coordinate.get("backup_id"),
        # The major drilled and the installation that restored it (the sandbox's, else the
        # one selection read the backup with).
        "postgres": sandbox.get("postgres") or coordinate.get("postgres"),
        "rto_seconds": restore_seconds,
        "rto_budget_seconds": rto_budget_seconds,
        "data_loss_seconds": None if dry_run else achieved_data_loss(coordinate, sandbox),
        "rpo_seconds": coordinate.get("rpo_seconds"),
        "coordinate": coordinate or None,
        "sandbox": sandbox or None,
        # DSNs in a manifest never hold a password; redact() below drops the context's MAC.
        "manifest": (deciding or {}).get("manifest"),
        "checks": validation.get("results", []),
        "warmup": validation.get("warmup", []),
        # Mesh routes: both probes per route, and whether it was proven before the checks ran.
        "route_proof": validation.get("route_proof"),
        # Kubernetes sandboxes: how the checks reached the database (in-cluster TLS or a
        # port-forward), what sealing did, the check roles and the recovery point read there.
        "sandbox_access": validation.get("sandbox_access"),
        "findings": findings,
        "timeline": run_timeline,
        "started_at": run_timeline[0]["at"] if run_timeline else None,
        "finished_at": run_timeline[-1]["at"] if run_timeline else None,
        "generated_at": isoformat(utcnow()),
    }
    report["escalation"] = (
        f"restore drill {drill} ({run_id}) verdict {verdict}. Tiers tried: "
        + ("; ".join(tier_lines) or "none")
        + ". Findings: "
        + ("; ".join(f"{f.get('code')}: {f.get('message')}" for f in findings) or "none")
        + (
            ". Next: fix the run configuration the first finding names (the backups were not "
            "looked at), then trigger the drill again."
            if run_error
            else ". Next: read the findings above, fix the backups or archiving they name, then "
            "re-run this drill (Trigger, with its form) or `drillkit run` on the spec."
        )
    )
    return redact(report)


def _major(coordinate: dict[str, Any], sandbox: dict[str, Any]) -> int | None:
    postgres = sandbox.get("postgres") or coordinate.get("postgres") or {}
    major = postgres.get("major")
    return major if isinstance(major, int) else None


def _selection(coordinate: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why the tier restored this backup, and why it passed over the others."""
    if not coordinate:
        return None
    return {
        "policy": coordinate.get("policy"),
        "reason": coordinate.get("reason"),
        "passed_over": [
            c for c in coordinate.get("candidates") or [] if c.get("decision") != "chosen"
        ],
    }


def achieved_data_loss(coordinate: dict[str, Any], sandbox: dict[str, Any]) -> float | None:
    """Seconds of committed transactions up to the target that the restored database lacks.

    The planned loss (WAL that does not reach the target) plus any shortfall of the replay
    against the planned recovery point. None when nothing was restored.
    """
    planned = parse_iso(coordinate.get("recovery_point"))
    achieved = parse_iso(sandbox.get("achieved_recovery_point"))
    expected = coordinate.get("expected_data_loss_seconds")
    if planned is None or achieved is None or expected is None or sandbox.get("dry_run"):
        return None
    shortfall = max(0.0, (planned - achieved).total_seconds())
    return round(float(expected) + shortfall, 6)


def junit_xml(report: dict[str, Any]) -> str:
    """One test case per check of the deciding tier, plus one per tier that did not pass."""
    suite = ET.Element(
        "testsuite", name=f"drill.{report['drill']}", timestamp=report["generated_at"]
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("verdict", "dag_id", "run_id", "drill_id", "backup_id", "deciding_tier"):
        ET.SubElement(properties, "property", name=key, value=str(report.get(key)))
    major = (report.get("postgres") or {}).get("major")
    ET.SubElement(properties, "property", name="pg_major", value=str(major))
    for key in ("rto_seconds", "data_loss_seconds"):
        ET.SubElement(properties, "property", name=key, value=str(report.get(key)))
    failures = errors = skipped = 0
    for tier in report["tiers"]:
        case = ET.SubElement(
            suite, "testcase", classname=f"{report['drill']}.tiers", name=tier["tier"]
        )
        if tier["status"] == "failed":
            failures += 1
            ET.SubElement(case, "failure", message=tier["reason"])
        elif tier["status"] == "error":
            errors += 1
            ET.SubElement(case, "error", message=tier["reason"])
        elif tier["status"] not in ("passed",):
            skipped += 1
            ET.SubElement(case, "skipped", message=tier["reason"])
    for check in report["checks"]:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{report['drill']}.checks",
            name=check["name"],
            time=f"{(check.get('latency_ms') or 0) / 1000:.3f}",
        )
        message = f"observed {check.get('observed')!r}, expected {check.get('expectation')}"
        if check["status"] == "failed":
            failures += 1
            ET.SubElement(case, "failure", message=message).text = check.get("detail") or ""
        elif check["status"] == "error":
            errors += 1
            ET.SubElement(case, "error", message=check.get("detail") or message)
        elif check["status"] == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", message=check.get("detail") or "skipped")
    suite.set("tests", str(len(suite.findall("testcase"))))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode")


def report_documents(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``{"json": (relative path, text), "junit": (...)}``: the files of one run's report."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["run_id"])
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["drill"])
    return {
        "json": (f"{folder}/{stem}.json", json.dumps(report, indent=2, default=str)),
        "junit": (f"{folder}/{stem}.xml", junit_xml(report)),
    }


def write_report(report: dict[str, Any], directory: str) -> dict[str, str]:
    """Write ``<drill>/<run>.json`` and ``<drill>/<run>.xml`` under a local ``directory``."""
    written = {}
    for kind, (relative, text) in report_documents(report).items():
        path = Path(directory) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written[kind] = str(path)
    return written
