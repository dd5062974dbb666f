"""Mesh drill routes proven in effect, and smoke traffic that takes the production path.

The production host resolves (through drillkit's one resolver seam) to the mesh stand-in
(mesh_sidecar.py), which routes by the Istio / Gateway API objects in the emulator to loopback
"pods" registered in EndpointSlices: production's and the sandbox's.
"""

from __future__ import annotations

import copy
import http.client
from typing import Any

import pytest
from mesh_sidecar import Backend, MeshSidecar, service_with_endpoints

from drillkit import drill
from drillkit.exceptions import RoutingError
from drillkit.gate import judge_tier
from drillkit.k8s.client import Kube
from drillkit.k8s.routes import apply_routes, remove_routes
from drillkit.routing import resolve
from drillkit.routing.context import issue_context
from drillkit.routing.guard import ProductionGuard
from drillkit.routing.manifest import build_manifest

DRILL_ID = "6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10"
KEY = b"k" * 32
HOST = "orders-api.orders.svc.cluster.local"
SANDBOX = {
    "id": "orders-abc123",
    "drill_id": DRILL_ID,
    "namespace": "drill-orders-abc123",
    "expires_at": "2026-11-21T12:00:00Z",
}
# The production host is declared production: only a proven route lets drill traffic go there.
PRODUCTION = {"hosts": [HOST, "*.prod.example.com"], "cidrs": ["10.20.0.0/16"]}
CHECK = {
    "name": "api-health",
    "kind": "http",
    "target": "orders-api",
    "path": "/healthz",
    "expect": {"status": 200},
}
COORDINATE = {"recovery_point": "2026-11-20T10:30:00Z"}


