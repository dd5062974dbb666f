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
from chainkit import CONN_ID, CRD_DIR, HOSTS, NAMESPACE, Cluster
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
def tiers():
    servers = {name: TierServer(name) for name in HOSTS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def front(cluster: Cluster, tiers):
    server = MeshFront(
        route=cluster.vs_spec, upstreams={HOSTS[name]: tiers[name] for name in HOSTS}
    )
    yield server
    server.stop()


@pytest.fixture
def prometheus():
    server = FakePrometheus()
    yield server
    server.stop()
