"""The drill namespace's NetworkPolicy works on real CNIs, and no mesh sidecar is injected."""

from __future__ import annotations

import pytest
from k8s_scenario import provision_sandbox

from drillkit.exceptions import InvalidInputError, SandboxError
from drillkit.k8s import objects
from drillkit.k8s.config import parse_sandbox

NS = "drill-orders-abc123"
META = objects.metadata(
    "", namespace="drill-x", drill_id="d", sandbox_id="x", expires_at="2026-11-21T00:00:00Z"
)


def _policy(cluster):
    return cluster.stored("networking.k8s.io/v1", "networkpolicies", "drill-isolation", NS)


def _api_rule(policy):
    return [
        rule
        for rule in policy["spec"]["egress"]
        if any(p.get("port") in (443, 6443, 8443) for p in rule.get("ports") or [])
    ]


def test_the_api_server_is_reached_at_its_endpoints_and_port(production):
    """Most CNIs evaluate egress after the Service's ClusterIP is translated: the rule names the
    endpoint address and 6443, read from the kubernetes Service's EndpointSlice."""
    provision_sandbox(production)
    (rule,) = _api_rule(_policy(production))
    assert rule["to"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6443}]


def test_the_api_server_can_be_configured(production):
    provision_sandbox(
        production,
        api_server={
            "cidrs": ["10.0.0.0/28"],
            "port": 8443,
            "namespace": "openshift-kube-apiserver",
        },
    )
    (rule,) = _api_rule(_policy(production))
    assert rule["to"] == [
        {"ipBlock": {"cidr": "10.0.0.0/28"}},
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "openshift-kube-apiserver"}
            }
        },
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_without_known_api_server_endpoints_provisioning_says_what_to_set(production):
    path = production.path("discovery.k8s.io/v1", "endpointslices", "kubernetes", "default")
    production.request("DELETE", path)
    with pytest.raises(SandboxError) as refused:
        provision_sandbox(production)
    assert refused.value.code == "K8S_API_SERVER_UNKNOWN"
    assert "sandbox.api_server.cidrs" in str(refused.value)


def test_dns_reaches_cluster_dns_on_53_and_5353_and_nodelocal_dns(production):
    provision_sandbox(production)
    dns = _policy(production)["spec"]["egress"][1]
    assert {"namespaceSelector": {}} in dns["to"]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]
    assert {p["port"] for p in dns["ports"]} == {53, 5353}


def test_dns_is_configurable():
    config = parse_sandbox(
        {"worker_namespace": "airflow", "dns": {"ports": [53], "cidrs": ["10.3.0.10/32"]}}
    )
    dns = objects.network_policy(META, config=config)["spec"]["egress"][1]
    assert dns["to"] == [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.3.0.10/32"}}]
    assert {p["port"] for p in dns["ports"]} == {53}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"api_server": {"port": 0}}, "api_server.port"),
        ({"api_server": {"cidrs": ["not-a-network"]}}, "api_server.cidrs"),
        ({"api_server": {"nope": 1}}, "api_server.nope"),
        ({"dns": {"ports": []}}, "dns.ports"),
    ],
)
def test_bad_network_settings_are_named(raw, field):
    with pytest.raises(InvalidInputError, match=field.replace(".", r"\.")):
        parse_sandbox({"worker_namespace": "airflow", **raw})


def test_the_drill_namespace_disables_sidecar_injection(production):
    provision_sandbox(production)
    labels = production.stored("v1", "namespaces", NS)["metadata"]["labels"]
    assert labels["istio-injection"] == "disabled"  # sidecar mode
    assert labels["istio.io/dataplane-mode"] == "none"  # ambient mode
    assert labels[objects.MANAGED_BY] == "drillkit"
