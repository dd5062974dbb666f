"""The drill report: one verdict per run with the evidence behind it, as JSON and JUnit XML.

Built from the tiers' XCom; carries no secret (the signed context is shortened, DSNs redacted).
"""

from __future__ import annotations

import json
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
from drillkit.timeutil import isoformat, utcnow

SCHEMA = "drillkit.report/v1"


def _redact_manifest(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    if not manifest:
        return manifest
    from drillkit.routing.connstr import redact_dsn

    clean = json.loads(json.dumps(manifest))
    context = clean.get("context") or {}
    if context.get("value"):
        context["value"] = context["value"][:40] + "...(redacted)"
    for entry in (clean.get("services") or {}).values():
        if entry.get("dsn"):
            entry["dsn"] = redact_dsn(entry["dsn"])
    return clean


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
) -> dict[str, Any]:
    """``tiers``: per tier (in order) its gate decision and its tasks' XCom results."""
    from drillkit.drill import drill_id_for

    tried = [t for t in tiers if t["decision"] and t["decision"].get("decision") != "not_reached"]
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
    restore_seconds = sandbox.get("restore_seconds")
    summary = (
        f"{verdict}: drill {drill}, "
        + (f"backup {coordinate.get('backup_id')}, " if coordinate else "")
        + f"tiers tried: {len(judgements)}"
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
                "teardown": t.get("teardown"),
            }
            for t, j in zip(tried, judgements, strict=True)
        ],
        "target": {
            "requested": (coordinate.get("target") or {}).get("requested"),
            "mode": (coordinate.get("target") or {}).get("mode"),
            "recovery_point": sandbox.get("achieved_recovery_point")
            or coordinate.get("recovery_point"),
            "expected_data_loss_seconds": coordinate.get("expected_data_loss_seconds"),
        },
        "backup_id": coordinate.get("backup_id"),
        "rto_seconds": restore_seconds,
        "coordinate": coordinate or None,
        "sandbox": sandbox or None,
        "manifest": _redact_manifest((deciding or {}).get("manifest")),
        "checks": validation.get("results", []),
        "warmup": validation.get("warmup", []),
        "findings": findings,
        "generated_at": isoformat(utcnow()),
    }
    report["escalation"] = (
        f"restore drill {drill} ({run_id}) verdict {verdict}. Tiers tried: "
        + ("; ".join(tier_lines) or "none")
        + ". Findings: "
        + ("; ".join(f"{f.get('code')}: {f.get('message')}" for f in findings) or "none")
        + ". Next: read the findings above, fix the backups or archiving they name, then re-run "
        "this drill (Trigger DAG w/ config) or `drillkit run` on the spec."
    )
    return report


def junit_xml(report: dict[str, Any]) -> str:
    """One test case per check of the deciding tier, plus one per tier that did not pass."""
    suite = ET.Element(
        "testsuite", name=f"drill.{report['drill']}", timestamp=report["generated_at"]
    )
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
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode")


def write_report(report: dict[str, Any], directory: str) -> dict[str, str]:
    """Write ``<run>.json`` and ``<run>.xml`` under ``directory``; return their paths."""
    path = Path(directory) / report["drill"]
    path.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["run_id"])
    json_path, xml_path = path / f"{stem}.json", path / f"{stem}.xml"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    xml_path.write_text(junit_xml(report))
    return {"json": str(json_path), "junit": str(xml_path)}
