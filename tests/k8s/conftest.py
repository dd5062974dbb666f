"""The Kubernetes API emulator on loopback; the real client reaches it through KubernetesHook.

Tests assert objects as the server stores them (``cluster.stored(...)`` GETs them over HTTP).
"""

from __future__ import annotations

import copy
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from emulator import Emulator
from k8s_scenario import BACKUP_TIMES, SOURCE_CLUSTER, STORE_SECRET, backup_object
from objectstore import CREDENTIALS

from drillkit.catalog.registry import open_catalog

CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
CONN_ID = "drillkit_k8s_test"
NO_CRDS = f"{CRD_DIR} is absent: the upstream CRD schemas are needed to validate objects"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.k8s)


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="session")
def emulator(work_root: Path):
    from rbac_table import readme_rules

    server = Emulator(crd_dir=CRD_DIR if CRD_DIR.is_dir() else None).start()
    # The whole tier runs as drillkit would under the README's ClusterRole: a request outside the
    # table is 403, so the table is tested by every test that talks to the cluster.
    server.rbac = readme_rules(README)
    server.connect_airflow(work_root / "emulator-kubeconfig.json", CONN_ID)
    yield server
    server.stop()


@pytest.fixture
def unrestricted(emulator: Emulator):
    """No RBAC for this test: tests of the emulator itself use verbs drillkit is not granted."""
    rules, emulator.rbac = emulator.rbac, None
    yield emulator
    emulator.rbac = rules


@pytest.fixture
def require_schemas(emulator: Emulator) -> None:
    if not emulator.schemas_loaded:
        pytest.skip(NO_CRDS)