@pytest.fixture
def mesh(cluster, monkeypatch):
    """Namespaces, the stand-in sidecar of the workers' namespace, and production's and the
    sandbox's pods behind their Services; the production host resolves to the sidecar."""
    for name in ("orders", "airflow", SANDBOX["namespace"]):
        cluster.ensure_namespace(name)
    real = resolve.lookup
    lookups: list[str] = []

    def lookup(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if host == HOST else real(host)

    monkeypatch.setattr(resolve, "lookup", lookup)
    with (
        MeshSidecar(cluster, namespace="airflow") as sidecar,
        Backend("production") as prod,
        Backend("sandbox") as sandbox,
    ):
        port = sidecar.port
        service_with_endpoints(
            cluster, name="orders-api", namespace="orders", port=port, backend_port=prod.port
        )
        service_with_endpoints(
            cluster,
            name="orders-api",
            namespace=SANDBOX["namespace"],
            port=port,
            backend_port=sandbox.port,
        )
        yield {
            "cluster": cluster,
            "sidecar": sidecar,
            "production": prod,
            "sandbox": sandbox,
            "port": port,
            "lookups": lookups,
        }
        assert sidecar.unmodelled == [], "the stand-in met configuration it does not model"


def istio_routes(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "istio",
        "namespace": "airflow",
        "timeout": "10s",
        "retries": {"attempts": 2, "per_try_timeout": "3s"},
        "services": {"orders-api": {"host": HOST, "port": port, "sandbox_service": "orders-api"}},
        **extra,
    }


def gateway_routes(port: int) -> dict[str, Any]:
    return {
        "kind": "gateway_api",
        "namespace": "orders",
        "timeout": "10s",
        "retries": {"per_try_timeout": "4s"},
        "services": {
            "orders-api": {
                "host": HOST,
                "port": port,
                "sandbox_service": "orders-api",
                "parent": {"kind": "Service", "name": "orders-api"},
            }
        },
    }


def routed_manifest(env: dict[str, Any], routes: dict[str, Any]) -> dict[str, Any]:
    """The tier's manifest: the sandbox URL of orders-api, then the applied mesh routes."""
    context = issue_context(drill_id=DRILL_ID, environment="drill", key=KEY, ttl_seconds=3600)
    manifest = build_manifest(
        drill_id=DRILL_ID,
        environment="drill",
        endpoints=None,
        services={"orders-api": {"kind": "http"}},
        overrides={"orders-api": {"url": f"http://127.0.0.1:{env['sandbox'].port}"}},
        production=ProductionGuard.from_spec(PRODUCTION),
        context=context,
    )
    manifest["routes"] = apply_routes(
        Kube(env["cluster"].api),
        routes=routes,
        manifest=manifest,
        sandbox=SANDBOX,
        guard=ProductionGuard.from_spec(PRODUCTION),
    )
    return manifest


def smoke(manifest: dict[str, Any], checks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return drill.smoke(
        checks=checks or [CHECK],
        manifest=manifest,
        production=PRODUCTION,
        coordinate=COORDINATE,
        sandbox=SANDBOX,
        key=KEY,
    )


def verdict(validation: dict[str, Any]) -> str:
    return judge_tier(
        "primary",
        selected=True,
        coordinate={"backup_id": "b1"},
        sandbox={"id": SANDBOX["id"]},
        validation=validation,
        errors=[],
        rto_seconds=3600,
        dry_run=False,
    ).status


def through_sidecar(env: dict[str, Any], path: str, **headers: str) -> tuple[int, str | None]:
    """A caller's GET to the production host (the sidecar): status and the proof header."""
    connection = http.client.HTTPConnection("127.0.0.1", env["port"], timeout=5)
    try:
        connection.request("GET", path, headers={"Host": HOST, **headers})
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("x-drill-sandbox")
    finally:
        connection.close()


def signed(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if any(k.lower() == "x-drill-context" for k in r["headers"])]


def test_checks_take_the_production_path_through_a_proven_route(mesh):
    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    validation = smoke(manifest)
    assert validation["status"] == "passed", validation
    assert verdict(validation) == "passed"
    proof = validation["route_proof"]["routes"]["orders-api"]
    assert proof["proven"] is True
    assert proof["with_context"]["stamp"] == SANDBOX["id"]
    assert proof["without_context"]["stamp"] is None
    # The check went to the production host (the sidecar), with the signed header, and the
    # mesh sent it to the sandbox; production saw only the unsigned HEAD probe.
    (check_request,) = [r for r in mesh["sidecar"].log if r["method"] == "GET"]
    assert check_request["host"] == HOST and check_request["path"] == "/healthz"
    assert "x-drill-context" in check_request["headers"]
    assert [(r["method"], r["path"]) for r in mesh["sandbox"].requests] == [
        ("HEAD", "/"),
        ("GET", "/healthz"),
    ]
    assert [(r["method"], r["path"]) for r in mesh["production"].requests] == [("HEAD", "/")]
    assert signed(mesh["production"].requests) == []
    assert HOST in mesh["lookups"]


def test_a_route_the_callers_cannot_see_is_not_in_effect_and_could_not_verify(mesh, cluster):
    """The mesh has not applied the drill rule where the callers are (here: the route is in
    another namespace, exported only there): the signed probe reaches production unstamped."""
    cluster.ensure_namespace("batch")
    routes = istio_routes(mesh["port"], namespace="batch")
    manifest = routed_manifest(mesh, routes)
    validation = smoke(manifest)
    assert validation["status"] == "error"
    assert [f["code"] for f in validation["findings"]] == ["ROUTE_NOT_IN_EFFECT"]
    assert "not proven in effect" in validation["findings"][0]["message"]
    assert [r["status"] for r in validation["results"]] == ["error"]
    assert validation["route_proof"]["proven"] is False
    assert verdict(validation) == "error"  # COULD NOT VERIFY, never PASS or FAIL
    # No check ran: production saw the two HEAD probes and nothing else.
    assert [r["method"] for r in mesh["production"].requests] == ["HEAD", "HEAD"]
    assert mesh["sandbox"].requests == []


def test_without_a_proof_the_guard_refuses_the_production_host(mesh):
    """The HTTP check is aimed at the production host but no probe ran: refused, not sent."""
    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    from drillkit.checks import run_checks
    from drillkit.routing.proof import via_production_host

    proof = {"routes": {"orders-api": {"proven": True, "host": HOST, "port": mesh["port"]}}}
    validation = run_checks(
        [CHECK],
        via_production_host(manifest, proof),
        guard=ProductionGuard.from_spec(PRODUCTION),
    )
    assert validation["status"] == "error"
    assert validation["results"][0]["status"] == "error"
    assert "PRODUCTION_TARGET_REFUSED" in {f["code"] for f in validation["findings"]}
    assert mesh["sidecar"].log == []


def test_a_dead_sandbox_answers_503_and_production_receives_nothing(mesh, cluster):
    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    assert smoke(manifest)["status"] == "passed"
    before = len(mesh["production"].requests)
    # The sandbox's pods die: the EndpointSlice controller empties its slice.
    cluster.request(
        "DELETE",
        cluster.path("discovery.k8s.io/v1", "endpointslices", "orders-api-1", SANDBOX["namespace"]),
    )
    header = {"X-Drill-Context": manifest["context"]["value"]}
    answers = [through_sidecar(mesh, "/orders", **header) for _ in range(3)]
    assert answers == [(503, None)] * 3
    # A new smoke run cannot prove the route (the signed probe gets the 503, unstamped).
    validation = smoke(manifest)
    assert [f["code"] for f in validation["findings"]] == ["ROUTE_NOT_IN_EFFECT"]
    assert "answered 503" in validation["findings"][0]["message"]
    # Production got only the unsigned probe of the second run: no drill request, no failover.
    assert signed(mesh["production"].requests) == []
    assert [r["method"] for r in mesh["production"].requests[before:]] == ["HEAD"]


PRODUCTION_VS = {
    "_plural": "virtualservices",
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "orders-api", "namespace": "orders"},
    "spec": {
        "hosts": ["orders-api"],  # short: orders-api.orders.svc.cluster.local
        "http": [{"route": [{"destination": {"host": "orders-api"}}]}],
    },
}


def test_a_production_virtual_service_the_workers_see_is_refused(mesh, cluster):
    """Another namespace and the short host name: both missed by a one-namespace, raw-string
    check. Istio would not merge the two (IST0109)."""
    cluster.seed(copy.deepcopy(PRODUCTION_VS))
    with pytest.raises(RoutingError) as refused:
        routed_manifest(mesh, istio_routes(mesh["port"]))
    assert refused.value.code == "ROUTE_HOST_TAKEN"
    assert "orders/orders-api" in str(refused.value) and "exportTo" in str(refused.value)
    assert cluster.listed("networking.istio.io/v1", "virtualservices", "airflow") == []


def test_a_production_virtual_service_scoped_away_stays_byte_identical(mesh, cluster):
    """Production's VirtualService exported only to its own namespace: the drill's, exported
    only to the workers', coexists; production's object is never written."""
    scoped = copy.deepcopy(PRODUCTION_VS)
    scoped["spec"]["exportTo"] = ["."]
    cluster.seed(scoped)
    before = cluster.stored("networking.istio.io/v1", "virtualservices", "orders-api", "orders")
    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    assert smoke(manifest)["status"] == "passed"
    remove_routes(Kube(cluster.api), sandbox_id=SANDBOX["id"])
    after = cluster.stored("networking.istio.io/v1", "virtualservices", "orders-api", "orders")
    assert after == before


def test_drill_virtual_service_placement_and_port_semantics(mesh, cluster):
    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    (vs,) = cluster.listed("networking.istio.io/v1", "virtualservices", "airflow")
    spec = vs["spec"]
    assert spec["hosts"] == [HOST]
    assert spec["exportTo"] == ["."] and spec["gateways"] == ["mesh"]
    drill_rule, production_rule = spec["http"]
    assert drill_rule["match"] == [
        {
            "headers": {"x-drill-context": {"exact": manifest["context"]["value"]}},
            "port": mesh["port"],
        }
    ]
    assert drill_rule["headers"] == {"response": {"set": {"x-drill-sandbox": SANDBOX["id"]}}}
    # The production rule keeps the port the caller asked for (no port pinned).
    assert production_rule["route"] == [{"destination": {"host": HOST}}]
    assert cluster.emulator.store.warnings == []


def test_gateway_mode_binds_to_the_named_gateways(mesh, cluster):
    routes = istio_routes(mesh["port"], mode="gateway", gateways=["istio-ingress/public"])
    routes["namespace"] = "orders"
    cluster.seed(copy.deepcopy(PRODUCTION_VS))  # mesh-bound: not where the drill rule applies
    routed_manifest(mesh, routes)
    (vs,) = [
        v
        for v in cluster.listed("networking.istio.io/v1", "virtualservices", "orders")
        if v["metadata"]["name"] != "orders-api"
    ]
    assert vs["spec"]["gateways"] == ["istio-ingress/public"]
    assert vs["spec"]["exportTo"] == ["istio-ingress"]
    assert [r["name"] for r in vs["spec"]["http"]] == ["drill"]
    assert "port" not in vs["spec"]["http"][0]["match"][0]


def test_gateway_api_drill_rule_wins_over_longer_production_prefixes(mesh, cluster):
    """A production HTTPRoute sends /api to production: a header-only drill rule (implicit /)
    would lose to the longer prefix; the drill rule repeats production's matches."""
    cluster.seed(
        {
            "_plural": "httproutes",
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "orders-api", "namespace": "orders"},
            "spec": {
                "parentRefs": [
                    {"group": "", "kind": "Service", "name": "orders-api", "port": mesh["port"]}
                ],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                        "backendRefs": [{"name": "orders-api", "port": mesh["port"]}],
                    },
                    {"backendRefs": [{"name": "orders-api", "port": mesh["port"]}]},
                ],
            },
        }
    )
    before = cluster.stored("gateway.networking.k8s.io/v1", "httproutes", "orders-api", "orders")
    manifest = routed_manifest(mesh, gateway_routes(mesh["port"]))
    header = {"X-Drill-Context": manifest["context"]["value"]}
    # Drill traffic on a path production routes by a longer prefix still reaches the sandbox;
    # other traffic stays with production.
    assert through_sidecar(mesh, "/api/orders", **header) == (200, SANDBOX["id"])
    assert through_sidecar(mesh, "/api/orders") == (200, None)
    assert through_sidecar(mesh, "/other", **header) == (200, SANDBOX["id"])
    assert [r["path"] for r in mesh["production"].requests] == ["/api/orders"]
    assert [r["path"] for r in mesh["sandbox"].requests] == ["/api/orders", "/other"]
    mesh["production"].requests.clear()
    mesh["sandbox"].requests.clear()
    check = {**CHECK, "path": "/api/orders"}
    validation = smoke(manifest, [check])
    assert validation["status"] == "passed", validation
    assert validation["route_proof"]["proven"] is True
    assert [(r["method"], r["path"]) for r in mesh["sandbox"].requests] == [
        ("HEAD", "/"),
        ("GET", "/api/orders"),
    ]
    assert signed(mesh["production"].requests) == []
    kinds = [a["kind"] for a in manifest["routes"]["applied"]]
    assert kinds == ["ReferenceGrant", "HTTPRoute"]
    name = manifest["routes"]["applied"][1]["name"]
    drill_route = cluster.stored("gateway.networking.k8s.io/v1", "httproutes", name, "orders")
    # Production's routes already attach to the Service: no catch-all of ours.
    assert [r["name"] for r in drill_route["spec"]["rules"]] == ["drill"]
    after = cluster.stored("gateway.networking.k8s.io/v1", "httproutes", "orders-api", "orders")
    assert after == before
    assert cluster.emulator.store.warnings == []  # nothing of ours pruned by the CRD schema


