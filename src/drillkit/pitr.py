"""Choosing a restore coordinate (backup + recovery target) under RPO rules. Pure: no I/O.

Every backup considered gets a decision and a reason, so a report can say why each was or was not
used. The coordinate is the JSON contract ``drillkit.restore_coordinate/v1`` carried by XCom.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drillkit.catalog.continuity import WalPlan, describe_gap, plan_wal
from drillkit.catalog.model import (
    AT_RESTORE,
    RESTORABLE_STATUSES,
    VERIFIED,
    BackupInfo,
    CatalogSnapshot,
)
from drillkit.catalog.wal import expected_tli, format_lsn, segment_name, segno_of
from drillkit.exceptions import InvalidInputError, NoRestorableBackupError
from drillkit.findings import TOOL_CODES, Finding
from drillkit.policies import check_selection
from drillkit.timeutil import format_pg_timestamp, human_span, isoformat, utcnow

SCHEMA = "drillkit.restore_coordinate/v1"


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _human(delta: timedelta) -> str:
    return human_span(delta.total_seconds())


@dataclass
class Evaluation:
    """What one backup can do for the requested target."""

    backup: BackupInfo
    eligible: bool
    code: str
    reason: str
    plan: WalPlan | None = None
    restorable_from: datetime | None = None
    mode: str = "time"  # time | lsn | immediate
    target_lsn: int | None = None
    stop_lsn: int | None = None  # LSN of the record recovery stops at (mode time)
    recovery_point: datetime | None = None
    data_loss: timedelta = timedelta(0)
    findings: list[Finding] = field(default_factory=list)


def _reject(backup: BackupInfo, code: str, reason: str, **kwargs: Any) -> Evaluation:
    return Evaluation(backup=backup, eligible=False, code=code, reason=reason, **kwargs)


def _last_xact_before(snapshot: CatalogSnapshot, plan: WalPlan, lsn: int) -> datetime | None:
    """Newest transaction before ``lsn``, if contiguous WAL back to it proves none is missed."""
    size = snapshot.archive.segment_size
    for segno in range(segno_of(lsn, size), -1, -1):
        index = snapshot.segments.get(
            segment_name(expected_tli(plan.timeline, segno, size), segno, size)
        )
        if index is None or index.error is not None:
            return None  # a missing segment could hold a later commit: no proof
        earlier = [r.time for r in index.records if r.lsn < lsn]
        if earlier:
            return max(earlier)
    return None


def _restorable_from(
    snapshot: CatalogSnapshot, backup: BackupInfo, plan: WalPlan
) -> datetime | None:
    """Earliest target that gives correct data: every commit before the backup's end is in it.

    The newest commit before the start LSN comes from WAL when the archive proves it; otherwise
    the label's start (or history stop) time stands in, counted as the end of its second since
    those times are truncated. Commits between start and stop LSN are in the plan.
    """
    before_start = _last_xact_before(snapshot, plan, backup.start_lsn)
    if before_start is not None:
        known = [before_start]
    else:
        second = timedelta(seconds=1) - timedelta(microseconds=1)
        known = [t + second for t in (backup.stop_time, backup.start_time) if t is not None]
        if not known:
            return None
    known += [r.time for r in plan.records_before(backup.stop_lsn)]
    return max(known)


def _without_tablespace_replay(evaluation: Evaluation) -> Evaluation:
    """Refuse an eligible ``evaluation`` whose replay creates a tablespace: the server would
    create that directory at production's path on the drill host, outside the sandbox."""
    backup = evaluation.backup
    if not evaluation.eligible or evaluation.plan is None:
        return evaluation
    replayed_below = {
        "time": evaluation.stop_lsn,
        "lsn": None if evaluation.target_lsn is None else evaluation.target_lsn + 1,
        "immediate": backup.stop_lsn,
    }[evaluation.mode]
    created = [
        t for t in evaluation.plan.tablespaces if replayed_below is None or t.lsn < replayed_below
    ]
    if not created:
        return evaluation
    first = created[0]
    evaluation.eligible = False
    evaluation.code = "WAL_CREATES_TABLESPACE"
    evaluation.reason = (
        f"the WAL from backup {backup.backup_id} to the target creates tablespace {first.oid} at "
        f"{first.location} ({format_lsn(first.lsn)}): replaying it would create that directory on "
        "the drill host, outside the sandbox; drill from a backup taken after the tablespace was "
        "created, or pin one"
    )
    return evaluation


