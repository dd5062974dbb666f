"""Istio and Gateway API drill routes against the emulator: stored objects, guards, removal."""

from __future__ import annotations

import copy

import pytest
from k8s_scenario import ISTIO_ROUTES

from drillkit.exceptions import ProductionTargetRefusedError, RoutingError, TransientDrillError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.routes import apply_routes, remove_routes
from drillkit.routing.guard import ProductionGuard

SANDBOX = {
    "id": "orders-abc123",
    "drill_id": "6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10",
    "namespace": "drill-orders-abc123",
    "expires_at": "2026-11-21T12:00:00Z",
}
MANIFEST = {"context": {"value": "v1.6f1c1f9e.drill.1.2.sig"}}
GUARD = ProductionGuard.from_spec({"hosts": ["*.prod.example.com"]})
VS, DR = "networking.istio.io/v1", "networking.istio.io/v1"
VS_NAME = "drill-orders-abc123-orders-api"


@pytest.fixture
def mesh(cluster):
    for name in ("orders", "airflow", SANDBOX["namespace"]):
        cluster.ensure_namespace(name)
    return cluster


def apply(cluster, routes=ISTIO_ROUTES, guard=GUARD):
    return apply_routes(
        Kube(cluster.api), routes=routes, manifest=MANIFEST, sandbox=SANDBOX, guard=guard
    )


def test_istio_routes_as_stored(mesh):
    result = apply(mesh)
    assert [a["kind"] for a in result["applied"]] == ["DestinationRule", "VirtualService"]
    vs = mesh.stored(VS, "virtualservices", VS_NAME, "airflow")
    drill_rule, default_rule = vs["spec"]["http"]
    assert drill_rule["match"][0]["headers"]["x-drill-context"] == {
        "exact": MANIFEST["context"]["value"]
    }
    assert drill_rule["route"][0]["destination"]["host"] == (
        "orders-api.drill-orders-abc123.svc.cluster.local"
    )
    assert drill_rule["retries"] == {
        "attempts": 2,
        "perTryTimeout": "3s",
        "retryOn": "connect-failure,refused-stream,unavailable,cancelled,5xx",
    }
    assert default_rule["route"][0]["destination"] == {
        "host": "orders-api.orders.svc.cluster.local"
    }
    assert vs["metadata"]["labels"][objects.SANDBOX_LABEL] == SANDBOX["id"]
    assert vs["metadata"]["annotations"][objects.EXPIRES_ANNOTATION] == SANDBOX["expires_at"]
    dr = mesh.stored(DR, "destinationrules", VS_NAME, SANDBOX["namespace"])
    policy = dr["spec"]["trafficPolicy"]
    assert policy["connectionPool"]["tcp"]["maxConnections"] == 16
    assert policy["outlierDetection"]["consecutive5xxErrors"] == 3


def test_reapply_patches_and_removal_takes_404_as_done(mesh):
    first = apply(mesh)
    changed = copy.deepcopy(ISTIO_ROUTES)
    changed["timeout"] = "12s"
    second = apply(mesh, routes=changed)
    assert {a["action"] for a in second["applied"]} == {"patched"}
    versions = [int(a["resource_version"]) for a in first["applied"]]
    assert int(second["applied"][1]["resource_version"]) > max(versions)
    assert (
        mesh.stored(VS, "virtualservices", VS_NAME, "airflow")["spec"]["http"][0]["timeout"]
        == "12s"
    )
    removed = remove_routes(Kube(mesh.api), sandbox_id=SANDBOX["id"])
    assert [r["name"] for r in removed] == [VS_NAME]
    assert mesh.stored(VS, "virtualservices", VS_NAME, "airflow") is None
    assert remove_routes(Kube(mesh.api), sandbox_id=SANDBOX["id"]) == []


