"""A Kubernetes drill that proves the data (issue 16): the whole DAG (dag.test) against the API
emulator, with the CloudNativePG stand-in restoring the drill's recovery Cluster for real from the
Barman Cloud store on the loopback S3 server. The smoke task reads the drill's credentials through
the API, reaches the restored database in the cluster (TLS verified against the Cluster's CA) or
through a port-forward, seals it, and runs sql, pitr (both directions) and integrity checks as the
sandbox's non-superuser check role, exactly as on a local sandbox.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cnpg_operator import CnpgOperator

from drillkit.gate import FAILURE_CODES
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration
CATALOG = {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"}


def _spec(
    conn_id: str, directory, *, access: str, selects: tuple[str, ...] = ("latest",)
) -> dict[str, Any]:
    sandbox = {
        "kind": "kubernetes",
        "worker_namespace": "airflow",
        "endpoint": "cluster_ip",
        "access": access,
    }
    names = ["primary", "secondary", "tertiary"]
    return {
        "schedule": None,
        "kubernetes_conn_id": conn_id,
        "catalog": dict(CATALOG),
        "rto": "10m",
        "tiers": [
            {"name": n, "select": s, "sandbox": copy.deepcopy(sandbox)}
            for n, s in zip(names, selects, strict=False)
        ],
        "services": {"orders-db": {"kind": "postgres", "database": "app", "user": "app"}},
        "production": {"hosts": ["*.prod.example.com"], "cidrs": ["10.20.0.0/16"]},
        "checks": [
            {
                "name": "orders-present",
                "kind": "sql",
                "target": "orders-db",
                "query": "select count(*) from orders",
                "expect": {"gt": 0},
            },
            {
                "name": "recovery-point",
                "kind": "pitr",
                "target": "orders-db",
                "truth": {"table": "orders", "id_column": "id"},
                "truth_file": str(directory / "truth.json"),
            },
            {"name": "full-read", "kind": "integrity", "target": "orders-db", "timeout": "2m"},
            {
                "name": "not-superuser",
                "kind": "sql",
                "target": "orders-db",
                "query": "select count(*) from pg_roles where rolname = current_user "
                "and (rolsuper or rolcreaterole or rolreplication)",
                "expect": {"eq": 0},
            },
        ],
    }


@pytest.mark.parametrize("access", ["port_forward", "in_cluster"])
def test_a_kubernetes_drill_proves_the_restored_data(
    store_production, barman_clean, work_root, run_k8s_drill, access
):
    cluster = store_production
    directory, truth, _barman = barman_clean
    target = truth["targets"][-1]
    spec = _spec(cluster.conn_id, directory, access=access)
    with CnpgOperator(cluster, root=work_root) as operator:
        run = run_k8s_drill(f"k8s-data-{access}", spec, {"target_time": target["target"]})
        namespaces = list(operator.logs)
    report = run["report"]
    assert report["verdict"] == "PASS", (report["summary"], report["tiers"])
    checks = {c["name"]: c for c in report["checks"]}
    assert {n: c["status"] for n, c in checks.items()} == {
        "orders-present": "passed",
        "recovery-point": "passed",
        "full-read": "passed",
        "not-superuser": "passed",
    }
    # The restored rows are the ground truth's at the target, from both sides.
    assert checks["orders-present"]["observed"] == target["max_id"]
    pitr = checks["recovery-point"]
    assert pitr["expectation"] == f"id={target['max_id']} present; id={target['absent_id']} absent"
    assert pitr["observed"] == {"before_present": True, "after_present": False}
    assert checks["full-read"]["observed"]["amcheck"] == "passed"
    # How the checks got there, and as whom: said in the report.
    access_said = report["sandbox_access"]
    assert access_said["mode"] == access
    assert ("port-forward" in access_said["detail"]) is (access == "port_forward")
    assert ("verify-full" in access_said["detail"]) is (access == "in_cluster")
    assert access_said["check_roles"]["superuser"] is False
    assert access_said["check_roles"]["read"]["user"].startswith("drillkit_read_")
    assert access_said["postgres_major"] == 18
    # CloudNativePG restarts the server after its recovery Job: the replay time is gone, and the
    # report says so instead of inventing one.
    assert report["sandbox"]["achieved_recovery_point"] is None
    assert "not measurable" in report["sandbox"]["achieved_recovery_point_source"]
    # Nothing secret in the report; the sandbox is gone, its server stopped.
    text = json.dumps(report)
    assert "BEGIN CERTIFICATE" not in text and "password" not in text.lower()
    assert run["tasks"]["primary.teardown"] == "success"
    (namespace,) = namespaces
    assert cluster.stored("v1", "namespaces", namespace) is None
    assert operator.processes() == []


def test_a_backup_the_store_no_longer_holds_fails_and_the_next_tier_passes(
    store_production, barman_clean, work_root, run_k8s_drill
):
    """The newest Backup object says it lives under serverName billing-db (the store has no
    such backup): CloudNativePG's recovery Job fails with "no backup found with ID"; drillkit
    reads that from the Job's log, fails that backup (BACKUP_NOT_IN_STORE) at once, and the
    next tier restores the previous backup and passes."""
    cluster = store_production
    directory, truth, _barman = barman_clean
    target = truth["targets"][-1]
    backups = sorted(
        cluster.listed("postgresql.cnpg.io/v1", "backups", "orders"),
        key=lambda b: parse_iso(b["status"]["stoppedAt"]),
    )
    newest = next(
        b
        for b in reversed(backups)
        if parse_iso(b["status"]["stoppedAt"]) <= parse_iso(target["target"])
    )
    cluster.patch_status(
        "postgresql.cnpg.io/v1",
        "backups",
        newest["metadata"]["name"],
        "orders",
        {"serverName": "billing-db"},
    )
    # A later tier never re-tries a backup an earlier one judged: "latest" is then the one before.
    spec = _spec(cluster.conn_id, directory, access="port_forward", selects=("latest", "latest"))
    with CnpgOperator(cluster, root=work_root):
        run = run_k8s_drill("k8s-data-missing", spec, {"target_time": target["target"]})
    report = run["report"]
    primary, secondary = report["tiers"]
    assert primary["backup_id"] == newest["metadata"]["name"]
    assert primary["status"] == "failed", primary
    codes = {f["code"] for f in primary["findings"]}
    assert "BACKUP_NOT_IN_STORE" in codes and "BACKUP_NOT_IN_STORE" in FAILURE_CODES
    assert secondary["status"] == "passed", secondary
    assert secondary["backup_id"] != primary["backup_id"]
    assert report["verdict"] == "PASS" and report["deciding_tier"] == "secondary"


def test_a_store_the_drill_cannot_read_is_could_not_verify_not_fail(
    store_production, barman_clean, work_root, run_k8s_drill
):
    """The credentials Secret lost its secret key: the recovery Job cannot read the store. That
    says nothing about the backup: COULD NOT VERIFY, never FAIL."""
    cluster = store_production
    directory, truth, _barman = barman_clean
    code, body = cluster.request(
        "PATCH",
        cluster.path("v1", "secrets", "backup-creds", "orders"),
        {"data": {"ACCESS_SECRET_KEY": None}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    spec = _spec(cluster.conn_id, directory, access="port_forward")
    with CnpgOperator(cluster, root=work_root):
        run = run_k8s_drill(
            "k8s-data-unreadable", spec, {"target_time": truth["targets"][-1]["target"]}
        )
    report = run["report"]
    assert report["verdict"] == "COULD NOT VERIFY", report["summary"]
    codes = {f["code"] for f in report["tiers"][0]["findings"]}
    assert "RECOVERY_SOURCE_UNREACHABLE" in codes