def test_mesh_routes_need_the_workers_namespace_and_full_host_names():
    from drillkit.exceptions import InvalidInputError
    from drillkit.k8s.config import check_spec, parse_routes

    sandbox = {"kind": "kubernetes", "worker_namespace": "airflow"}
    catalog = {"kind": "cnpg"}
    with pytest.raises(InvalidInputError, match="workers' namespace"):
        check_spec(
            catalog=catalog,
            sandboxes=[sandbox],
            routes={**istio_routes(8080), "namespace": "orders"},
            production={},
        )
    short = istio_routes(8080)
    short["services"]["orders-api"]["host"] = "orders-api"
    with pytest.raises(InvalidInputError, match="full name"):
        parse_routes(short)
    with pytest.raises(InvalidInputError, match="gateways"):
        parse_routes(istio_routes(8080, mode="gateway"))
    assert check_spec(
        catalog=catalog, sandboxes=[sandbox], routes=istio_routes(8080), production={}
    )


def test_the_proof_is_in_the_report(mesh):
    from drillkit.report import build_report

    manifest = routed_manifest(mesh, istio_routes(mesh["port"]))
    validation = smoke(manifest)
    report = build_report(
        drill="orders",
        dag_id="drill_orders",
        run_id="r1",
        tiers=[
            {
                "decision": {"tier": "primary", "decision": "pass", "status": "passed"},
                "coordinate": {"backup_id": "b1"},
                "sandbox": {"id": SANDBOX["id"]},
                "validation": validation,
                "manifest": manifest,
            }
        ],
        dry_run=False,
    )
    assert report["route_proof"]["routes"]["orders-api"]["proven"] is True


