"""Is a sandbox serving? A promoted PostgreSQL that answers on its endpoint, or a healthy
CloudNativePG Cluster, whose restore time is measured here because provisioning cannot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drillkit.timeutil import isoformat, utcnow

SCHEMA = "drillkit.readiness/v1"


def postgres_ready(
    endpoint: Mapping[str, Any], *, timeout: int = 5, password_file: str | None = None
) -> tuple[bool, str]:
    """``(ready, why)``: ready means connected and no longer in recovery.

    ``password_file``: the sandbox's check-role file; the wait then logs in as its read role
    (a sandbox's TCP port asks for a password)."""
    import psycopg2  # not at module level: sensors import this module at DAG-parse time

    from drillkit.sandbox.roles import read_login

    user, password = endpoint.get("user", "postgres"), None
    if password_file:
        user, password = read_login(password_file, "read")
    try:
        conn = psycopg2.connect(
            host=endpoint["host"],
            port=endpoint.get("port", 5432),
            user=user,
            password=password,
            dbname=endpoint.get("database", "postgres"),
            connect_timeout=timeout,
        )
    except psycopg2.OperationalError as exc:
        return False, f"not answering: {str(exc).strip().splitlines()[0]}"
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_is_in_recovery()")
            (in_recovery,) = cur.fetchone()
    finally:
        conn.close()
    return (False, "still in recovery") if in_recovery else (True, "promoted and answering")


def sandbox_readiness(record: Mapping[str, Any]) -> dict[str, Any]:
    """The readiness result (``drillkit.readiness/v1``): ``ready``, ``detail``, ``observed_at``,
    and for a kubernetes sandbox the restore time (``restore_seconds`` and its
    ``restore_seconds_source``); a local sandbox measured it while provisioning (None here)."""
    observed_at = utcnow()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "sandbox_id": record.get("id"),
        "observed_at": isoformat(observed_at),
        "restore_seconds": None,
        "restore_seconds_source": None,
    }
    if record.get("dry_run"):
        return {**result, "ready": True, "detail": "dry run: nothing to wait for"}
    if record.get("backend") == "kubernetes":
        from drillkit.k8s.client import current
        from drillkit.k8s.sandbox import cluster_readiness

        return {**result, **cluster_readiness(current(), record, observed_at=observed_at)}
    endpoints = record.get("endpoints") or {}
    for name, endpoint in endpoints.items():
        if endpoint.get("kind") == "postgres":
            roles = record.get("check_roles") or {}
            ready, why = postgres_ready(endpoint, password_file=roles.get("roles_file"))
            if not ready:
                return {**result, "ready": False, "detail": f"{name}: {why}"}
    return {**result, "ready": True, "detail": "all endpoints ready"}


def with_readiness(
    record: Mapping[str, Any] | None,
    readiness: Mapping[str, Any] | None,
    validation: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The sandbox record with what was measured after provisioning filled in where provisioning
    left it None (kubernetes): the restore time from the readiness result, the achieved recovery
    point from the checks' ``sandbox_access``. A value measured while provisioning (local) is
    never overridden."""
    if record is None:
        return None
    merged = dict(record)
    measured = (readiness or {}).get("restore_seconds")
    if record.get("restore_seconds") is None and measured is not None:
        merged["restore_seconds"] = measured
        merged["restore_seconds_source"] = (readiness or {}).get("restore_seconds_source")
    access = (validation or {}).get("sandbox_access") or {}
    if record.get("achieved_recovery_point") is None and access:
        merged["achieved_recovery_point"] = access.get("achieved_recovery_point")
        merged["achieved_recovery_point_source"] = access.get("achieved_recovery_point_source")
    return merged
