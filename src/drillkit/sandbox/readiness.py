"""Is a sandbox serving? A promoted PostgreSQL that answers on its endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def postgres_ready(endpoint: Mapping[str, Any], *, timeout: int = 5) -> tuple[bool, str]:
    """``(ready, why)``: ready means connected and no longer in recovery."""
    import psycopg2  # not at module level: sensors import this module at DAG-parse time

    try:
        conn = psycopg2.connect(
            host=endpoint["host"],
            port=endpoint.get("port", 5432),
            user=endpoint.get("user", "postgres"),
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


def sandbox_ready(record: Mapping[str, Any]) -> tuple[bool, str]:
    if record.get("dry_run"):
        return True, "dry run: nothing to wait for"
    if record.get("backend") == "kubernetes":
        from drillkit.k8s.client import current
        from drillkit.k8s.sandbox import cluster_ready

        return cluster_ready(current(), record)
    endpoints = record.get("endpoints") or {}
    for name, endpoint in endpoints.items():
        if endpoint.get("kind") == "postgres":
            ready, why = postgres_ready(endpoint)
            if not ready:
                return False, f"{name}: {why}"
    return True, "all endpoints ready"
