"""The CloudNativePG stand-in (cnpg_operator.py) against drillkit's real kubernetes sandbox: the
production's Backups are the barman_clean store's (real barman-cloud backups on the loopback S3
server), the drill's recovery Cluster is restored for real and served over TLS on -rw."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from cnpg_operator import CnpgOperator
from k8s_scenario import DRILL_ID, sandbox_backend
from k8s_scenario import STORE_SECRET as SECRET

from drillkit.k8s.catalog import select_cnpg
from drillkit.k8s.client import Kube
from drillkit.k8s.sandbox import cluster_readiness
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration
CATALOG = {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"}


def _provision(cluster, target: str, sandbox_id: str, **origin):
    """drillkit's own selection and sandbox: the coordinate of the newest Backup before
    ``target``, its origin changed by ``origin`` (a Backup whose status says so)."""
    kube = Kube(cluster.api)
    coordinate = select_cnpg(
        kube,
        CATALOG,
        target=parse_iso(target),
        policy="latest",
        rpo=timedelta(0),
        exclude=[],
        pinned=None,
    )
    coordinate["backup"]["origin"].update(origin)
    record = sandbox_backend(cluster).provision(
        coordinate, drill_id=DRILL_ID, name="orders", ttl=timedelta(hours=1), sandbox_id=sandbox_id
    )
    return kube, coordinate, record


def _await(kube, record, operator, timeout: float = 420.0) -> dict:
    """Poll drillkit's readiness until the Cluster is ready or its recovery Job failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = cluster_readiness(kube, record)
        if state["ready"] or state.get("failed"):
            return state
        outcome = operator.outcomes.get(record["namespace"], "")
        assert not outcome.startswith("error"), operator.logs[record["namespace"]]
        time.sleep(0.5)
    instance = operator.instances.get(record["namespace"])
    raise AssertionError(
        f"neither ready nor failed after {timeout} s: {state['detail']}; log: "
        f"{operator.logs.get(record['namespace'])}; server: {instance and instance.log_tail()}"
    )


def _secret(cluster, namespace: str, name: str) -> dict[str, str]:
    stored = cluster.stored("v1", "secrets", name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in stored["data"].items()}


def _connect(cluster, namespace: str, ca_file: Path, secret: str, database: str):
    login = _secret(cluster, namespace, secret)
    service = cluster.stored("v1", "services", "sandbox-rw", namespace)
    return psycopg.connect(
        host=f"sandbox-rw.{namespace}.svc",
        hostaddr=service["spec"]["clusterIP"],
        port=service["spec"]["ports"][0]["port"],
        user=login["username"],
        password=login["password"],
        dbname=database,
        sslmode="verify-full",
        sslrootcert=str(ca_file),
        connect_timeout=10,
    )