class ClusterView:
    """The server's side of things: raw HTTP to the emulator, and a client made by the hook."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.conn_id = CONN_ID

    @cached_property
    def api(self) -> Any:
        """An ApiClient made by the cncf-kubernetes KubernetesHook from the test connection."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=CONN_ID).api_client

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "") -> Any:
        return self.emulator.request(method, path, body, content_type=content_type)

    @staticmethod
    def path(api_version: str, plural: str, name: str | None, namespace: str | None) -> str:
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{plural}"
        return f"{base}/{name}" if name else base

    def stored(
        self, api_version: str, plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object as the server holds it, or None on 404."""
        code, body = self.request("GET", self.path(api_version, plural, name, namespace))
        if code == 404:
            return None
        assert code == 200, body
        return body

    def listed(
        self, api_version: str, plural: str, namespace: str | None = None, selector: str = ""
    ) -> list[dict[str, Any]]:
        path = self.path(api_version, plural, None, namespace)
        if selector:
            path += "?labelSelector=" + urllib.request.quote(selector)
        code, body = self.request("GET", path)
        assert code == 200, body
        return body["items"]

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = obj.pop("_plural")
        namespace = obj["metadata"].get("namespace")
        code, body = self.request(
            "POST", self.path(obj["apiVersion"], plural, None, namespace), obj
        )
        assert code == 201, body
        return body

    def patch_status(
        self, api_version: str, plural: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        """Merge ``status`` through the /status subresource, as the object's controller does."""
        code, body = self.request(
            "PATCH",
            self.path(api_version, plural, name, namespace) + "/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body

    def seed_running_pod(self, namespace: str, name: str, **pod: Any) -> None:
        """A Pod as the scheduler and kubelet leave it (``emulator_portforward.running_pod``)."""
        from emulator_portforward import running_pod

        self.ensure_namespace(namespace)
        obj, status = running_pod(namespace, name, **pod)
        self.seed({"_plural": "pods", **obj})
        self.patch_status("v1", "pods", name, namespace, status)

    def ensure_namespace(self, name: str) -> None:
        if self.stored("v1", "namespaces", name) is None:
            self.seed(
                {
                    "_plural": "namespaces",
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                }
            )


@pytest.fixture
def cluster(emulator: Emulator) -> ClusterView:
    """A fresh, empty API server state for each test."""
    emulator.reset()
    return ClusterView(emulator)


def _cluster_basics(cluster: ClusterView) -> None:
    """Namespaces orders (production), airflow (the workers), default, and the API server's own
    endpoints, as the EndpointSlice controller publishes them for Service default/kubernetes
    (the drill's NetworkPolicy names them)."""
    for name in ("orders", "airflow", "default"):
        cluster.ensure_namespace(name)
    cluster.seed(
        {
            "_plural": "endpointslices",
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.10"]}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }
    )


@pytest.fixture
def production(cluster: ClusterView) -> ClusterView:
    """A production namespace with a CloudNativePG cluster, its backup credentials and three
    completed Backups (statuses written through the /status subresource, as CNPG does)."""
    import copy

    _cluster_basics(cluster)
    cluster.seed({"_plural": "clusters", **copy.deepcopy(SOURCE_CLUSTER)})
    cluster.seed(
        {
            "_plural": "secrets",
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backup-creds", "namespace": "orders"},
            "stringData": {"ACCESS_KEY_ID": "AKIA-test", "ACCESS_SECRET_KEY": "s3cr3t"},
        }
    )
    for index, stopped in enumerate(BACKUP_TIMES):
        obj = backup_object(f"orders-db-{index}", stopped=stopped)
        status = obj.pop("status")
        cluster.seed({"_plural": "backups", **obj})
        path = cluster.path("postgresql.cnpg.io/v1", "backups", obj["metadata"]["name"], "orders")
        code, body = cluster.request(
            "PATCH",
            path + "/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body
    return cluster


@pytest.fixture
def tcp_listener():
    """A loopback listener standing in for the sandbox's PostgreSQL port (accepts, then closes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    server.close()


def _readiness(run_id: str, dag_id: str) -> dict[str, Any]:
    """The readiness sensors' XCom, by task id."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, key="return_value")
            .filter(XComModel.task_id.like("%.sandbox_ready"))
            .all()
        )
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


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
            "readiness": _readiness(dag_run.run_id, dag_id),
        }

    return run


def _iso(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def store_production(cluster, barman_clean, object_store):
    """orders-db backed up to the barman_clean store: its Cluster, credentials Secret and one
    Backup per backup.info, with the status CloudNativePG writes for it."""
    _directory, _truth, barman = barman_clean
    _cluster_basics(cluster)
    source = copy.deepcopy(SOURCE_CLUSTER)
    source["spec"]["imageName"] = "ghcr.io/cloudnative-pg/postgresql:18.1"
    source["spec"].pop("plugins")
    source["spec"]["backup"]["barmanObjectStore"].update(
        destinationPath=barman["destination"], endpointURL=barman["endpoint_url"]
    )
    cluster.seed({"_plural": "clusters", **source})
    cluster.seed(
        {
            "_plural": "secrets",
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": STORE_SECRET, "namespace": "orders"},
            "stringData": {
                "ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "ACCESS_SECRET_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            },
        }
    )
    for index, backup in enumerate(open_catalog(barman).snapshot().backups):
        name = f"orders-db-{index}"
        cluster.seed(
            {
                "_plural": "backups",
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Backup",
                "metadata": {"name": name, "namespace": "orders"},
                "spec": {"cluster": {"name": "orders-db"}, "method": "barmanObjectStore"},
            }
        )
        cluster.patch_status(
            "postgresql.cnpg.io/v1",
            "backups",
            name,
            "orders",
            {
                "phase": "completed",
                "method": "barmanObjectStore",
                "backupId": backup.backup_id,
                "startedAt": _iso(backup.start_time),
                "stoppedAt": _iso(backup.stop_time),
                "serverName": barman["server_name"],
                "destinationPath": barman["destination"],
                "endpointURL": barman["endpoint_url"],
                "s3Credentials": {
                    "accessKeyId": {"name": STORE_SECRET, "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": STORE_SECRET, "key": "ACCESS_SECRET_KEY"},
                },
            },
        )
    return cluster