def test_bad_timeout_budget_is_refused_before_anything_is_applied(mesh):
    bad = copy.deepcopy(ISTIO_ROUTES)
    bad["retries"] = {"attempts": 3, "per_try_timeout": "4s"}
    with pytest.raises(RoutingError) as refused:
        apply(mesh, routes=bad)
    assert refused.value.code == "ROUTE_TIMEOUT_BUDGET"
    assert mesh.listed(VS, "virtualservices") == []
    assert mesh.listed(DR, "destinationrules") == []


@pytest.mark.parametrize(
    "service",
    [
        {"host": "api.prod.example.com", "port": 443, "sandbox_host": "db.prod.example.com"},
        {
            "host": "orders-api.orders.svc.cluster.local",
            "port": 8080,
            "sandbox_host": "orders-api.orders.svc.cluster.local",
        },
    ],
)
def test_production_destination_is_refused(mesh, service):
    bad = copy.deepcopy(ISTIO_ROUTES)
    bad["services"] = {"orders-api": service}
    with pytest.raises(ProductionTargetRefusedError):
        apply(mesh, routes=bad)
    assert mesh.listed(VS, "virtualservices") == []


def test_a_host_with_its_own_virtual_service_is_refused(mesh):
    mesh.seed(
        {
            "_plural": "virtualservices",
            "apiVersion": VS,
            "kind": "VirtualService",
            "metadata": {"name": "orders-api", "namespace": "orders"},
            "spec": {
                "hosts": ["orders-api.orders.svc.cluster.local"],
                "http": [{"route": [{"destination": {"host": "orders-api"}}]}],
            },
        }
    )
    with pytest.raises(RoutingError) as refused:
        apply(mesh)
    assert refused.value.code == "ROUTE_HOST_TAKEN"
    other = dict(SANDBOX, id="other-1")
    mesh.request("DELETE", mesh.path(VS, "virtualservices", "orders-api", "orders"))
    apply_routes(Kube(mesh.api), routes=ISTIO_ROUTES, manifest=MANIFEST, sandbox=other, guard=GUARD)
    with pytest.raises(TransientDrillError) as busy:
        apply(mesh)
    assert busy.value.code == "ROUTE_HOST_BUSY"


def test_gateway_api_route_as_stored(mesh):
    routes = {
        "kind": "gateway_api",
        "namespace": "orders",
        "timeout": "10s",
        "retries": {"per_try_timeout": "4s"},
        "services": {
            "orders-api": {
                "host": "orders-api.orders.svc.cluster.local",
                "port": 8080,
                "sandbox_service": "orders-api",
                "parent": {"kind": "Service", "name": "orders-api"},
            }
        },
    }
    result = apply(mesh, routes=routes)
    assert [a["kind"] for a in result["applied"]] == ["ReferenceGrant", "HTTPRoute"]
    route = mesh.stored("gateway.networking.k8s.io/v1", "httproutes", VS_NAME, "orders")
    drill_rule, default_rule = route["spec"]["rules"]
    assert drill_rule["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-drill-context", "value": MANIFEST["context"]["value"]}
    ]
    assert drill_rule["backendRefs"][0]["namespace"] == SANDBOX["namespace"]
    assert drill_rule["timeouts"] == {"request": "10s", "backendRequest": "4s"}
    assert default_rule["backendRefs"][0]["name"] == "orders-api"
    assert "namespace" not in default_rule["backendRefs"][0]
    grant = mesh.stored(
        "gateway.networking.k8s.io/v1beta1", "referencegrants", "drill-routes", SANDBOX["namespace"]
    )
    assert grant["spec"]["from"][0]["namespace"] == "orders"
    removed = remove_routes(Kube(mesh.api), sandbox_id=SANDBOX["id"])
    assert [r["kind"] for r in removed] == ["HTTPRoute"]


def test_generated_routes_fit_the_upstream_schemas(mesh, require_schemas):
    """The emulator validates against the CRDs: no field of ours was pruned on the way in."""
    apply(mesh)
    assert mesh.emulator.store.warnings == []
