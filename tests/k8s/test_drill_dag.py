"""A whole Kubernetes drill DAG (dag.test) against the emulator: cnpg catalog, kubernetes
sandbox, deferrable readiness, Istio routes, smoke checks, teardown.

No PostgreSQL runs here: a fake CloudNativePG operator marks the recovery Cluster healthy and
creates its ``-rw`` Service pointing at a loopback listener. So the only honest check is ``tcp``
on the endpoint read from that Service: a PASS here proves the plumbing (selection, objects,
readiness, endpoints, routes, teardown), not restored data, and the report still carries the
WAL_CONTINUITY_UNVERIFIED warning. The fake operator stamps the Cluster's Ready condition, so each
test states how long the "restore" took and the RTO it reports is exact.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from k8s_scenario import BACKUP_TIMES, ISTIO_ROUTES, FakeCnpgOperator
from mesh_sidecar import Backend, MeshSidecar, service_with_endpoints

from drillkit.telemetry import report_metrics

TARGET = "2026-11-20T10:30:00Z"  # between the 09:00 and 17:00 backups


HOST = "orders-api.orders.svc.cluster.local"


def _tier(name: str, port: int = 8080) -> dict[str, Any]:
    return {
        "name": name,
        "select": "latest",
        "sandbox": {
            "kind": "kubernetes",
            "worker_namespace": "airflow",
            "endpoint": "cluster_ip",
            "manifests": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": "orders-api",
                        "annotations": {"drillkit.io/endpoint": "http"},
                    },
                    "spec": {"ports": [{"name": "http", "port": port}]},
                }
            ],
        },
    }


def _spec(conn_id: str, *tiers: str, port: int = 8080) -> dict[str, Any]:
    routes = copy.deepcopy(ISTIO_ROUTES)
    routes["services"]["orders-api"]["port"] = port
    return {
        "schedule": None,
        "kubernetes_conn_id": conn_id,
        "catalog": {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"},
        "tiers": [_tier(name, port) for name in tiers or ("primary",)],
        "routes": routes,
        "services": {
            "orders-db": {"kind": "postgres", "database": "app", "user": "app"},
            "orders-api": {"kind": "http"},
        },
        "production": {"hosts": ["*.prod.example.com", HOST], "cidrs": ["10.20.0.0/16"]},
        "checks": [
            {"name": "db-port", "kind": "tcp", "target": "orders-db", "timeout": "5s"},
            {
                "name": "api-health",
                "kind": "http",
                "target": "orders-api",
                "path": "/healthz",
                "expect": {"status": 200},
                "timeout": "5s",
            },
        ],
    }


class FakeEndpointSlices:
    """What the EndpointSlice controller does for the sandbox's orders-api Service: once it
    exists in a drill namespace, a slice with one ready endpoint (the sandbox "pod")."""

    def __init__(self, cluster: Any, *, backend_port: int) -> None:
        self.cluster, self.backend_port = cluster, backend_port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeEndpointSlices:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        done: set[str] = set()
        while not self._stop.wait(0.2):
            for service in self.cluster.listed("v1", "services"):
                namespace = service["metadata"]["namespace"]
                if service["metadata"]["name"] != "orders-api" or namespace in done:
                    continue
                if not namespace.startswith("drill-"):
                    continue
                done.add(namespace)
                self.cluster.request(
                    "POST",
                    self.cluster.path("discovery.k8s.io/v1", "endpointslices", None, namespace),
                    {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {
                            "name": "orders-api-1",
                            "labels": {"kubernetes.io/service-name": "orders-api"},
                        },
                        "addressType": "IPv4",
                        "ports": [{"name": "http", "port": self.backend_port}],
                        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                    },
                )


@pytest.fixture
def mesh(request, production, monkeypatch):
    """The workers' sidecar stand-in (the production host resolves to it), production's
    orders-api pods, and the sandbox's (registered once the drill creates its Service).
    Parametrised indirectly, the sidecar's namespace (default: the workers', airflow)."""
    from drillkit.routing import resolve

    caller_namespace = getattr(request, "param", "airflow")

    real = resolve.lookup
    monkeypatch.setattr(
        resolve, "lookup", lambda host: ["127.0.0.1"] if host == HOST else real(host)
    )
    with (
        MeshSidecar(production, namespace=caller_namespace) as sidecar,
        Backend("production") as prod,
        Backend("sandbox") as sandbox,
        FakeEndpointSlices(production, backend_port=sandbox.port),
    ):
        service_with_endpoints(
            production,
            name="orders-api",
            namespace="orders",
            port=sidecar.port,
            backend_port=prod.port,
        )
        yield {"sidecar": sidecar, "production": prod, "sandbox": sandbox, "port": sidecar.port}
        assert sidecar.unmodelled == []


def test_kubernetes_drill_passes_and_leaves_nothing(production, mesh, tcp_listener, run_k8s_drill):
    spec = _spec(production.conn_id, port=mesh["port"])
    with FakeCnpgOperator(production, port=tcp_listener, restore_seconds=[95]) as cnpg:
        run = run_k8s_drill("k8s-pass", spec, {"target_time": TARGET})
    report = run["report"]
    assert run["tasks"]["primary.sandbox_ready"] == "success"
    assert report["verdict"] == "PASS", report
    assert run["state"] == "success"
    # The restore time is the Cluster's own (creation -> Ready), measured by the sensor.
    readiness = run["readiness"]["primary.sandbox_ready"]
    assert readiness["restore_seconds"] == 95.0
    assert readiness["restore_seconds_source"] == "cluster_conditions"
    assert report["rto_seconds"] == 95.0
    assert report["tiers"][0]["restore_seconds"] == 95.0
    assert report["sandbox"]["restore_seconds_source"] == "cluster_conditions"
    rto = [m for m in report_metrics(report) if m.name == "drillkit.rto.k8s-pass"]
    assert [(m.kind, m.value) for m in rto] == [("timing", 95000.0)]
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
    # The HTTP check took the production path: proven route, signed, answered by the sandbox.
    assert report["route_proof"]["routes"]["orders-api"]["proven"] is True
    assert [(r["method"], r["path"]) for r in mesh["sandbox"].requests] == [
        ("HEAD", "/"),
        ("GET", "/healthz"),
    ]
    assert [r["method"] for r in mesh["production"].requests] == ["HEAD"]
    assert not any("X-Drill-Context" in r["headers"] for r in mesh["production"].requests)
    # Teardown: the drill namespace and the route in production's namespace are gone.
    assert production.stored("v1", "namespaces", namespace) is None
    vs = applied["VirtualService"]
    assert production.stored(vs["api_version"], "virtualservices", vs["name"], "airflow") is None
    assert production.listed("networking.istio.io/v1", "virtualservices") == []


def test_unreachable_sandbox_could_not_verify_and_is_torn_down(production, mesh, run_k8s_drill):
    import socket

    with socket.socket() as probe:  # a port with nothing listening: the check cannot connect
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with FakeCnpgOperator(production, port=dead_port) as cnpg:
        spec = _spec(production.conn_id, port=mesh["port"])
        run = run_k8s_drill("k8s-dead", spec, {"target_time": TARGET})
    report = run["report"]
    assert report["verdict"] == "COULD NOT VERIFY"
    assert report["checks"][0]["status"] == "error"
    assert run["tasks"]["primary.teardown"] == "success"
    (stored,) = cnpg.seen
    assert production.stored("v1", "namespaces", stored["metadata"]["namespace"]) is None
    assert production.listed("networking.istio.io/v1", "virtualservices") == []


def test_a_restore_over_the_rto_falls_back_to_the_next_tier(
    production, mesh, tcp_listener, run_k8s_drill
):
    spec = {**_spec(production.conn_id, "primary", "secondary", port=mesh["port"]), "rto": "10m"}
    # The primary's Cluster took 30 min to turn ready, the secondary's 2 min.
    with FakeCnpgOperator(production, port=tcp_listener, restore_seconds=[1800, 120]) as cnpg:
        run = run_k8s_drill("k8s-slow", spec, {"target_time": TARGET})
    report = run["report"]
    primary, secondary = report["tiers"]
    assert primary["status"] == "failed" and primary["decision"] == "fallback"
    rto_findings = [f for f in primary["findings"] if f["code"] == "RTO_EXCEEDED"]
    assert [f["message"] for f in rto_findings] == [
        "restore took 1800.0 s, over the RTO of 600 s: restore from a newer backup, add "
        "resources, or revise the RTO"
    ]
    assert primary["restore_seconds"] == 1800.0
    assert secondary["status"] == "passed" and secondary["restore_seconds"] == 120.0
    assert secondary["backup_id"] != primary["backup_id"]  # a later tier never re-tries it
    assert report["verdict"] == "PASS" and report["deciding_tier"] == "secondary"
    assert report["rto_seconds"] == 120.0
    names = {m.name for m in report_metrics(report)}
    assert {"drillkit.rto.k8s-slow", "drillkit.fallback.k8s-slow"} <= names
    # Both sandboxes are gone.
    assert len(cnpg.seen) == 2
    for stored in cnpg.seen:
        assert production.stored("v1", "namespaces", stored["metadata"]["namespace"]) is None


@pytest.mark.parametrize("mesh", ["batch"], indirect=True)
def test_a_route_not_in_effect_could_not_verify_and_no_check_runs(
    production, mesh, tcp_listener, run_k8s_drill
):
    """The callers' sidecar does not see the drill route (it is exported only to airflow):
    the signed probe reaches production unstamped, so nothing is checked."""
    spec = _spec(production.conn_id, port=mesh["port"])
    with FakeCnpgOperator(production, port=tcp_listener) as cnpg:
        run = run_k8s_drill("k8s-unrouted", spec, {"target_time": TARGET})
    report = run["report"]
    assert report["verdict"] == "COULD NOT VERIFY"
    codes = [f["code"] for f in report["tiers"][0]["findings"]]
    assert "ROUTE_NOT_IN_EFFECT" in codes
    assert {c["status"] for c in report["checks"]} == {"error"}
    assert report["route_proof"]["proven"] is False
    assert mesh["sandbox"].requests == []
    assert [r["method"] for r in mesh["production"].requests] == ["HEAD", "HEAD"]
    assert run["tasks"]["primary.teardown"] == "success"
    (stored,) = cnpg.seen
    assert production.stored("v1", "namespaces", stored["metadata"]["namespace"]) is None
