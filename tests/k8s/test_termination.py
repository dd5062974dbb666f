"""Namespace termination as a real API server does it: asynchronous, 409 on a second DELETE, 403
on creating inside (NamespaceLifecycle). GC, teardown and re-provisioning live with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from k8s_scenario import COORDINATE, DRILL_ID, provision_sandbox, sandbox_backend

from drillkit.exceptions import TransientDrillError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.gc import collect
from drillkit.k8s.kinds import CONFIG_MAP, NAMESPACE
from drillkit.k8s.sandbox import delete_sandbox

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PAST = "2026-11-21T11:00:00Z"


def _expired_namespace(cluster, name):
    cluster.seed(
        {
            "_plural": "namespaces",
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": objects.labels(drill_id="d-" + name, sandbox_id=name),
                "annotations": {objects.EXPIRES_ANNOTATION: PAST},
            },
        }
    )


@pytest.fixture
def slow_termination(production):
    production.emulator.store.namespace_termination_seconds = 30.0
    return production


def test_the_emulator_terminates_namespaces_like_an_api_server(slow_termination):
    cluster = slow_termination
    cluster.ensure_namespace("n")
    path = cluster.path("v1", "namespaces", "n", None)
    code, first = cluster.request("DELETE", path)
    assert code == 200 and first["status"]["phase"] == "Terminating"
    assert cluster.stored("v1", "namespaces", "n")["metadata"]["deletionTimestamp"]
    code, again = cluster.request("DELETE", path)
    assert code == 409 and again["reason"] == "Conflict"
    code, body = cluster.request(
        "POST",
        cluster.path("v1", "configmaps", None, "n"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
    )
    assert code == 403 and body["details"]["causes"][0]["reason"] == "NamespaceTerminating"


def test_a_403_in_a_terminating_namespace_is_not_called_an_rbac_problem(slow_termination):
    cluster = slow_termination
    kube = Kube(cluster.api)
    cluster.ensure_namespace("n")
    kube.delete(NAMESPACE, "n")
    with pytest.raises(TransientDrillError) as refused:
        kube.create(
            CONFIG_MAP,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}},
        )
    assert refused.value.code == "K8S_NAMESPACE_TERMINATING"
    assert "RBAC" not in str(refused.value)


def test_deleting_a_terminating_namespace_again_is_in_progress_not_an_error(slow_termination):
    cluster = slow_termination
    provision_sandbox(cluster)
    first = delete_sandbox(Kube(cluster.api), "orders-abc123")
    second = delete_sandbox(Kube(cluster.api), "orders-abc123")  # 409 Conflict on the server
    assert first["removed"] is True and second["removed"] is True


def test_gc_goes_on_past_a_terminating_namespace(slow_termination):
    cluster = slow_termination
    _expired_namespace(cluster, "drill-a")
    _expired_namespace(cluster, "drill-b")
    cluster.request("DELETE", cluster.path("v1", "namespaces", "drill-a", None))
    swept = {e["id"]: e for e in collect(Kube(cluster.api), now=NOW)}
    assert swept["drill-a"]["removed"] is True
    assert "in progress" in swept["drill-a"]["reason"]
    assert swept["drill-b"]["removed"] is True
    assert cluster.stored("v1", "namespaces", "drill-b")["metadata"]["deletionTimestamp"]
    # Run again while both terminate: no 409 reaches the caller.
    again = {e["id"]: e for e in collect(Kube(cluster.api), now=NOW)}
    assert set(again) == {"drill-a", "drill-b"} and all(e["removed"] for e in again.values())


def test_a_reprovision_waits_for_the_previous_namespace_to_be_gone(production):
    cluster = production
    cluster.emulator.store.namespace_termination_seconds = 1.5
    provision_sandbox(cluster)
    delete_sandbox(Kube(cluster.api), "orders-abc123")
    backend = sandbox_backend(cluster)
    backend.poll_interval = 0.1
    record = backend.provision(**_args())
    namespace = cluster.stored("v1", "namespaces", record["namespace"])
    assert not namespace["metadata"].get("deletionTimestamp")
    assert namespace["status"]["phase"] == "Active"
    assert cluster.stored("postgresql.cnpg.io/v1", "clusters", "sandbox", record["namespace"])


def test_a_reprovision_gives_up_transiently_when_termination_lasts(slow_termination):
    cluster = slow_termination
    provision_sandbox(cluster)
    delete_sandbox(Kube(cluster.api), "orders-abc123")
    backend = sandbox_backend(cluster)
    backend.termination_wait, backend.poll_interval = 0.3, 0.1
    with pytest.raises(TransientDrillError) as waited:
        backend.provision(**_args())
    assert waited.value.code == "K8S_NAMESPACE_TERMINATING"
    assert "still being deleted" in str(waited.value)


def _args():
    return {
        "coordinate": dict(COORDINATE),
        "drill_id": DRILL_ID,
        "name": "orders",
        "ttl": timedelta(hours=2),
        "sandbox_id": "orders-abc123",
    }
