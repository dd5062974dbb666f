"""Judging a tier from what its tasks left in XCom, and the run's one verdict. Pure.

A tier passes only when its checks passed; anything that could not run is an error, never a pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASSED, FAILED, ERROR, SKIPPED, NOT_REACHED, DRY_RUN = (
    "passed",
    "failed",
    "error",
    "skipped",
    "not_reached",
    "dry_run",
)
VERDICT_PASS, VERDICT_FAIL, VERDICT_UNVERIFIED, VERDICT_DRY_RUN = (
    "PASS",
    "FAIL",
    "COULD NOT VERIFY",
    "DRY RUN",
)
# The backup or the restore is proven bad: the drill ran and found a problem.
FAILURE_CODES = frozenset(
    {
        "BACKUP_CHECKSUM_MISMATCH",
        "BACKUP_INCOMPLETE",
        "WAL_GAP",
        "WAL_SEGMENT_DAMAGED",
        "WAL_FOREIGN_SYSTEM",
        "TARGET_BEFORE_OLDEST_RESTORABLE",
        "TARGET_AFTER_ARCHIVE_END",
        "DATA_LOSS_OVER_RPO",
        "NO_RESTORABLE_BACKUP",
        "RECOVERY_TARGET_NOT_REACHED",
        "SANDBOX_START_FAILED",
        "RTO_EXCEEDED",
        "PROVISION_TIMEOUT",
        "BACKUP_ARCHIVE_UNSAFE",
        "BACKUP_ARCHIVE_CORRUPT",
        "BACKUP_UNSAFE_LINK",
        "BACKUP_NOT_IN_STORE",
    }
)


@dataclass
class TierJudgement:
    tier: str
    status: str
    reason: str
    backup_id: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    restore_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_tier(
    tier: str,
    *,
    selected: bool,
    coordinate: dict[str, Any] | None,
    sandbox: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    errors: list[dict[str, Any]],
    rto_seconds: float,
    dry_run: bool,
) -> TierJudgement:
    """Decide a tier from its tasks' results; ``errors`` are the DrillErrors its tasks pushed."""
    backup_id = (coordinate or {}).get("backup_id")
    if not selected:
        return TierJudgement(tier, SKIPPED, "not among the tiers chosen for this run")
    if errors:
        first = errors[0]
        code = str(first.get("code", "DRILL_ERROR"))
        status = FAILED if code in FAILURE_CODES else ERROR
        findings = [
            {"code": e.get("code"), "message": e.get("message"), "severity": "error"}
            for e in errors
        ]
        return TierJudgement(tier, status, f"{code}: {first.get('message')}", backup_id, findings)
    if coordinate is None:
        return TierJudgement(
            tier, ERROR, "point-in-time selection left no result (crashed or timed out)"
        )
    if sandbox is None:
        return TierJudgement(
            tier,
            ERROR,
            "provisioning left no result (crashed, killed or timed out before reporting)",
            backup_id,
        )
    if dry_run or sandbox.get("dry_run"):
        return TierJudgement(tier, DRY_RUN, "dry run: selection and manifest only", backup_id)
    restore_seconds = sandbox.get("restore_seconds")
    findings: list[dict[str, Any]] = list(coordinate.get("findings", []))
    if restore_seconds is not None and restore_seconds > rto_seconds:
        message = (
            f"restore took {restore_seconds:.1f} s, over the RTO of {rto_seconds:.0f} s: restore "
            "from a newer backup, add resources, or revise the RTO"
        )
        findings.append({"code": "RTO_EXCEEDED", "message": message, "severity": "error"})
        return TierJudgement(tier, FAILED, message, backup_id, findings, restore_seconds)
    if validation is None:
        return TierJudgement(
            tier, ERROR, "smoke tests left no result", backup_id, findings, restore_seconds
        )
    sandbox_findings = list(sandbox.get("findings") or [])
    findings += sandbox_findings + validation.get("findings", [])
    status = validation.get("status")
    results = validation.get("results", [])
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in (PASSED, FAILED, ERROR)}
    summary = f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[ERROR]} errors"
    passed = status == PASSED and counts[PASSED] and not counts[FAILED] and not counts[ERROR]
    unverified = any(f.get("code") == "BACKUP_UNVERIFIABLE" for f in sandbox_findings)
    if passed and unverified and not _proved_by_checks(results):
        # No manifest verified the files: only a full read (integrity) and the recovery point
        # (pitr) can prove the data, and this tier ran without one of them.
        return TierJudgement(
            tier,
            ERROR,
            f"checks: {summary}, but backup {backup_id} could not be verified against a manifest "
            "and the tier has no passed integrity and pitr check to prove its data instead: add "
            "both checks to the drill",
            backup_id,
            findings,
            restore_seconds,
        )
    if passed:
        return TierJudgement(
            tier, PASSED, f"checks: {summary}", backup_id, findings, restore_seconds
        )
    verdict = FAILED if status == FAILED else ERROR
    return TierJudgement(tier, verdict, f"checks: {summary}", backup_id, findings, restore_seconds)


def _proved_by_checks(results: list[dict[str, Any]]) -> bool:
    kinds = {r.get("kind") for r in results if r.get("status") == PASSED}
    return {"integrity", "pitr"} <= kinds


def gate_decision(judgement: TierJudgement, *, is_last: bool) -> str:
    """``pass`` (go to report), ``fallback`` (next tier) or ``exhausted`` (escalate)."""
    if judgement.status in (PASSED, DRY_RUN):
        return "pass"
    return "exhausted" if is_last else "fallback"


def overall_verdict(judgements: list[TierJudgement]) -> str:
    statuses = [j.status for j in judgements]
    if PASSED in statuses:
        return VERDICT_PASS
    if DRY_RUN in statuses:
        return VERDICT_DRY_RUN
    if FAILED in statuses:
        return VERDICT_FAIL
    return VERDICT_UNVERIFIED