def evaluate(
    snapshot: CatalogSnapshot,
    backup: BackupInfo,
    *,
    target: datetime | None,
    rpo: timedelta,
    require_verified: bool = True,
    checksum_gate: bool = False,
) -> Evaluation:
    """What ``backup`` can do for ``target`` (see :func:`_evaluate`), with a warning for
    archived WAL the window could not use: a timeline whose history is archived but none of
    its WAL, and segments past a gap that could not be read."""
    ev = _evaluate(
        snapshot,
        backup,
        target=target,
        rpo=rpo,
        require_verified=require_verified,
        checksum_gate=checksum_gate,
    )
    plan = ev.plan
    if plan is None:
        return ev
    if plan.timeline_without_wal is not None:
        history = f"{plan.timeline_without_wal:08X}.history"
        ev.findings.append(
            Finding(
                code="WAL_TIMELINE_WITHOUT_WAL",
                severity="warning",
                subject=backup.backup_id,
                message=f"the archive holds {history} but no WAL of timeline "
                f"{plan.timeline_without_wal}: recovery follows timeline {plan.timeline.tli} "
                "instead, and what the newer timeline wrote is not restorable; archive its WAL "
                "(check archive_command on the promoted server) or remove the stray history file",
            )
        )
    if plan.unread_after_gap:
        first, count = plan.unread_after_gap[0], len(plan.unread_after_gap)
        ev.findings.append(
            Finding(
                code="WAL_NOT_READ",
                severity="warning",
                subject=backup.backup_id,
                message=f"{count} archived segment(s) after the gap could not be read (first: "
                f"{first}): transactions in them are not counted, so the data loss may be larger "
                "than reported; make them readable (see their findings) to measure it",
            )
        )
    return ev


