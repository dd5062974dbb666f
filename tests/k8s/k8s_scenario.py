"""Shared test scenario: a production CloudNativePG cluster with backups, and a fake operator.

Plain data and helpers (no fixtures), importable by the tests and their conftest.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


DRILL_ID = "6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10"
COORDINATE = {
    "catalog": {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"},
    "backup_id": "orders-db-1",
    "backup": {"barman_id": "20261120T090000"},
    "target": {"requested": "2026-11-20T10:30:00Z"},
}
CNPG = "postgresql.cnpg.io/v1"
STORE_SECRET = "backup-creds"  # production's object-store credentials (store_production)
BACKUP_TIMES = [datetime(2026, 11, 20, h, 0, tzinfo=UTC) for h in (1, 9, 17)]


def backup_object(name: str, *, stopped: datetime, phase: str = "completed", **status: Any):
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": "orders"},
        "spec": {"cluster": {"name": "orders-db"}, "method": "barmanObjectStore"},
        "status": {
            "phase": phase,
            "method": "barmanObjectStore",
            "backupId": stopped.strftime("%Y%m%dT%H%M%S"),
            "startedAt": _iso(stopped - timedelta(minutes=10)),
            "stoppedAt": _iso(stopped),
            "beginLSN": "0/2000028",
            "endLSN": "0/3000100",
            "serverName": "orders-db",
            **status,
        },
    }


# Drill routes for the orders API on Istio, as a spec's `routes:` holds them (copy to change them).
# mode mesh (default): the drill VirtualService lives where the drill's callers (the workers) do.
ISTIO_ROUTES = {
    "kind": "istio",
    "namespace": "airflow",
    "timeout": "10s",
    "retries": {"attempts": 2, "per_try_timeout": "3s"},
    "services": {
        "orders-api": {
            "host": "orders-api.orders.svc.cluster.local",
            "port": 8080,
            "sandbox_service": "orders-api",
        }
    },
}
SOURCE_CLUSTER = {
    "apiVersion": "postgresql.cnpg.io/v1",
    "kind": "Cluster",
    "metadata": {"name": "orders-db", "namespace": "orders"},
    "spec": {
        "instances": 3,
        "imageName": "ghcr.io/cloudnative-pg/postgresql:17.2",
        "storage": {"size": "50Gi", "storageClass": "fast"},
        "postgresql": {"parameters": {"max_connections": "200"}},
        "backup": {
            "retentionPolicy": "30d",
            "barmanObjectStore": {
                "destinationPath": "s3://prod-backups/orders",
                "endpointURL": "https://s3.prod.example.com",
                "s3Credentials": {
                    "accessKeyId": {"name": "backup-creds", "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": "backup-creds", "key": "ACCESS_SECRET_KEY"},
                },
                "wal": {"compression": "gzip", "maxParallel": 4},
                "data": {"compression": "gzip", "jobs": 2},
            },
        },
        "plugins": [{"name": "cnpg-i-metrics.example.com", "enabled": True}],
    },
}


def ready_condition(at: datetime, status: str = "True") -> dict[str, Any]:
    """A Cluster's ``Ready`` condition as CloudNativePG writes it."""
    return {
        "type": "Ready",
        "status": status,
        "reason": "ClusterIsReady" if status == "True" else "ClusterIsNotReady",
        "message": "Cluster is Ready" if status == "True" else "Cluster Is Not Ready",
        "lastTransitionTime": _iso(at),
    }


class FakeCnpgOperator:
    """What CloudNativePG does once a recovery Cluster exists, done to the API server: after a
    short delay, mark it healthy through /status and create its ``-rw`` Service (pointing at
    ``port`` on loopback, the test's stand-in for the restored PostgreSQL).

    The status carries a ``Ready: "True"`` condition (unless ``conditions`` is False) whose
    ``lastTransitionTime`` is the Cluster's ``creationTimestamp`` plus ``restore_seconds`` (one
    value per Cluster, in the order they are found), or the time it was marked ready when no
    value is given: so a test states exactly how long the "restore" took.
    """

    def __init__(
        self,
        cluster: Any,
        *,
        port: int,
        delay: float = 1.0,
        restore_seconds: Sequence[float] = (),
        conditions: bool = True,
    ) -> None:
        self.cluster, self.port, self.delay = cluster, port, delay
        self.restore_seconds, self.conditions = list(restore_seconds), conditions
        self.seen: list[dict[str, Any]] = []  # the Cluster objects as stored when found
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeCnpgOperator:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        done: set[str] = set()
        while not self._stop.wait(0.2):
            for obj in self.cluster.listed("postgresql.cnpg.io/v1", "clusters"):
                namespace = obj["metadata"]["namespace"]
                if not namespace.startswith("drill-") or namespace in done:
                    continue
                index = len(self.seen)
                self.seen.append(obj)
                done.add(namespace)
                took = self.restore_seconds[index] if index < len(self.restore_seconds) else None
                threading.Timer(self.delay, self._ready, (obj, took)).start()

    def _ready(self, obj: dict[str, Any], took: float | None) -> None:
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        path = self.cluster.path("postgresql.cnpg.io/v1", "clusters", name, namespace)
        status: dict[str, Any] = {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "instances": 1,
        }
        if self.conditions:
            created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"])
            ready_at = datetime.now(UTC) if took is None else created + timedelta(seconds=took)
            status["conditions"] = [ready_condition(ready_at)]
        self.cluster.request(
            "PATCH",
            path + "/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        self.cluster.request(
            "POST",
            self.cluster.path("v1", "services", None, namespace),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{name}-rw", "labels": {"cnpg.io/cluster": name}},
                "spec": {
                    "clusterIP": "127.0.0.1",
                    "ports": [{"name": "postgres", "port": self.port}],
                },
            },
        )


def sandbox_backend(cluster: Any, **config: Any) -> Any:
    """The kubernetes sandbox backend on the emulator, reaching it through the real client."""
    from drillkit.k8s.client import Kube
    from drillkit.k8s.sandbox import KubernetesSandboxBackend

    config = {"worker_namespace": "airflow", "endpoint": "cluster_ip", **config}
    return KubernetesSandboxBackend(kube=Kube(cluster.api), config=config)


def provision_sandbox(cluster: Any, sandbox_id: str = "orders-abc123", **config: Any) -> Any:
    """A sandbox of ``COORDINATE`` (the orders-db backup) in ``drill-<sandbox_id>``."""
    return sandbox_backend(cluster, **config).provision(
        dict(COORDINATE),
        drill_id=DRILL_ID,
        name="orders",
        ttl=timedelta(hours=2),
        sandbox_id=sandbox_id,
    )
