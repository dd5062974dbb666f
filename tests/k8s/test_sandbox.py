"""Kubernetes sandboxes against the emulator: objects as stored, idempotent apply, cleanup."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from k8s_scenario import CNPG, DRILL_ID, FakeCnpgOperator, provision_sandbox

from drillkit.exceptions import SandboxError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import CONFIG_MAP
from drillkit.k8s.sandbox import cluster_readiness, endpoints, teardown


def test_provision_stores_namespace_policy_credentials_and_recovery_cluster(production):
    record = provision_sandbox(production)
    namespace = record["namespace"]
    assert namespace == "drill-orders-abc123"
    ns = production.stored("v1", "namespaces", namespace)
    assert ns["metadata"]["labels"][objects.MANAGED_BY] == "drillkit"
    assert ns["metadata"]["labels"][objects.DRILL_ID_LABEL] == DRILL_ID
    assert ns["metadata"]["annotations"][objects.EXPIRES_ANNOTATION] == record["expires_at"]
    policy = production.stored(
        "networking.k8s.io/v1", "networkpolicies", "drill-isolation", namespace
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    secret = production.stored("v1", "secrets", "backup-creds", namespace)
    assert set(secret["data"]) == {"ACCESS_KEY_ID", "ACCESS_SECRET_KEY"}
    assert secret["metadata"]["labels"][objects.SANDBOX_LABEL] == "orders-abc123"
    stored = production.stored(CNPG, "clusters", "sandbox", namespace)
    spec = stored["spec"]
    # Production's cluster has backup and plugins; the sandbox must never have either.
    assert "backup" not in spec and "plugins" not in spec
    assert spec["bootstrap"]["recovery"]["recoveryTarget"]["backupID"] == "20261120T090000"
    assert spec["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == "2026-11-20T10:30:00Z"
    origin = spec["externalClusters"][0]["barmanObjectStore"]
    assert origin["destinationPath"] == "s3://prod-backups/orders"
    assert stored["metadata"]["uid"] and stored["metadata"]["generation"] == 1
    assert production.emulator.store.warnings == []  # nothing of ours was pruned as unknown


def test_provision_twice_patches_and_the_version_moves(production):
    provision_sandbox(production)
    before = production.stored(CNPG, "clusters", "sandbox", "drill-orders-abc123")
    again = provision_sandbox(production)  # a retried task: 409 on create, then a merge patch
    after = production.stored(CNPG, "clusters", "sandbox", "drill-orders-abc123")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    # The retry carries a new expiry: the patch changed the object, so its version moved.
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after["metadata"]["annotations"][objects.EXPIRES_ANNOTATION] == again["expires_at"]


def test_apply_of_an_unchanged_object_is_a_patch_that_keeps_the_version(cluster):
    kube = Kube(cluster.api)
    cluster.ensure_namespace("n")
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "n"},
        "data": {"a": "1"},
    }
    first, action1 = kube.apply(CONFIG_MAP, obj)
    second, action2 = kube.apply(CONFIG_MAP, obj)
    assert (action1, action2) == ("created", "patched")
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed, _ = kube.apply(CONFIG_MAP, {**obj, "data": {"a": "2"}})
    assert int(changed["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert cluster.stored("v1", "configmaps", "c", "n")["data"] == {"a": "2"}


def test_failed_provision_deletes_the_namespace(production):
    production.request("DELETE", production.path("v1", "secrets", "backup-creds", "orders"))
    with pytest.raises(SandboxError, match="backup-creds"):
        provision_sandbox(production)
    assert production.stored("v1", "namespaces", "drill-orders-abc123") is None


def test_readiness_follows_the_cluster_status_and_endpoints_come_from_services(production):
    record = provision_sandbox(production)
    kube = Kube(production.api)
    first = cluster_readiness(kube, record)
    assert not first["ready"] and "no status yet" in first["detail"]
    with FakeCnpgOperator(production, port=6543, delay=0):
        for _ in range(50):
            if cluster_readiness(kube, record)["ready"]:
                break
            time.sleep(0.1)
    ready = cluster_readiness(kube, record)
    assert (ready["ready"], ready["detail"]) == (
        True,
        "Cluster sandbox: Cluster in healthy state, 1/1 instances ready",
    )
    found = endpoints(kube, record)
    assert found["postgres"] == {
        "kind": "postgres",
        "host": "127.0.0.1",
        "port": 6543,
        "user": "app",
        "database": "app",
    }


def test_teardown_removes_the_namespace_and_is_idempotent(production):
    record = provision_sandbox(production)
    kube = Kube(production.api)
    result = teardown(kube, record, keep_sandbox=False, keep_ttl=timedelta(0))
    assert result["removed"] is True
    assert production.stored("v1", "namespaces", record["namespace"]) is None
    assert production.stored(CNPG, "clusters", "sandbox", record["namespace"]) is None
    again = teardown(kube, record, keep_sandbox=False, keep_ttl=timedelta(0))
    assert again["already_gone"] is True


def test_keep_pushes_the_expiry_out(production):
    record = provision_sandbox(production)
    result = teardown(Kube(production.api), record, keep_sandbox=True, keep_ttl=timedelta(days=1))
    ns = production.stored("v1", "namespaces", record["namespace"])
    assert ns["metadata"]["annotations"][objects.EXPIRES_ANNOTATION] == result["kept_until"]
