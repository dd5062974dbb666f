"""The restore time of a kubernetes sandbox, measured when its Cluster turns ready."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from k8s_scenario import FakeCnpgOperator, ready_condition

from drillkit.k8s.client import Kube
from drillkit.k8s.sandbox import KubernetesSandboxBackend, cluster_readiness
from drillkit.timeutil import parse_iso

COORDINATE = {
    "catalog": {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"},
    "backup_id": "orders-db-1",
    "backup": {"barman_id": "20261120T090000"},
    "target": {"requested": "2026-11-20T10:30:00Z"},
}
CNPG = "postgresql.cnpg.io/v1"


def provision(cluster: Any) -> dict[str, Any]:
    backend = KubernetesSandboxBackend(
        kube=Kube(cluster.api), config={"worker_namespace": "airflow", "endpoint": "cluster_ip"}
    )
    return backend.provision(
        dict(COORDINATE),
        drill_id="6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10",
        name="orders",
        ttl=timedelta(hours=2),
        sandbox_id="orders-abc123",
    )


def wait_ready(kube: Kube, record: dict[str, Any]) -> dict[str, Any]:
    for _ in range(50):
        readiness = cluster_readiness(kube, record)
        if readiness["ready"]:
            return readiness
        time.sleep(0.1)
    raise AssertionError(f"the Cluster never turned ready: {readiness}")


def test_restore_seconds_come_from_the_clusters_own_timestamps(production):
    record = provision(production)
    kube = Kube(production.api)
    before = cluster_readiness(kube, record)
    assert before["ready"] is False
    assert (before["restore_seconds"], before["restore_seconds_source"]) == (None, None)
    with FakeCnpgOperator(production, port=6543, delay=0, restore_seconds=[754]):
        readiness = wait_ready(kube, record)
    stored = production.stored(CNPG, "clusters", "sandbox", record["namespace"])
    created = parse_iso(stored["metadata"]["creationTimestamp"])
    (condition,) = stored["status"]["conditions"]
    assert parse_iso(condition["lastTransitionTime"]) - created == timedelta(seconds=754)
    assert readiness == {
        "ready": True,
        "detail": "Cluster sandbox: Cluster in healthy state, 1/1 instances ready",
        "restore_seconds": 754.0,
        "restore_seconds_source": "cluster_conditions",
    }


@pytest.mark.parametrize("conditions", ["missing", "not_true"])
def test_without_a_true_ready_condition_the_observed_time_is_used(production, conditions):
    record = provision(production)
    kube = Kube(production.api)
    with FakeCnpgOperator(production, port=6543, delay=0, conditions=False):
        wait_ready(kube, record)
    if conditions == "not_true":  # healthy phase, but the condition lags behind (or is stale)
        path = production.path(CNPG, "clusters", "sandbox", record["namespace"])
        stale = ready_condition(parse_iso(record["created_at"]), status="False")
        code, body = production.request(
            "PATCH",
            path + "/status",
            {"status": {"conditions": [stale]}},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body
    observed = parse_iso(record["created_at"]) + timedelta(seconds=42.5)
    readiness = cluster_readiness(kube, record, observed_at=observed)
    assert readiness["ready"] is True
    assert readiness["restore_seconds"] == 42.5
    assert readiness["restore_seconds_source"] == "observed"
    # A worker clock behind the one that stamped created_at measures nothing rather than 0 s.
    skewed = cluster_readiness(kube, record, observed_at=observed - timedelta(seconds=60))
    assert skewed["ready"] is True
    assert (skewed["restore_seconds"], skewed["restore_seconds_source"]) == (None, None)
