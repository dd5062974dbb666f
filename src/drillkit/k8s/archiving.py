"""Has the source Cluster's WAL archive passed the recovery target? Asked before a recovery Cluster
is created, so a target the archive cannot reach fails at once instead of at the RTO deadline.

CloudNativePG's Cluster status has no "last archived WAL time" (the v1 CRD in ../shared/crds has
none; ``kubectl cnpg status`` reads ``pg_stat_archiver`` from the pod). What the status does carry
is the ``ContinuousArchiving`` condition, set by the instance manager after each archive attempt:
``True``/``ContinuousArchivingSuccess`` while WAL is being archived, ``False``/
``ContinuousArchivingFailing`` (message: the archiver's error) since archiving broke
(https://cloudnative-pg.io/documentation/current/troubleshooting/ "Cluster's conditions").
PostgreSQL archives a WAL segment once it is complete, and CloudNativePG forces a switch every
``archive_timeout`` (5min unless ``spec.postgresql.parameters.archive_timeout`` says otherwise,
https://cloudnative-pg.io/documentation/current/postgresql_conf/), so a working archive holds every
transaction older than about ``archive_timeout``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from drillkit.exceptions import BackupError, InvalidInputError
from drillkit.findings import TARGET_AFTER_ARCHIVE_END
from drillkit.timeutil import isoformat, parse_duration, parse_iso

CONDITION = "ContinuousArchiving"
DEFAULT_ARCHIVE_TIMEOUT = timedelta(minutes=5)
# Upload of a finished segment by barman-cloud-wal-archive: allowed on top of archive_timeout.
UPLOAD_ALLOWANCE = timedelta(seconds=60)
_PG_UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}


def archive_timeout(cluster: Mapping[str, Any]) -> timedelta:
    """The Cluster's ``archive_timeout`` (PostgreSQL units: ``5min``, ``300s``, ``300`` = s)."""
    spec = cluster.get("spec") or {}
    raw = ((spec.get("postgresql") or {}).get("parameters") or {}).get("archive_timeout")
    if raw is None:
        return DEFAULT_ARCHIVE_TIMEOUT
    text = str(raw).strip()
    for unit in sorted(_PG_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip().isdigit():
            return timedelta(seconds=int(text[: -len(unit)]) * _PG_UNITS[unit])
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        return parse_duration(text, field="archive_timeout")
    except InvalidInputError:
        return DEFAULT_ARCHIVE_TIMEOUT


def _condition(cluster: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in (cluster.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == CONDITION:
            return cond
    return None


def check_archive_reaches(
    cluster: Mapping[str, Any],
    *,
    target: datetime | None,
    now: datetime,
    allowance: timedelta = UPLOAD_ALLOWANCE,
) -> dict[str, Any]:
    """``{verified, detail}`` when the target may be in the archive; raises BackupError
    ``TARGET_AFTER_ARCHIVE_END`` when the Cluster's own status shows it is not (yet) there.

    No target (recover to the end of the archive): nothing to check. No condition (an operator
    that has not reported yet): not verified, said so, and the restore is the test.
    """
    name = (cluster.get("metadata") or {}).get("name", "?")
    if target is None:
        return {"verified": None, "detail": "no recovery target: restoring to the archive's end"}
    timeout = archive_timeout(cluster)
    cond = _condition(cluster)
    if cond is None:
        return {
            "verified": False,
            "detail": f"Cluster {name} reports no {CONDITION} condition: whether its archive "
            f"passed the target {isoformat(target)} is not verified",
        }
    since = None
    try:
        since = parse_iso(cond.get("lastTransitionTime"))
    except (TypeError, ValueError):
        since = None
    if cond.get("status") == "False":
        # Archiving broke at `since`: the segment open then was never archived, so nothing after
        # the last forced switch before it is in the archive.
        reach = since - timeout if since else None
        if reach is None or target > reach:
            when = f"since {isoformat(since)}" if since else "(since an unknown time)"
            raise BackupError(
                f"the target {isoformat(target)} is after the end of cluster {name}'s WAL "
                f"archive: its {CONDITION} condition has been False {when} "
                f"({cond.get('reason')}: {cond.get('message')}); fix archiving or choose a "
                f"target before {isoformat(reach) if reach else 'archiving broke'}",
                code=TARGET_AFTER_ARCHIVE_END,
                condition=dict(cond),
            )
        return {
            "verified": True,
            "detail": f"archiving of {name} fails since {isoformat(since)}, after the target",
        }
    if cond.get("status") != "True":
        return {
            "verified": False,
            "detail": f"Cluster {name}'s {CONDITION} condition is {cond.get('status')!r}: "
            "whether its archive passed the target is not verified",
        }
    ready_at = target + timeout + allowance
    if now < ready_at:
        raise BackupError(
            f"the target {isoformat(target)} is only {(now - target).total_seconds():.0f} s ago: "
            f"cluster {name} archives a WAL segment when it is full or after archive_timeout "
            f"({timeout.total_seconds():.0f} s), so the segment holding the target may not be in "
            f"the archive yet; run the drill after {isoformat(ready_at)} or choose an earlier "
            "target",
            code=TARGET_AFTER_ARCHIVE_END,
            condition=dict(cond),
            archived_by=isoformat(ready_at),
        )
    return {
        "verified": True,
        "detail": f"cluster {name} archives continuously and the target is more than "
        f"archive_timeout ({timeout.total_seconds():.0f} s) old",
    }
