"""The Kubernetes parts of a drill spec are validated on load, naming the field to fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from drillkit.spec import SpecError, load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "dags" / "drills" / "orders-k8s.yaml"


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_shipped_example_is_valid_and_paused():
    spec = load_spec(EXAMPLE)
    assert spec.paused is True
    assert spec.routes["kind"] == "istio"
    assert all(t.sandbox["kind"] == "kubernetes" for t in spec.tiers)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["tiers"][0]["sandbox"].update(replicas=3), "tiers[0].sandbox.replicas"),
        (lambda s: s["tiers"][0]["sandbox"].pop("worker_namespace"), "worker_namespace"),
        (lambda s: s["catalog"].update(path="/x"), "catalog.path"),
        (lambda s: s["tiers"][1].update(sandbox={"kind": "local"}), "tiers[1].sandbox.kind"),
        (lambda s: s["routes"].update(kind="linkerd"), "routes.kind"),
        (
            lambda s: s["tiers"][0]["sandbox"].update(access="proxy"),
            "tiers[0].sandbox.access",
        ),
        (lambda s: s["routes"]["retries"].update(attempts=5), "routes.retries"),
        (
            lambda s: s["routes"]["services"]["orders-api"].update(
                sandbox_host="api.prod.example.com", sandbox_service=None
            ),
            "routes.services.orders-api",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_field(change, field):
    data = copy.deepcopy(_example())
    change(data)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(SpecError) as refused:
        parse_spec(data, source="orders-k8s.yaml")
    assert field in str(refused.value)


def test_a_cnpg_catalog_takes_a_local_tier_beside_a_kubernetes_tier():
    """Issue 15 item 3: a local tier restores the chosen Backup's store on the worker."""
    data = copy.deepcopy(_example())
    data["tiers"][0]["sandbox"] = {"kind": "local"}
    data.pop("routes")
    spec = parse_spec({k: v for k, v in data.items() if v is not None}, source="orders-k8s.yaml")
    assert [t.sandbox["kind"] for t in spec.tiers][:2] == ["local", "kubernetes"]
    assert spec.catalog["kind"] == "cnpg"


def test_istio_routes_need_kubernetes_sandboxes():
    data = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "dags" / "drills" / "orders.yaml").read_text()
    )
    data["routes"] = _example()["routes"]
    with pytest.raises(SpecError, match=r"routes\.kind"):
        parse_spec(data, source="orders.yaml")


@pytest.mark.parametrize(
    ("configured", "in_pod", "expected"),
    [
        ("auto", True, "in_cluster"),
        ("auto", False, "port_forward"),
        (None, False, "port_forward"),
        ("in_cluster", False, "in_cluster"),
        ("port_forward", True, "port_forward"),
    ],
)
def test_access_mode_follows_where_the_worker_runs(monkeypatch, configured, in_pod, expected):
    """auto: in the cluster when the kubelet's KUBERNETES_SERVICE_HOST is set, else through the
    API server; an explicit mode wins."""
    from drillkit.k8s.access import resolve_mode

    if in_pod:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert resolve_mode(configured) == expected


def test_an_unknown_access_mode_names_the_modes():
    from drillkit.exceptions import InvalidInputError
    from drillkit.k8s.access import resolve_mode

    with pytest.raises(InvalidInputError, match="in_cluster, port_forward"):
        resolve_mode("ssh")