def test_other_ports_of_a_multi_port_service_keep_their_routing(cluster, monkeypatch):
    """orders-api serves http and admin ports: only the routed port's signed traffic goes to the
    sandbox; the admin port keeps going to production's admin port, signed or not."""
    for name in ("orders", "airflow", SANDBOX["namespace"]):
        cluster.ensure_namespace(name)
    with (
        MeshSidecar(cluster, namespace="airflow", ports=2) as sidecar,
        Backend("production-http") as prod_http,
        Backend("production-admin") as prod_admin,
        Backend("sandbox") as sandbox,
    ):
        http_port, admin_port = sidecar.ports
        cluster.seed(
            {
                "_plural": "services",
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "orders-api", "namespace": "orders"},
                "spec": {
                    "ports": [
                        {"name": "http", "port": http_port},
                        {"name": "admin", "port": admin_port},
                    ]
                },
            }
        )
        cluster.seed(
            {
                "_plural": "endpointslices",
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "orders-api-1",
                    "namespace": "orders",
                    "labels": {"kubernetes.io/service-name": "orders-api"},
                },
                "addressType": "IPv4",
                "ports": [
                    {"name": "http", "port": prod_http.port},
                    {"name": "admin", "port": prod_admin.port},
                ],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            }
        )
        service_with_endpoints(
            cluster,
            name="orders-api",
            namespace=SANDBOX["namespace"],
            port=http_port,
            backend_port=sandbox.port,
        )
        env = {"cluster": cluster, "sandbox": sandbox, "port": http_port}
        manifest = routed_manifest(env, istio_routes(http_port))
        header = {"X-Drill-Context": manifest["context"]["value"]}
        assert through_sidecar(env, "/a", **header) == (200, SANDBOX["id"])
        admin = {**env, "port": admin_port}
        assert through_sidecar(admin, "/metrics", **header) == (200, None)
        assert through_sidecar(admin, "/metrics") == (200, None)
        assert [r["path"] for r in prod_admin.requests] == ["/metrics", "/metrics"]
        assert [r["path"] for r in sandbox.requests] == ["/a"]
        assert prod_http.requests == []
        assert sidecar.unmodelled == []


