"""Catalog ``kind: cnpg``: a CloudNativePG cluster's completed Backup objects as PITR candidates.

Same policies as the local catalog (latest, previous, oldest, pinned; no retry of a backup an
earlier tier failed). What cannot be checked is said, not assumed: the WAL sits in an object store
drillkit does not read, so continuity to the target is NOT verified, and a backup is not
checksum-verified before it is restored (the restore is the test).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from drillkit.exceptions import InvalidInputError, NoRestorableBackupError
from drillkit.findings import Finding
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import CNPG_BACKUP, CNPG_CLUSTER
from drillkit.pitr import SCHEMA
from drillkit.policies import check_selection
from drillkit.timeutil import isoformat, parse_iso, utcnow

WAL_CONTINUITY_UNVERIFIED = "WAL_CONTINUITY_UNVERIFIED"
BACKUP_NOT_CHECKSUM_VERIFIED = "BACKUP_NOT_CHECKSUM_VERIFIED"
BACKUP_METHOD_UNSUPPORTED = "BACKUP_METHOD_UNSUPPORTED"
_RESTORABLE_METHODS = ("barmanObjectStore", "plugin")


@dataclass(frozen=True)
class CnpgBackup:
    name: str
    phase: str
    method: str
    barman_id: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    begin_lsn: str | None
    end_lsn: str | None
    error: str | None
    # Where and how this backup was taken, from its own status (not the Cluster's settings now):
    # what the recovery Cluster must read (CloudNativePG answers "no target backup found" when
    # serverName or destinationPath differ from the backup's).
    origin: dict[str, Any] | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> CnpgBackup:
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}

        def when(key: str) -> datetime | None:
            try:
                return parse_iso(status.get(key))
            except ValueError:
                return None

        return cls(
            name=obj["metadata"]["name"],
            phase=str(status.get("phase") or "unknown"),
            method=str(status.get("method") or spec.get("method") or "barmanObjectStore"),
            barman_id=status.get("backupId"),
            started_at=when("startedAt"),
            stopped_at=when("stoppedAt"),
            begin_lsn=status.get("beginLSN"),
            end_lsn=status.get("endLSN"),
            error=status.get("error"),
            origin=backup_origin(obj),
        )

    def problem(self) -> tuple[str, str] | None:
        """Why this backup cannot be restored at all, or None."""
        if self.phase != "completed":
            detail = f": {self.error}" if self.error else ""
            code = "BACKUP_INCOMPLETE" if self.phase not in ("failed",) else "BACKUP_FAILED"
            return code, f"backup {self.name} is {self.phase}, not completed{detail}"
        if self.method not in _RESTORABLE_METHODS:
            return (
                BACKUP_METHOD_UNSUPPORTED,
                f"backup {self.name} was taken by {self.method}; drillkit restores object-store "
                "backups (barmanObjectStore or the barman-cloud plugin)",
            )
        if not self.barman_id or self.stopped_at is None:
            return (
                "BACKUP_INCOMPLETE",
                f"backup {self.name} is completed but has no backupId or stoppedAt in its status",
            )
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "backup_id": self.name,
            "barman_id": self.barman_id,
            "method": self.method,
            "start_time": isoformat(self.started_at),
            "stop_time": isoformat(self.stopped_at),
            "start_lsn": self.begin_lsn,
            "stop_lsn": self.end_lsn,
            "verification": "not_verified",
            "origin": self.origin,
        }


_ORIGIN_FIELDS = (
    ("serverName", "server_name"),
    ("destinationPath", "destination_path"),
    ("endpointURL", "endpoint_url"),
    ("endpointCA", "endpoint_ca"),
    ("s3Credentials", "s3_credentials"),
    ("azureCredentials", "azure_credentials"),
    ("googleCredentials", "google_credentials"),
    ("majorVersion", "major_version"),
)


def backup_origin(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The Backup's own record of its object store, server name, major version and method
    (BackupStatus in ../shared/crds/cnpg-backups.yaml; a plugin backup names its plugin in
    ``spec.pluginConfiguration``). Secret references only, never secret values."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    origin: dict[str, Any] = {
        "method": status.get("method") or spec.get("method") or "barmanObjectStore"
    }
    for field, key in _ORIGIN_FIELDS:
        if status.get(field) not in (None, "", {}):
            origin[key] = status[field]
    plugin = spec.get("pluginConfiguration")
    if isinstance(plugin, Mapping) and plugin.get("name"):
        origin["plugin"] = {
            "name": plugin["name"],
            "parameters": dict(plugin.get("parameters") or {}),
        }
    return origin


def list_backups(kube: Kube, *, cluster: str, namespace: str) -> list[dict[str, Any]]:
    """The cluster's Backup objects (CloudNativePG names the cluster in ``spec.cluster.name``)."""
    if kube.get(CNPG_CLUSTER, cluster, namespace) is None:
        raise InvalidInputError(
            f"CloudNativePG cluster {cluster} not found in namespace {namespace}; fix "
            "catalog.cluster / catalog.namespace in the drill spec",
            code="CATALOG_NOT_FOUND",
        )
    return [
        b
        for b in kube.list(CNPG_BACKUP, namespace=namespace)
        if ((b.get("spec") or {}).get("cluster") or {}).get("name") == cluster
    ]