def _evaluate(
    snapshot: CatalogSnapshot,
    backup: BackupInfo,
    *,
    target: datetime | None,
    rpo: timedelta,
    require_verified: bool = True,
    checksum_gate: bool = False,
) -> Evaluation:
    """What ``backup`` can do for ``target``.

    With ``checksum_gate`` a backup that failed verification stays eligible: the drill then
    tries it and its provisioning step fails the checksum gate, so the report shows the tier
    falling back instead of a silently skipped backup.
    """
    if backup.problems:
        code, sentence = backup.problems[0]
        return _reject(backup, code, sentence)
    unreadable = snapshot.archive.unreadable_history_after(backup.timeline)
    if unreadable is not None:
        return _reject(
            backup,
            "WAL_HISTORY_UNREADABLE",
            f"backup {backup.backup_id}: {unreadable[1]}; recovery to the latest timeline reads "
            f"it and stops there: restore {unreadable[0]} from the server's pg_wal, or remove it "
            "if that timeline was abandoned",
        )
    verification = backup.verification
    gated = checksum_gate and verification.code is not None
    restorable = verification.status in RESTORABLE_STATUSES
    if not restorable and not gated and (require_verified or verification.code):
        code = verification.code or "BACKUP_UNVERIFIABLE"
        detail = verification.detail or "it was not verified"
        return _reject(
            backup,
            code,
            f"backup {backup.backup_id} failed verification ({detail}); restore an older backup "
            "and take a new one",
        )
    plan = plan_wal(snapshot, backup)
    if plan.gap is not None and plan.gap.lsn <= backup.stop_lsn:
        return _reject(
            backup,
            plan.gap.code,
            f"backup {backup.backup_id} cannot reach a consistent state: {describe_gap(plan.gap)}; "
            "restore that segment into the archive or use another backup",
            plan=plan,
        )
    restorable_from = _restorable_from(snapshot, backup, plan)
    if restorable_from is None:
        return _reject(
            backup,
            "BACKUP_UNVERIFIABLE",
            f"backup {backup.backup_id}: when it started is unknown (its label's time zone is not "
            "UTC or a numeric offset, and the archive holds no earlier WAL), so no recovery "
            "target can be proven for it; set log_timezone = 'UTC' on the server",
            plan=plan,
        )
    after_backup = [r for r in plan.records if r.lsn >= backup.stop_lsn]
    commits = [r for r in after_backup if r.kind == "c"]
    base = {"plan": plan, "restorable_from": restorable_from}

    if target is not None and restorable_from > target:
        return _reject(
            backup,
            "TOO_NEW",
            f"backup {backup.backup_id} is restorable only from {isoformat(restorable_from)}, "
            f"after the target {isoformat(target)}",
            **base,
        )

    if target is not None:
        stop = next((r for r in after_backup if r.ts_us > _us(target)), None)
        if stop is not None:
            before = [r for r in commits if r.lsn < stop.lsn]
            point = before[-1].time if before else restorable_from
            return _without_tablespace_replay(
                Evaluation(
                    backup=backup,
                    eligible=True,
                    code="CHOSEN",
                    reason="",
                    mode="time",
                    stop_lsn=stop.lsn,
                    recovery_point=point,
                    **base,
                )
            )

    # The target is not provably reachable (or none was given): recover to the last commit
    # that contiguous WAL holds, and count what that loses against the RPO.
    point = commits[-1].time if commits else restorable_from
    mode, target_lsn = ("lsn", commits[-1].lsn) if commits else ("immediate", None)
    evaluation = Evaluation(
        backup=backup,
        eligible=True,
        code="CHOSEN",
        reason="",
        mode=mode,
        target_lsn=target_lsn,
        recovery_point=point,
        **base,
    )
    beyond = plan.archive_last_xact
    if target is None:
        if plan.gap is None or beyond is None or beyond.lsn < plan.gap.lsn:
            return _without_tablespace_replay(evaluation)
        evaluation.data_loss = beyond.time - point
        code = plan.gap.code
        problem = describe_gap(plan.gap)
        wanted = f"the newest archived transaction ({isoformat(beyond.time)})"
    else:
        evaluation.data_loss = target - point
        if plan.gap is not None:
            code, problem = plan.gap.code, describe_gap(plan.gap)
        else:
            code = "TARGET_AFTER_ARCHIVE_END"
            problem = (
                f"archived WAL ends at {isoformat(point)} with no transaction after the target, "
                "so nothing proves what happened between"
            )
        wanted = f"the target {isoformat(target)}"
    loss = _human(evaluation.data_loss)
    if evaluation.data_loss > rpo:
        evaluation.eligible = False
        evaluation.code = code
        evaluation.reason = (
            f"backup {backup.backup_id} reaches only {isoformat(point)}, {loss} before {wanted}: "
            f"{problem}; that data loss is over the RPO of {_human(rpo)}"
        )
        return evaluation
    evaluation.findings.append(
        Finding(
            code=code,
            severity="warning",
            subject=backup.backup_id,
            message=f"recovering to {isoformat(point)}, {loss} before {wanted} (within the RPO of "
            f"{_human(rpo)}): {problem}",
        )
    )
    return _without_tablespace_replay(evaluation)


def _ordered(backups: Iterable[BackupInfo]) -> list[BackupInfo]:
    """Newest first: by stop LSN (the timeline does not reorder history within one system)."""
    return sorted(backups, key=lambda b: (b.stop_lsn, b.backup_id), reverse=True)


