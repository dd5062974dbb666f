"""A whole Kubernetes drill DAG (dag.test) against the emulator: cnpg catalog, kubernetes
sandbox, deferrable readiness, Istio routes, smoke checks, teardown.

No PostgreSQL runs here: a fake CloudNativePG operator marks the recovery Cluster healthy and
creates its ``-rw`` Service pointing at a loopback listener. So the only honest check is ``tcp``
on the endpoint read from that Service: a PASS here proves the plumbing (selection, objects,
readiness, endpoints, routes, teardown), not restored data, and the report still carries the
WAL_CONTINUITY_UNVERIFIED warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_scenario import BACKUP_TIMES, FakeCnpgOperator

TARGET = "2026-11-20T10:30:00Z"  # between the 09:00 and 17:00 backups


def _spec(conn_id: str) -> dict[str, Any]:
    return {
        "schedule": None,
        "kubernetes_conn_id": conn_id,
        "catalog": {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"},
        "tiers": [
            {
                "name": "primary",
                "select": "latest",
                "sandbox": {
                    "kind": "kubernetes",
                    "worker_namespace": "airflow",
                    "endpoint": "cluster_ip",
                    "manifests": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "metadata": {"name": "orders-api"},
                            "spec": {"ports": [{"name": "http", "port": 8080}]},
                        }
                    ],
                },
            }
        ],
        "routes": {
            "kind": "istio",
            "namespace": "orders",
            "timeout": "10s",
            "retries": {"attempts": 2, "per_try_timeout": "3s"},
            "services": {
                "orders-api": {
                    "host": "orders-api.orders.svc.cluster.local",
                    "port": 8080,
                    "sandbox_service": "orders-api",
                }
            },
        },
        "services": {"orders-db": {"kind": "postgres", "database": "app", "user": "app"}},
        "production": {"hosts": ["*.prod.example.com"], "cidrs": ["10.20.0.0/16"]},
        "checks": [{"name": "db-port", "kind": "tcp", "target": "orders-db", "timeout": "5s"}],
    }


@pytest.fixture
def run_k8s_drill(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from drillkit.operators.runner import _report, _task_lines

    from drillkit.spec import loader_name, loader_source

    def run(name: str, spec: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
        dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        (dags / "drills").mkdir(exist_ok=True)
        path = dags / "drills" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "drill": name}, sort_keys=False))
        loader = dags / loader_name(path)
        loader.write_text(loader_source(f"drills/{path.name}"))
        dag_id = f"drill_{name.replace('-', '_')}"
        bag = DagBag(str(loader))
        dag = bag.get_dag(dag_id)
        assert dag is not None, bag.import_errors
        dag_run = dag.test(logical_date=None, run_conf=conf)
        return {
            "state": str(dag_run.state),
            "tasks": {t: s for t, s, _ in _task_lines(dag_run.run_id, dag_id)},
            "report": _report(dag_run.run_id, dag_id),
        }

    return run


def test_kubernetes_drill_passes_and_leaves_nothing(production, tcp_listener, run_k8s_drill):
    with FakeCnpgOperator(production, port=tcp_listener) as cnpg:
        run = run_k8s_drill("k8s-pass", _spec(production.conn_id), {"target_time": TARGET})
    report = run["report"]
    assert run["tasks"]["primary.sandbox_ready"] == "success"
    assert report["verdict"] == "PASS", report
    assert run["state"] == "success"
    # The recovery Cluster as the server stored it when the "operator" found it.
    (stored,) = cnpg.seen
    spec = stored["spec"]
    assert "backup" not in spec and "plugins" not in spec
    target = spec["bootstrap"]["recovery"]["recoveryTarget"]
    assert target == {"backupID": BACKUP_TIMES[1].strftime("%Y%m%dT%H%M%S"), "targetTime": TARGET}
    namespace = stored["metadata"]["namespace"]
    manifest = report["manifest"]
    assert manifest["services"]["orders-db"]["endpoint"]["host"] == "127.0.0.1"
    assert manifest["services"]["orders-db"]["endpoint"]["port"] == tcp_listener
    applied = {a["kind"]: a for a in manifest["routes"]["applied"]}
    assert set(applied) == {"VirtualService", "DestinationRule"}
    codes = {f["code"] for f in report["tiers"][0]["findings"]}
    assert "WAL_CONTINUITY_UNVERIFIED" in codes
    # Teardown: the drill namespace and the route in production's namespace are gone.
    assert production.stored("v1", "namespaces", namespace) is None
    vs = applied["VirtualService"]
    assert production.stored(vs["api_version"], "virtualservices", vs["name"], "orders") is None
    assert production.listed("networking.istio.io/v1", "virtualservices") == []


def test_unreachable_sandbox_could_not_verify_and_is_torn_down(production, run_k8s_drill):
    import socket

    with socket.socket() as probe:  # a port with nothing listening: the check cannot connect
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with FakeCnpgOperator(production, port=dead_port) as cnpg:
        run = run_k8s_drill("k8s-dead", _spec(production.conn_id), {"target_time": TARGET})
    report = run["report"]
    assert report["verdict"] == "COULD NOT VERIFY"
    assert report["checks"][0]["status"] == "error"
    assert run["tasks"]["primary.teardown"] == "success"
    (stored,) = cnpg.seen
    assert production.stored("v1", "namespaces", stored["metadata"]["namespace"]) is None
    assert production.listed("networking.istio.io/v1", "virtualservices") == []