def _tls_handshake(cluster, namespace: str, ca_file: Path) -> tuple[str, set[str]]:
    """PostgreSQL's SSLRequest, then TLS verified against the Cluster's CA for the -rw name:
    the negotiated version and the certificate's DNS names."""
    service = cluster.stored("v1", "services", "sandbox-rw", namespace)["spec"]
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((service["clusterIP"], 5432), timeout=10) as sock:
        sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
        assert sock.recv(1) == b"S"
        with context.wrap_socket(sock, server_hostname=f"sandbox-rw.{namespace}.svc") as tls:
            names = {value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"}
            return str(tls.version()), names


@pytest.mark.parametrize("ending", ["teardown", "exit"])
def test_the_recovery_cluster_is_restored_and_served_over_tls(
    store_production, barman_clean, work_root, tmp_path, ending
):
    cluster = store_production
    _directory, truth, _barman = barman_clean
    target = truth["targets"][-1]
    with CnpgOperator(cluster, root=work_root) as operator:
        kube, coordinate, record = _provision(cluster, target["target"], f"ok-{ending}")
        ns = record["namespace"]
        state = _await(kube, record, operator, timeout=150)
        assert state["ready"], (state, operator.logs.get(ns))
        assert state["restore_seconds_source"] == "cluster_conditions"
        status = cluster.stored("postgresql.cnpg.io/v1", "clusters", "sandbox", ns)["status"]
        assert status["phase"] == "Cluster in healthy state"
        assert status["currentPrimary"] == status["targetPrimary"] == "sandbox-1"
        job = cluster.stored("batch/v1", "jobs", "sandbox-1-full-recovery", ns)
        assert job["metadata"]["labels"]["cnpg.io/jobRole"] == "full-recovery"
        assert {c["type"] for c in job["status"]["conditions"]} == {
            "SuccessCriteriaMet",
            "Complete",
        }
        pod = cluster.stored("v1", "pods", "sandbox-1", ns)
        assert pod["status"]["podIP"] == operator.addresses[ns]
        assert pod["metadata"]["labels"]["cnpg.io/instanceRole"] == "primary"
        barman_id = coordinate["backup"]["barman_id"]
        assert f"Target backup found: {barman_id}" in operator.logs[ns]

        ca_file = tmp_path / "ca.crt"
        ca_file.write_text(_secret(cluster, ns, "sandbox-ca")["ca.crt"])
        owner = record["endpoints"]["postgres"]["user"]
        database = record["endpoints"]["postgres"]["database"]
        with _connect(cluster, ns, ca_file, "sandbox-drill-owner", database) as conn:
            assert conn.execute("select current_user = %s", (owner,)).fetchone() == (True,)
            assert conn.pgconn.ssl_in_use
            # The backup has no such role: CloudNativePG creates it (LOGIN) and grants nothing,
            # so the owner named by the drill cannot read production's postgres-owned tables.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select count(*) from orders")
        version, names = _tls_handshake(cluster, ns, ca_file)
        assert version == "TLSv1.3"  # CloudNativePG's ssl_min_protocol_version
        assert {f"sandbox-{kind}.{ns}.svc.cluster.local" for kind in ("rw", "r", "ro")} <= names
        with _connect(cluster, ns, ca_file, "sandbox-drill-superuser", database) as conn:
            max_id, absent, replayed = conn.execute(
                "select max(id), count(*) filter (where id = %s), "
                "pg_last_xact_replay_timestamp() from orders",
                (target["absent_id"],),
            ).fetchone()
        assert (max_id, absent, replayed) == (target["max_id"], 0, None)

        pids = operator.processes()
        assert pids, "PostgreSQL is not running"
        if ending == "teardown":
            sandbox_backend(cluster).teardown(record["id"])
            deadline = time.monotonic() + 60

            def torn_down() -> bool:  # the stand-in stops the server, then removes its data
                return not operator.processes() and not (operator.root / ns).exists()

            while not torn_down() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert operator.processes() == []
            assert ns not in operator.instances
            assert not (operator.root / ns).exists()
    assert operator.processes() == []


def _auth_enforced(store, on: bool) -> None:
    """moto's server checks credentials only when told to (POST /moto-api/reset-auth with the
    number of unauthenticated requests still allowed: moto/moto_api/_internal/responses.py)."""
    requests.post(
        f"{store.url}/moto-api/reset-auth", data=b"0" if on else b"inf", timeout=10
    ).raise_for_status()


@pytest.mark.parametrize(
    ("case", "origin"),
    [
        ("server-name", {"server_name": "billing-db"}),
        ("destination", {"destination_path": "s3://drills/elsewhere"}),
        ("wrong-key", {}),
        ("missing-key", {}),
    ],
)
def test_a_recovery_cluster_that_cannot_find_its_backup_fails_its_job(
    store_production, barman_clean, object_store, work_root, case, origin
):
    cluster = store_production
    _directory, truth, _barman = barman_clean
    target = truth["targets"][-1]
    secret_path = cluster.path("v1", "secrets", SECRET, "orders")
    if case == "wrong-key":
        patch = {"data": {"ACCESS_SECRET_KEY": base64.b64encode(b"not-the-key").decode()}}
    elif case == "missing-key":
        patch = {"data": {"ACCESS_SECRET_KEY": None}}
    if case in ("wrong-key", "missing-key"):
        code, body = cluster.request(
            "PATCH", secret_path, patch, content_type="application/merge-patch+json"
        )
        assert code == 200, body
    if case == "wrong-key":
        _auth_enforced(object_store, True)
    try:
        with CnpgOperator(cluster, root=work_root) as operator:
            kube, coordinate, record = _provision(cluster, target["target"], f"ko-{case}", **origin)
            ns = record["namespace"]
            state = _await(kube, record, operator, timeout=180)
            # drillkit reads the cause from the Job pod's log: a backup the store does not hold
            # is the backup's finding; a store it cannot read is COULD NOT VERIFY.
            expected_code = {
                "server-name": "BACKUP_NOT_IN_STORE",
                "destination": "BACKUP_NOT_IN_STORE",
                "wrong-key": "RECOVERY_SOURCE_UNREACHABLE",
                "missing-key": "RECOVERY_SOURCE_UNREACHABLE",
            }[case]
            assert state["failed"]["code"] == expected_code, state
            assert "sandbox-1-full-recovery" in state["detail"]
            job = cluster.stored("batch/v1", "jobs", "sandbox-1-full-recovery", ns)
            failed = {c["type"]: c for c in job["status"]["conditions"]}
            assert failed["Failed"]["reason"] == "BackoffLimitExceeded"
            status = cluster.stored("postgresql.cnpg.io/v1", "clusters", "sandbox", ns)["status"]
            assert status["phase"] == "Setting up primary"
            assert status["readyInstances"] == 0
            assert cluster.stored("v1", "pods", "sandbox-1", ns) is None
            log = "\n".join(operator.logs[ns])
            expected = {
                "server-name": f"no backup found with ID {coordinate['backup']['barman_id']}",
                "destination": f"no backup found with ID {coordinate['backup']['barman_id']}",
                "wrong-key": "InvalidAccessKeyId",
                "missing-key": f"missing key ACCESS_SECRET_KEY, inside secret {SECRET}",
            }[case]
            assert expected in log, log
            assert operator.processes() == []
    finally:
        if case == "wrong-key":
            _auth_enforced(object_store, False)


def test_the_barman_cloud_plugin_form_reads_the_objectstore_in_the_drill_namespace(
    store_production, barman_clean, work_root
):
    """A Backup taken by the barman-cloud plugin: the recovery Cluster names an ObjectStore
    (copied into the drill namespace by drillkit), whose configuration the restore reads."""
    cluster = store_production
    _directory, truth, barman = barman_clean
    target = truth["targets"][0]
    cluster.seed(
        {
            "_plural": "objectstores",
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": {"name": "orders-store", "namespace": "orders"},
            "spec": {
                "configuration": {
                    "destinationPath": barman["destination"],
                    "endpointURL": barman["endpoint_url"],
                    "s3Credentials": {
                        "accessKeyId": {"name": SECRET, "key": "ACCESS_KEY_ID"},
                        "secretAccessKey": {"name": SECRET, "key": "ACCESS_SECRET_KEY"},
                    },
                }
            },
        }
    )
    plugin = {
        "name": "barman-cloud.cloudnative-pg.io",
        "parameters": {"barmanObjectName": "orders-store"},
    }
    with CnpgOperator(cluster, root=work_root) as operator:
        kube, coordinate, record = _provision(
            cluster, target["target"], "plugin", method="plugin", plugin=plugin
        )
        ns = record["namespace"]
        spec = cluster.stored("postgresql.cnpg.io/v1", "clusters", "sandbox", ns)["spec"]
        assert spec["externalClusters"][0]["plugin"]["parameters"] == {
            "barmanObjectName": "orders-store",
            "serverName": "orders-db",
        }
        state = _await(kube, record, operator, timeout=150)
        assert state["ready"], (state, operator.logs.get(ns))
        assert f"Target backup found: {coordinate['backup']['barman_id']}" in operator.logs[ns]
        sandbox_backend(cluster).teardown(record["id"])
    assert operator.processes() == []
