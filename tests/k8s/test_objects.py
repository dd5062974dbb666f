"""Pure builders: what the sandbox and route objects say, before any cluster sees them."""

from __future__ import annotations

import copy

import pytest
from k8s_scenario import ISTIO_ROUTES, SOURCE_CLUSTER

from drillkit.exceptions import RoutingError
from drillkit.k8s import objects, route_objects
from drillkit.k8s.config import parse_routes, parse_sandbox

CONFIG = parse_sandbox({"kind": "kubernetes", "worker_namespace": "airflow"})
COORDINATE = {
    "catalog": {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"},
    "backup": {"barman_id": "20261120T090000"},
    "target": {"requested": "2026-11-20T10:30:00Z"},
}
META = objects.metadata(
    "", namespace="drill-x", drill_id="d", sandbox_id="x", expires_at="2026-11-21T00:00:00Z"
)


def test_recovery_cluster_never_copies_backup_or_plugins():
    cluster = objects.cnpg_cluster(
        META, source=SOURCE_CLUSTER, coordinate=COORDINATE, config=CONFIG
    )
    spec = cluster["spec"]
    assert "backup" not in spec and "plugins" not in spec
    assert spec["instances"] == 1
    recovery = spec["bootstrap"]["recovery"]
    assert recovery["source"] == "origin"
    assert recovery["recoveryTarget"] == {
        "backupID": "20261120T090000",
        "targetTime": "2026-11-20T10:30:00Z",
    }
    (origin,) = spec["externalClusters"]
    store = origin["barmanObjectStore"]
    assert store["destinationPath"] == "s3://prod-backups/orders"
    assert store["serverName"] == "orders-db"  # the source's folder, not the sandbox's name
    # Only what reading needs: no compression/encryption/retention settings for writing.
    assert store["wal"] == {"maxParallel": 4} and store["data"] == {"jobs": 2}
    assert spec["storage"] == {"size": "50Gi", "storageClass": "fast"}
    # The source's parameters, and no logical replication worker before the sandbox is sealed.
    assert spec["postgresql"] == {
        "parameters": {"max_connections": "200", "max_logical_replication_workers": "0"}
    }


def test_plugin_source_is_read_only():
    source = copy.deepcopy(SOURCE_CLUSTER)
    del source["spec"]["backup"]
    source["spec"]["plugins"] = [
        {
            "name": objects.BARMAN_PLUGIN,
            "isWALArchiver": True,
            "parameters": {"barmanObjectName": "orders-store"},
        }
    ]
    cluster = objects.cnpg_cluster(META, source=source, coordinate=COORDINATE, config=CONFIG)
    assert "plugins" not in cluster["spec"]
    plugin = cluster["spec"]["externalClusters"][0]["plugin"]
    assert plugin["isWALArchiver"] is False
    assert plugin["parameters"] == {"barmanObjectName": "orders-store", "serverName": "orders-db"}


def test_target_time_only_ever_a_timestamp():
    bad = {**COORDINATE, "target": {"requested": "now'; archive_command='x"}}
    with pytest.raises(Exception, match="not a timestamp"):
        objects.recovery_target(bad)
    latest = {**COORDINATE, "target": {"requested": None}}
    assert objects.recovery_target(latest) == {"backupID": "20261120T090000"}


def test_network_policy_denies_egress_but_dns_and_namespace():
    policy = objects.network_policy(META, config=CONFIG)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"][0] == {"to": [{"podSelector": {}}]}
    # DNS on 53 (kube-dns, CoreDNS) and 5353 (OpenShift's dns-default pods), UDP and TCP.
    assert {(p["protocol"], p["port"]) for p in policy["egress"][1]["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
        ("UDP", 5353),
        ("TCP", 5353),
    }
    assert len(policy["egress"]) == 2  # nothing else unless the spec adds egress rules
    sources = policy["ingress"][0]["from"]
    namespaces = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for s in sources
        if "namespaceSelector" in s
    }
    assert namespaces == {"airflow", "cnpg-system"}


def test_virtual_service_drill_rule_names_only_the_sandbox():
    config = parse_routes(ISTIO_ROUTES)
    service = config.services["orders-api"]
    destination = service.destination("drill-x")
    vs = route_objects.virtual_service(
        META,
        service=service,
        destination=destination,
        context_value="v1.ctx",
        sandbox_id="x",
        config=config,
    )
    drill_rule, default_rule = vs["spec"]["http"]
    assert drill_rule["match"] == [
        {"headers": {"x-drill-context": {"exact": "v1.ctx"}}, "port": service.port}
    ]
    assert drill_rule["headers"] == {"response": {"set": {"x-drill-sandbox": "x"}}}
    assert [r["destination"]["host"] for r in drill_rule["route"]] == [
        "orders-api.drill-x.svc.cluster.local"
    ]
    assert drill_rule["timeout"] == "10s"
    assert drill_rule["retries"]["perTryTimeout"] == "3s"
    assert default_rule["route"][0]["destination"]["host"] == service.host
    assert "match" not in default_rule


@pytest.mark.parametrize(
    ("timeout", "per_try", "attempts", "ok"),
    [(10, 3, 2, True), (9, 3, 2, True), (8, 3, 2, False), (1, 1.5, 0, False), (6, 1.5, 3, True)],
)
def test_retry_budget(timeout, per_try, attempts, ok):
    if ok:
        route_objects.check_retry_budget(
            timeout=timeout, per_try_timeout=per_try, attempts=attempts
        )
    else:
        with pytest.raises(RoutingError) as refused:
            route_objects.check_retry_budget(
                timeout=timeout, per_try_timeout=per_try, attempts=attempts
            )
        assert refused.value.code == "ROUTE_TIMEOUT_BUDGET"


def test_durations_fit_gateway_api_and_istio():
    assert route_objects.duration(1.5) == "1500ms"
    assert route_objects.duration(30) == "30s"


def test_gateway_drill_matches_repeat_production_and_respect_the_crd_limits():
    production = [
        {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"},
        {"path": {"type": "Exact", "value": "/healthz"}},
    ]
    found = route_objects.drill_matches("v1.ctx", production)
    header = {"type": "Exact", "name": "x-drill-context", "value": "v1.ctx"}
    assert found == [
        {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET", "headers": [header]},
        {"path": {"type": "Exact", "value": "/healthz"}, "headers": [header]},
        {"headers": [header]},
    ]
    crowded = [{"headers": [{"name": f"h{i}", "value": "x"} for i in range(16)]}]
    with pytest.raises(RoutingError) as refused:
        route_objects.drill_matches("v1.ctx", crowded)
    assert refused.value.code == "ROUTE_TOO_MANY_MATCHES"
    many = [{"path": {"type": "Exact", "value": f"/p{i}"}} for i in range(64)]
    with pytest.raises(RoutingError):
        route_objects.drill_matches("v1.ctx", many)
