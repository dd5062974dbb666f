"""Port-forward from a worker outside the cluster: drillkit's Unix-socket forward over the API
emulator's pods/portforward, to a real TCP server behind a Pod's (loopback) podIP."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_scenario import SOURCE_CLUSTER
from rbac_table import readme_rules

from drillkit.exceptions import InvalidInputError, SandboxError, TransientDrillError
from drillkit.k8s.client import Kube
from drillkit.k8s.portforward import forward_unix, primary_pod, socket_file

README = Path(__file__).resolve().parents[2] / "README.md"
NS = "drill-pf"
POD_IP = "127.0.0.7"  # a loopback address of its own, as a pod has its own IP
PORTFORWARD = ("", "pods/portforward", "get")


class EchoServer:
    """A TCP server on ``host`` that sends back what it receives, one thread per connection.

    With ``whole`` set it answers as PostgreSQL does, once the request is in: it reads ``whole``
    bytes, then sends them back. (Echoing a large payload while still receiving it can stall
    the kubernetes client, whose proxy thread stops reading while it blocks in a send.)
    """

    def __init__(self, host: str, *, whole: int | None = None) -> None:
        self.whole = whole
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.whole is not None:
                    received = bytearray()
                    while len(received) < self.whole and (data := conn.recv(65536)):
                        received += data
                    conn.sendall(received)
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(2)
        for thread in self._threads:
            thread.join(2)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer(POD_IP)
    yield server
    server.close()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A short 0700 directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def seed_pod(cluster, name: str, **kw) -> None:
    cluster.seed_running_pod(NS, name, **{"pod_ip": POD_IP, **kw})


def _round_trip(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(path))
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(10)
        return bytes(received)


def _forward_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("drillkit-pf") or t.name.startswith("Kubernetes port forward")
    ]


def _await_no_forward_threads(deadline: float = 10.0) -> list[threading.Thread]:
    end = time.monotonic() + deadline
    while (alive := _forward_threads()) and time.monotonic() < end:
        time.sleep(0.05)
    return alive


# -- primary_pod ----------------------------------------------------------------------------


def test_primary_pod_is_the_one_labelled_primary_by_instance_role(cluster):
    seed_pod(cluster, "db-1", labels={"cnpg.io/cluster": "db", "cnpg.io/instanceRole": "replica"})
    seed_pod(cluster, "db-2", labels={"cnpg.io/cluster": "db", "cnpg.io/instanceRole": "primary"})
    seed_pod(cluster, "other-1", labels={"cnpg.io/cluster": "other", "role": "primary"})
    assert primary_pod(Kube(cluster.api), NS, "db") == "db-2"


def test_primary_pod_falls_back_to_the_legacy_role_label(cluster):
    seed_pod(cluster, "db-1", labels={"cnpg.io/cluster": "db", "role": "primary"})
    assert primary_pod(Kube(cluster.api), NS, "db") == "db-1"


def test_no_primary_pod_names_what_was_looked_for(cluster):
    seed_pod(cluster, "db-1", labels={"cnpg.io/cluster": "db", "cnpg.io/instanceRole": "replica"})
    with pytest.raises(SandboxError) as missing:
        primary_pod(Kube(cluster.api), NS, "db")
    assert missing.value.code == "SANDBOX_UNREACHABLE"
    assert "cnpg.io/cluster=db,cnpg.io/instanceRole=primary" in str(missing.value)
    assert "cnpg.io/cluster=db,role=primary" in str(missing.value)


def test_two_labelled_primaries_are_settled_by_current_primary(cluster, require_schemas):
    labels = {"cnpg.io/cluster": "orders-db", "cnpg.io/instanceRole": "primary"}
    seed_pod(cluster, "orders-db-1", labels=labels)
    seed_pod(cluster, "orders-db-2", labels=labels)
    obj = copy.deepcopy(SOURCE_CLUSTER)
    obj["metadata"] = {"name": "orders-db", "namespace": NS}
    cluster.seed({"_plural": "clusters", **obj})
    code, body = cluster.request(
        "PATCH",
        cluster.path("postgresql.cnpg.io/v1", "clusters", "orders-db", NS) + "/status",
        {"status": {"currentPrimary": "orders-db-2", "targetPrimary": "orders-db-2"}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    assert primary_pod(Kube(cluster.api), NS, "orders-db") == "orders-db-2"


# -- forward_unix ---------------------------------------------------------------------------


def test_concurrent_connections_each_get_their_own_stream(cluster, echo, private_dir):
    seed_pod(cluster, "db-1")
    path = socket_file(private_dir, echo.port)
    with forward_unix(
        Kube(cluster.api), namespace=NS, pod="db-1", port=echo.port, socket_path=path
    ) as forward:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        results: dict[int, bytes] = {}

        def client(i: int) -> None:
            results[i] = _round_trip(path, f"connection {i} ".encode() * 1000)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {i: f"connection {i} ".encode() * 1000 for i in range(6)}
        assert forward.connections == 6
        assert forward.errors == []
    assert echo.accepted == 7  # the probe on entry, then one per connection
    assert not path.exists()


def test_a_mebibyte_round_trips_intact(cluster, private_dir):
    seed_pod(cluster, "db-1")
    payload = os.urandom(1 << 20)
    server = EchoServer(POD_IP, whole=len(payload))
    path = socket_file(private_dir, server.port)
    try:
        with forward_unix(
            Kube(cluster.api), namespace=NS, pod="db-1", port=server.port, socket_path=path
        ):
            assert _round_trip(path, payload) == payload
    finally:
        server.close()


def test_leaving_stops_every_thread_and_removes_the_socket(cluster, echo, private_dir):
    seed_pod(cluster, "db-1")
    path = socket_file(private_dir, echo.port)
    kube = Kube(cluster.api)
    with forward_unix(kube, namespace=NS, pod="db-1", port=echo.port, socket_path=path):
        idle = socket.socket(socket.AF_UNIX)  # a client still connected when the block ends
        idle.connect(str(path))
        assert _round_trip(path, b"ping") == b"ping"
        assert _forward_threads()
    assert not path.exists()
    assert _await_no_forward_threads() == []
    idle.settimeout(5)
    assert idle.recv(1) == b""  # its stream was closed too
    idle.close()


def test_without_the_rbac_row_the_forward_is_forbidden_and_names_the_rule(
    cluster, echo, private_dir
):
    seed_pod(cluster, "db-1")
    emulator = cluster.emulator
    rules, emulator.rbac = emulator.rbac, frozenset(emulator.rbac - {PORTFORWARD})
    path = socket_file(private_dir, echo.port)
    try:
        with (
            pytest.raises(SandboxError) as refused,
            forward_unix(
                Kube(cluster.api), namespace=NS, pod="db-1", port=echo.port, socket_path=path
            ),
        ):
            pytest.fail("the forward opened without RBAC for pods/portforward")
    finally:
        emulator.rbac = rules
    assert refused.value.code == "K8S_FORBIDDEN"
    assert refused.value.details["status"] == 403
    assert 'get on pods/portforward (API group "") in the drill namespaces' in str(refused.value)
    assert 'cannot get resource "pods/portforward"' in str(refused.value)
    assert emulator.denied[-1] == PORTFORWARD
    assert echo.accepted == 0 and not path.exists()


def test_the_readme_table_grants_the_forward(cluster, echo, private_dir):
    rules = readme_rules(README)
    assert PORTFORWARD in rules and ("", "pods", "list") in rules
    assert cluster.emulator.rbac == rules
    seed_pod(cluster, "db-1", labels={"cnpg.io/cluster": "db", "cnpg.io/instanceRole": "primary"})
    kube = Kube(cluster.api)
    pod = primary_pod(kube, NS, "db")
    path = socket_file(private_dir, echo.port)
    with forward_unix(kube, namespace=NS, pod=pod, port=echo.port, socket_path=path):
        assert _round_trip(path, b"SELECT 1") == b"SELECT 1"


def test_a_missing_pod_fails_on_entry(cluster, private_dir):
    cluster.ensure_namespace(NS)
    path = socket_file(private_dir, 5432)
    with (
        pytest.raises(SandboxError) as gone,
        forward_unix(Kube(cluster.api), namespace=NS, pod="db-9", port=5432, socket_path=path),
    ):
        pytest.fail("the forward opened to a missing pod")
    assert gone.value.code == "SANDBOX_UNREACHABLE"
    assert 'pods "db-9" not found' in str(gone.value)
    assert "db-9" in str(gone.value) and NS in str(gone.value)
    assert not path.exists()


def test_a_pod_not_running_is_transient(cluster, private_dir):
    seed_pod(cluster, "db-1", phase="Pending")
    path = socket_file(private_dir, 5432)
    with (
        pytest.raises(TransientDrillError) as pending,
        forward_unix(Kube(cluster.api), namespace=NS, pod="db-1", port=5432, socket_path=path),
    ):
        pytest.fail("the forward opened to a pending pod")
    assert f'pod not found ("db-1_{NS}")' in str(pending.value)
    assert pending.value.details["status"] == 500


def test_an_unreachable_api_server_is_transient(cluster, private_dir):
    from kubernetes import client

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        config = client.Configuration(host=f"http://127.0.0.1:{unused.getsockname()[1]}")
    # nothing listens there now
    path = socket_file(private_dir, 5432)
    with (
        pytest.raises(TransientDrillError) as down,
        forward_unix(
            Kube(client.ApiClient(config)), namespace=NS, pod="db-1", port=5432, socket_path=path
        ),
    ):
        pytest.fail("the forward opened without an API server")
    assert down.value.code == "K8S_UNAVAILABLE"


def test_a_refused_connect_in_the_pod_surfaces_as_an_error(cluster, private_dir, caplog):
    with socket.socket() as unused:
        unused.bind((POD_IP, 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    seed_pod(cluster, "db-1")
    path = socket_file(private_dir, port)
    caplog.set_level(logging.WARNING, logger="drillkit.k8s.portforward")
    with (
        pytest.raises(SandboxError) as failed,
        forward_unix(
            Kube(cluster.api), namespace=NS, pod="db-1", port=port, socket_path=path
        ) as forward,
    ):
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(path))
            client.sendall(b"hello")
            assert client.recv(1) == b""  # the pod's side closed the connection
        end = time.monotonic() + 10
        while not forward.errors and time.monotonic() < end:
            time.sleep(0.02)
        forward.check()
    assert failed.value.code == "PORT_FORWARD_FAILED"
    message = str(failed.value)
    assert f"error forwarding port {port} to pod" in message
    assert f"dial tcp {POD_IP}:{port}: connect: connection refused" in message
    assert any("connection refused" in r.getMessage() for r in caplog.records)
    # The exception that left the block carries the error channel's message as a note.
    assert any("connection refused" in note for note in failed.value.__notes__)


def test_the_socket_directory_must_be_private(cluster, private_dir):
    private_dir.chmod(0o755)
    with (
        pytest.raises(InvalidInputError) as shared,
        forward_unix(
            Kube(cluster.api),
            namespace=NS,
            pod="db-1",
            port=5432,
            socket_path=socket_file(private_dir, 5432),
        ),
    ):
        pytest.fail("the forward listened in a shared directory")
    assert "chmod 0700" in str(shared.value)


@pytest.fixture
def postgres() -> Iterator[int]:
    """A throwaway PostgreSQL listening on the pod's loopback IP (trust auth); its port."""
    from drillkit import pgbin

    with socket.socket() as probe:
        probe.bind((POD_IP, 0))
        port = probe.getsockname()[1]
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="pf-pg-"))
    base.chmod(0o755)  # the server runs as an unprivileged user when the tests run as root
    data, logs = base / "data", base / "log"
    for path in (data, logs):
        path.mkdir()
        pgbin.give_to_server_user(path)
    try:
        initdb = ["-D", str(data), "-U", "postgres", "-E", "UTF8", "--auth=trust"]
        pgbin.run("initdb", initdb, timeout=120)
        options = f"-c listen_addresses='{POD_IP}' -c port={port} -c unix_socket_directories=''"
        pgbin.run(
            "pg_ctl",
            ["-D", str(data), "-l", str(logs / "server.log"), "-w", "-o", options, "start"],
            timeout=60,
        )
        yield port
    finally:
        pgbin.run("pg_ctl", ["-D", str(data), "-m", "fast", "-w", "stop"], check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_libpq_reaches_a_real_postgresql_through_the_forward(cluster, postgres, private_dir):
    import psycopg

    seed_pod(cluster, "db-1", labels={"cnpg.io/cluster": "db", "cnpg.io/instanceRole": "primary"})
    kube = Kube(cluster.api)
    path = socket_file(private_dir, postgres)
    pod = primary_pod(kube, NS, "db")
    with forward_unix(kube, namespace=NS, pod=pod, port=postgres, socket_path=path) as forward:
        dsn = f"host={private_dir} port={postgres} user=postgres dbname=postgres connect_timeout=10"
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 50000) g")
            query = "SELECT sum(n), current_setting('listen_addresses') FROM t"
            total = conn.execute(query).fetchone()
        assert total == (sum(range(1, 50001)), POD_IP)
        assert forward.errors == []
    assert not path.exists()