def _unverified_findings(chosen: CnpgBackup, target: datetime | None) -> list[Finding]:
    goal = f"the target {isoformat(target)}" if target else "the end of the archive"
    consequence = (
        "a gap stops recovery before the target and the sandbox refuses to start ('recovery "
        "ended before configured recovery target was reached'), so the tier fails"
        if target
        else "without a target a gap makes PostgreSQL promote silently at the gap, so only a "
        "pitr check can tell how far the restore got"
    )
    return [
        Finding(
            WAL_CONTINUITY_UNVERIFIED,
            f"WAL continuity from backup {chosen.name} (ended {isoformat(chosen.stopped_at)}) to "
            f"{goal} was NOT verified: the WAL is in an object store drillkit does not read. "
            f"{consequence}. Expected data loss and the RPO are unproven by selection",
            severity="warning",
            subject=chosen.name,
        ),
        Finding(
            BACKUP_NOT_CHECKSUM_VERIFIED,
            f"backup {chosen.name} was not checksum-verified before restoring (Backup objects "
            "carry no manifest drillkit can check); the restore and the checks are the test",
            severity="warning",
            subject=chosen.name,
        ),
    ]


def select_from_backups(
    objects: Iterable[Mapping[str, Any]],
    *,
    catalog: Mapping[str, Any],
    target: datetime | None,
    policy: str = "latest",
    rpo: timedelta = timedelta(0),
    exclude: Iterable[str] = (),
    pinned: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Choose a Backup and recovery target; raise NoRestorableBackupError with every reason."""
    now = now or utcnow()
    check_selection(policy, target, now)
    backups = sorted(
        (CnpgBackup.from_object(o) for o in objects),
        key=lambda b: (b.stopped_at or datetime.min.replace(tzinfo=now.tzinfo), b.name),
        reverse=True,
    )
    where = f"cluster {catalog.get('cluster')} in namespace {catalog.get('namespace')}"
    if pinned is not None:
        if pinned not in {b.name for b in backups}:
            known = ", ".join(b.name for b in backups) or "none"
            raise InvalidInputError(
                f"pinned backup {pinned!r} is not a Backup of {where}; backups: {known}"
            )
        policy = "pinned"
    excluded = set(exclude)
    candidates: list[dict[str, str]] = []
    eligible: list[CnpgBackup] = []
    for backup in backups:
        problem = backup.problem()
        if policy == "pinned" and backup.name != pinned:
            entry = ("not_considered", "NOT_PINNED", f"the run pinned {pinned}")
        elif problem:
            entry = ("rejected", *problem)
        elif target is not None and backup.stopped_at and backup.stopped_at > target:
            entry = (
                "rejected",
                "TOO_NEW",
                f"backup {backup.name} ended "
                f"{isoformat(backup.stopped_at)}, after the target {isoformat(target)}",
            )
        elif backup.name in excluded:
            entry = (
                "rejected",
                "EXCLUDED",
                f"backup {backup.name} failed in an earlier tier of this run; not retried",
            )
        else:
            eligible.append(backup)
            entry = ("eligible", "NOT_NEEDED", "")
        candidates.append(
            dict(
                zip(("backup_id", "decision", "code", "reason"), (backup.name, *entry), strict=True)
            )
        )
    order = {
        "latest": eligible,
        "pinned": eligible,
        "oldest": eligible[::-1],
        "previous": eligible[1:],
    }[policy]
    if policy == "previous" and eligible:
        _mark(
            candidates,
            eligible[0].name,
            "eligible",
            "SKIPPED_BY_POLICY",
            "policy previous skips the newest eligible backup",
        )
    chosen = order[0] if order else None
    if chosen is None:
        raise _no_backup(candidates, where=where, target=target, policy=policy)
    reason = (
        f"{_POLICY_WORDS[policy]} of {where} (completed, ended {isoformat(chosen.stopped_at)}); "
        "WAL continuity to the target is not verifiable from here"
    )
    _mark(candidates, chosen.name, "chosen", "CHOSEN", reason)
    for cand in candidates:
        if cand["code"] == "NOT_NEEDED":
            cand["reason"] = f"eligible, but policy {policy} chose {chosen.name}"
    return {
        "schema": SCHEMA,
        "catalog": {
            "kind": "cnpg",
            "cluster": catalog.get("cluster"),
            "namespace": catalog.get("namespace"),
        },
        "archive": None,
        "policy": policy,
        "backup_id": chosen.name,
        "backup_path": None,
        "backup": chosen.summary(),
        "target": {
            "requested": isoformat(target),
            "mode": "time" if target else "latest",
            "time": isoformat(target),
            "lsn": None,
            "timeline": None,
            "inclusive": True,
        },
        "restorable_from": isoformat(chosen.stopped_at),
        "recovery_point": None,  # unknown until the sandbox has replayed
        "expected_data_loss_seconds": None,
        "rpo_seconds": rpo.total_seconds(),
        "wal": None,
        "archive_lag_seconds": None,
        "reason": reason,
        "candidates": candidates,
        "findings": [f.to_dict() for f in _unverified_findings(chosen, target)],
        "selected_at": isoformat(now),
    }


_POLICY_WORDS = {
    "latest": "the newest completed backup",
    "previous": "the newest completed backup before the newest eligible one",
    "oldest": "the oldest completed backup still listed",
    "pinned": "the backup pinned for this run",
}


def _mark(candidates: list[dict[str, str]], name: str, decision: str, code: str, reason: str):
    for cand in candidates:
        if cand["backup_id"] == name:
            cand.update(decision=decision, code=code, reason=reason)


def _no_backup(
    candidates: list[dict[str, str]], *, where: str, target: datetime | None, policy: str
) -> NoRestorableBackupError:
    considered = [c for c in candidates if c["decision"] != "not_considered"]
    codes = {c["code"] for c in considered}
    findings = []
    if target is not None and considered and codes == {"TOO_NEW"}:
        findings.append(
            Finding(
                "TARGET_BEFORE_OLDEST_RESTORABLE",
                f"the target {isoformat(target)} is before the end of every completed backup of "
                f"{where}; choose a later target or keep backups longer",
            )
        )
    summary = "; ".join(f"{c['backup_id']}: {c['code']}" for c in candidates) or "no backups"
    goal = isoformat(target) if target else "the newest point"
    findings.append(
        Finding(
            "NO_RESTORABLE_BACKUP",
            f"no Backup of {where} can be restored to {goal} with policy {policy} ({summary})",
        )
    )
    return NoRestorableBackupError(
        findings[0].message
        if len(findings) == 1
        else f"{findings[0].message} [{findings[-1].message}]",
        code=findings[0].code,
        candidates=candidates,
        findings=[f.to_dict() for f in findings],
    )


def select_cnpg(
    kube: Kube,
    catalog: Mapping[str, Any],
    *,
    target: datetime | None,
    policy: str,
    rpo: timedelta,
    exclude: Iterable[str],
    pinned: str | None,
) -> dict[str, Any]:
    from drillkit.k8s.config import parse_catalog

    cluster, namespace = parse_catalog(catalog)
    objects = list_backups(kube, cluster=cluster, namespace=namespace)
    return select_from_backups(
        objects,
        catalog={"cluster": cluster, "namespace": namespace},
        target=target,
        policy=policy,
        rpo=rpo,
        exclude=exclude,
        pinned=pinned,
    )


# Set by ``for_sandbox`` for a local tier: select the Backup, then restore its store locally.
RESTORE_ON = "restore_on"


class CnpgCatalog:
    """Catalog ``kind: cnpg``: selection from Backup objects; CloudNativePG restores them itself
    (a kubernetes sandbox), so this is a Catalog, not a BackupRepository. For a local tier
    (``restore_on: local``) the chosen Backup's own store is the coordinate's catalog
    (``drillkit.k8s.local_store``)."""

    kind = "cnpg"

    def __init__(self, *, config: Mapping[str, Any], postgres: Any = None) -> None:
        self.config = {k: v for k, v in config.items() if k != RESTORE_ON}
        self.restore_on = str(config.get(RESTORE_ON) or "kubernetes")
        self.postgres = postgres

    def select(
        self,
        *,
        policy: str,
        target: datetime | None,
        rpo: timedelta,
        exclude: list[str],
        pinned: str | None,
        checksum_gate: bool = True,
        say: Any = None,
    ) -> dict[str, Any]:
        from drillkit.k8s.client import current

        if self.restore_on == "local":
            from drillkit.k8s.config import parse_catalog
            from drillkit.k8s.local_store import select_local

            cluster, namespace = parse_catalog(self.config)
            kube = current()
            return select_local(
                kube,
                list_backups(kube, cluster=cluster, namespace=namespace),
                cluster=cluster,
                namespace=namespace,
                target=target,
                policy=policy,
                rpo=rpo,
                exclude=exclude,
                pinned=pinned,
                checksum_gate=checksum_gate,
                postgres=self.postgres,
                say=say,
            )
        del checksum_gate, say  # Backup objects carry nothing to verify (the coordinate says so)
        return select_cnpg(
            current(),
            self.config,
            target=target,
            policy=policy,
            rpo=rpo,
            exclude=exclude,
            pinned=pinned,
        )


def from_config(config: Mapping[str, Any], *, postgres: Any = None) -> CnpgCatalog:
    # postgres: a local tier's binaries (CloudNativePG's images bring their own)
    return CnpgCatalog(config=config, postgres=postgres)


def for_sandbox(config: Mapping[str, Any], sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """A tier whose sandbox is not kubernetes restores the chosen Backup's store locally."""
    if str(sandbox.get("kind") or "local") == "kubernetes":
        return dict(config)
    return {**config, RESTORE_ON: "local"}