@pytest.mark.parametrize(
    ("export_to", "gateways", "host", "refused"),
    [
        (["airflow"], None, HOST, True),  # exported by name to the workers' namespace
        (["*"], None, "orders-api.orders.svc", True),  # namespaced form of the same Service
        (["team-y"], None, HOST, False),  # the workers cannot see it
        (None, ["istio-ingress/public"], HOST, False),  # bound to a gateway, not the mesh
        (None, ["mesh", "istio-ingress/public"], "orders-api.orders", True),
    ],
)
def test_conflicts_follow_export_to_gateways_and_host_forms(
    mesh, cluster, export_to, gateways, host, refused
):
    cluster.ensure_namespace("team-x")
    vs = copy.deepcopy(PRODUCTION_VS)
    vs["metadata"]["namespace"] = "team-x"
    vs["spec"]["hosts"] = [host]
    vs["spec"]["http"] = [{"route": [{"destination": {"host": HOST}}]}]
    if export_to:
        vs["spec"]["exportTo"] = export_to
    if gateways:
        vs["spec"]["gateways"] = gateways
    cluster.seed(vs)
    if refused:
        with pytest.raises(RoutingError) as taken:
            routed_manifest(mesh, istio_routes(mesh["port"]))
        assert taken.value.code == "ROUTE_HOST_TAKEN"
    else:
        routed_manifest(mesh, istio_routes(mesh["port"]))
        assert len(cluster.listed("networking.istio.io/v1", "virtualservices", "airflow")) == 1


def test_another_drills_http_route_on_the_same_service_is_busy(mesh, cluster):
    from drillkit.exceptions import TransientDrillError

    other = dict(SANDBOX, id="other-1")
    context = issue_context(drill_id=DRILL_ID, environment="drill", key=KEY, ttl_seconds=3600)
    apply_routes(
        Kube(cluster.api),
        routes=gateway_routes(mesh["port"]),
        manifest={"context": {"value": context.value}},
        sandbox=other,
        guard=ProductionGuard.from_spec(PRODUCTION),
    )
    with pytest.raises(TransientDrillError) as busy:
        routed_manifest(mesh, gateway_routes(mesh["port"]))
    assert busy.value.code == "ROUTE_HOST_BUSY"