def select_coordinate(
    snapshot: CatalogSnapshot,
    *,
    target: datetime | None,
    policy: str = "latest",
    rpo: timedelta = timedelta(0),
    exclude: Iterable[str] = (),
    pinned: str | None = None,
    require_verified: bool = True,
    checksum_gate: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Choose the backup and recovery target; raise NoRestorableBackupError with every reason."""
    now = now or utcnow()
    check_selection(policy, target, now)
    if policy == "pinned" and not pinned:
        raise InvalidInputError("policy 'pinned' needs a backup id: set pinned_backup")
    excluded = set(exclude)
    backups = _ordered(snapshot.backups)
    if pinned is not None and policy in ("pinned", "latest"):
        if pinned not in {b.backup_id for b in backups}:
            known = ", ".join(b.backup_id for b in backups) or "none"
            raise InvalidInputError(
                f"pinned backup {pinned!r} is not in {snapshot.location}; backups there: {known}"
            )
        policy = "pinned"

    evaluations = [
        evaluate(
            snapshot,
            b,
            target=target,
            rpo=rpo,
            require_verified=require_verified,
            checksum_gate=checksum_gate,
        )
        for b in backups
    ]
    candidates: list[dict[str, str]] = []
    chosen: Evaluation | None = None
    eligible_seen = 0
    for ev in evaluations:
        bid = ev.backup.backup_id
        decision, code, reason = "rejected", ev.code, ev.reason
        if policy == "pinned" and bid != pinned:
            decision, code, reason = "not_considered", "NOT_PINNED", f"the run pinned {pinned}"
        elif not ev.eligible:
            pass
        elif bid in excluded:
            code = "EXCLUDED"
            reason = f"backup {bid} did not pass an earlier tier of this run; not retried"
            eligible_seen += 1
        elif chosen is not None:
            decision, code = "eligible", "NOT_NEEDED"
            reason = f"eligible, but policy {policy} chose {chosen.backup.backup_id}"
        elif policy == "previous" and eligible_seen == 0:
            decision, code = "eligible", "SKIPPED_BY_POLICY"
            reason = "policy previous skips the newest eligible backup"
            eligible_seen += 1
        else:
            chosen = ev
            decision, code = "chosen", "CHOSEN"
            eligible_seen += 1
        candidates.append({"backup_id": bid, "decision": decision, "code": code, "reason": reason})
    if policy == "oldest":
        chosen = _rechoose_oldest(evaluations, candidates, excluded)

    if chosen is None:
        raise _no_backup(snapshot, evaluations, candidates, target=target, rpo=rpo, policy=policy)
    for cand in candidates:
        if cand["backup_id"] == chosen.backup.backup_id:
            cand["reason"] = _chosen_reason(chosen, policy, target)
    return _coordinate(snapshot, chosen, candidates, policy=policy, target=target, rpo=rpo, now=now)


def _rechoose_oldest(
    evaluations: list[Evaluation], candidates: list[dict[str, str]], excluded: set[str]
) -> Evaluation | None:
    usable = [
        (ev, cand)
        for ev, cand in zip(evaluations, candidates, strict=True)
        if ev.eligible and ev.backup.backup_id not in excluded
    ]
    for _ev, cand in usable:
        cand.update(decision="eligible", code="NOT_NEEDED")
        cand["reason"] = "eligible, but policy oldest chose an older backup"
    if not usable:
        return None
    ev, cand = usable[-1]
    cand.update(decision="chosen", code="CHOSEN")
    return ev


def _chosen_reason(ev: Evaluation, policy: str, target: datetime | None) -> str:
    what = {
        "latest": "the newest backup",
        "previous": "the newest backup before the newest eligible one",
        "oldest": "the oldest backup still retained",
        "pinned": "the backup pinned for this run",
    }[policy]
    status = ev.backup.verification.status
    if status == VERIFIED:
        what += " (verified)"
    elif status == AT_RESTORE:
        what += " (verified when restored)"
    else:
        what += f" (verification: {status}, gated later)"
    goal = f"the target {isoformat(target)}" if target else "the newest archived transaction"
    return (
        f"{what} restorable from {isoformat(ev.restorable_from)} whose WAL "
        f"({ev.plan.segment_count if ev.plan else 0} contiguous segments) reaches {goal}"
    )


def _no_backup(
    snapshot: CatalogSnapshot,
    evaluations: list[Evaluation],
    candidates: list[dict[str, str]],
    *,
    target: datetime | None,
    rpo: timedelta,
    policy: str,
) -> NoRestorableBackupError:
    findings: list[Finding] = []
    considered = [c for c in candidates if c["decision"] != "not_considered"]
    rejected = [c for c in considered if c["decision"] == "rejected"]
    codes = {c["code"] for c in rejected}
    considered_ids = {c["backup_id"] for c in considered}
    froms = [
        ev.restorable_from
        for ev in evaluations
        if ev.restorable_from is not None and ev.backup.backup_id in considered_ids
    ]
    all_too_new = rejected and codes == {"TOO_NEW"} and len(rejected) == len(considered)
    # A backup this worker could not read might have served the target: say so first, and the
    # run is then COULD NOT VERIFY rather than a verdict on backups it never judged.
    unread = next((c for c in rejected if c["code"] in TOOL_CODES), None)
    if unread is not None:
        findings.append(Finding(unread["code"], unread["reason"]))
    elif target is not None and all_too_new and froms:
        findings.append(
            Finding(
                "TARGET_BEFORE_OLDEST_RESTORABLE",
                f"the target {isoformat(target)} is before the oldest restorable point "
                f"{isoformat(min(froms))}; choose a later target or keep backups longer",
            )
        )
    elif len(codes - {"TOO_NEW"}) == 1:
        # Backups newer than the target are expected; the one other cause is the real one.
        cause = next(c for c in rejected if c["code"] != "TOO_NEW")
        findings.append(Finding(cause["code"], cause["reason"]))
    if any(ev.data_loss > rpo for ev in evaluations if not ev.eligible and ev.plan is not None):
        findings.append(
            Finding(
                "DATA_LOSS_OVER_RPO",
                f"every backup that reaches toward the target would lose more than the RPO of "
                f"{_human(rpo)}; fix WAL archiving (gaps, archive_timeout) or relax the RPO",
            )
        )
    if not snapshot.backups:
        summary = f"no backups in {snapshot.location}/base"
    else:
        summary = "; ".join(f"{c['backup_id']}: {c['code']}" for c in candidates)
    goal = isoformat(target) if target else "the newest point"
    findings.append(
        Finding(
            "NO_RESTORABLE_BACKUP",
            f"no backup can be restored to {goal} with policy {policy} ({summary})",
        )
    )
    primary = findings[0]
    message = primary.message
    if primary.code != "NO_RESTORABLE_BACKUP":
        message = f"{primary.message} [{findings[-1].message}]"
    return NoRestorableBackupError(
        message,
        code=primary.code,
        candidates=candidates,
        findings=[f.to_dict() for f in findings],
    )


def _postgres(snapshot: CatalogSnapshot, backup: BackupInfo) -> dict[str, Any]:
    """The backup's major and the installation selection read it with (the sandbox resolves its
    own on the worker that restores, from the major)."""
    installation = snapshot.installations.get(backup.pg_major or 0)
    described = installation.describe() if installation else {}
    return {**described, "major": backup.pg_major}


def _coordinate(
    snapshot: CatalogSnapshot,
    ev: Evaluation,
    candidates: list[dict[str, str]],
    *,
    policy: str,
    target: datetime | None,
    rpo: timedelta,
    now: datetime,
) -> dict[str, Any]:
    plan = ev.plan
    assert plan is not None and ev.restorable_from is not None
    size = snapshot.archive.segment_size
    last_lsn = ev.stop_lsn or ev.target_lsn or ev.backup.stop_lsn
    first_segno = segno_of(ev.backup.start_lsn, size)
    last_segno = segno_of(last_lsn, size)
    tli = plan.timeline.tli
    lag = plan.archive_last_xact
    return {
        "schema": SCHEMA,
        "catalog": snapshot.descriptor(),
        "archive": str(snapshot.archive.path),
        "policy": policy,
        "backup_id": ev.backup.backup_id,
        "backup_path": ev.backup.path,
        "backup": ev.backup.summary(),
        "postgres": _postgres(snapshot, ev.backup),
        "target": {
            "requested": isoformat(target),
            "mode": ev.mode,
            "time": format_pg_timestamp(target) if ev.mode == "time" and target else None,
            "lsn": format_lsn(ev.target_lsn) if ev.target_lsn is not None else None,
            "timeline": tli,
            "inclusive": True,
        },
        "restorable_from": isoformat(ev.restorable_from),
        "recovery_point": isoformat(ev.recovery_point),
        "expected_data_loss_seconds": round(ev.data_loss.total_seconds(), 6),
        "rpo_seconds": rpo.total_seconds(),
        "wal": {
            "timeline": tli,
            "first_segment": plan.first_segment,
            "last_segment": segment_name(
                expected_tli(plan.timeline, last_segno, size), last_segno, size
            ),
            "segments": last_segno - first_segno + 1,
            "segment_size": size,
        },
        "archive_lag_seconds": round((now - lag.time).total_seconds(), 3) if lag else None,
        "reason": _chosen_reason(ev, policy, target),
        "candidates": candidates,
        "findings": [f.to_dict() for f in ev.findings],
        "selected_at": isoformat(now),
    }
