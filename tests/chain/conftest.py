"""Fixtures of the routing-chain tests: the Kubernetes API emulator (the k8s tests' own, started
here with its own connection id), three loopback tiers, the mesh front, a fake Prometheus.

Nothing here sends traffic anywhere but 127.0.0.1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "k8s"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chain_mesh import FakePrometheus, MeshFront, TierServer
from chainkit import CONN_ID, CRD_DIR, HOSTS, LABELS, NAMESPACE, Cluster
from emulator import Emulator


@pytest.fixture(scope="session")
def chain_emulator(work_root: Path):
    server = Emulator(crd_dir=CRD_DIR if CRD_DIR.is_dir() else None).start()
    kubeconfig = server.connect_airflow(work_root / "chain-emulator-kubeconfig.json", CONN_ID)
    yield server, kubeconfig
    server.stop()


@pytest.fixture
def cluster(chain_emulator) -> Cluster:
    """A fresh API server state with the chain's namespace."""
    emulator, kubeconfig = chain_emulator
    if not emulator.schemas_loaded:
        pytest.skip(f"{CRD_DIR} is absent: the upstream CRD schemas are needed to validate")
    emulator.reset()
    view = Cluster(emulator, kubeconfig)
    view.ensure_namespace(NAMESPACE)
    return view


@pytest.fixture
def tiers(cluster: Cluster):
    """The tiers' pods, sharing the routing API's idempotency store."""
    store: dict = {}
    servers = {
        name: TierServer(
            name,
            namespace=HOSTS[name].split(".")[1],
            labels={"app": HOSTS[name].split(".")[0]},
            config=cluster.objects,
            store=store,
        )
        for name in HOSTS
    }
    yield servers
    for server in servers.values():
        server.stop()


def _front(cluster: Cluster, tiers, labels: dict[str, str]) -> MeshFront:
    ports = {"primary": 8080, "secondary": 8080, "static-cache": 80}
    return MeshFront(
        config=cluster.objects,
        upstreams={f"outbound|{ports[n]}||{HOSTS[n]}": tiers[n] for n in HOSTS},
        host="checkout-router.checkout.svc.cluster.local",
        port=8080,
        namespace=NAMESPACE,
        labels=labels,
    )


@pytest.fixture
def front(cluster: Cluster, tiers):
    """The sidecar of the pod that sends drill traffic (route.drill_client selects it)."""
    server = _front(cluster, tiers, LABELS["drill_client"])
    yield server
    server.stop()


@pytest.fixture
def production_front(cluster: Cluster, tiers):
    """The sidecar of a production caller of the same host, in the same namespace."""
    server = _front(cluster, tiers, {"app": "storefront"})
    yield server
    server.stop()


@pytest.fixture
def prometheus():
    server = FakePrometheus()
    yield server
    server.stop()
