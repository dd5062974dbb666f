"""Reach the recovery Cluster's PostgreSQL from a worker outside the cluster: the API server's
pods/portforward, served on a Unix socket that libpq connects to (host=<dir>, port=<port>).

The stream is the kubernetes client's WebSocket port-forward (kubernetes/stream/ws_client.py
``PortForward``): per port a data channel and an error channel. RBAC: a WebSocket handshake is a
GET, so the verb is ``get`` on ``pods/portforward``
(https://kubernetes.io/blog/2024/08/20/websockets-transition/).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit.exceptions import DrillError, InvalidInputError, SandboxError, TransientDrillError
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import CNPG_CLUSTER, POD

log = logging.getLogger(__name__)

# CloudNativePG pkg/utils/labels_annotations.go: ClusterLabelName, ClusterInstanceRoleLabelName
# and the deprecated ClusterRoleLabelName ("role"), which the operator still sets.
CLUSTER_LABEL = "cnpg.io/cluster"
ROLE_LABELS = ("cnpg.io/instanceRole", "role")
RBAC_RULE = 'get on pods/portforward (API group "") in the drill namespaces'
POLL = 0.2  # how often waiting threads look at the stop flag, seconds
JOIN_TIMEOUT = 5.0
UNIX_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL
CHUNK = 1 << 16


def primary_pod(kube: Kube, namespace: str, cluster: str) -> str:
    """The name of CloudNativePG Cluster ``cluster``'s primary instance pod in ``namespace``.

    The pod is found by its labels, as CloudNativePG's own ``kubectl cnpg psql`` finds it
    (internal/cmd/plugin/psql/psql.go: the pod whose instance role is ``primary``) and as the
    ``<cluster>-rw`` Service routes to it: ``cnpg.io/cluster=<cluster>`` and
    ``cnpg.io/instanceRole=primary``, else ``role=primary``, the label
    docs/src/labels_annotations.md marks deprecated in favour of ``cnpg.io/instanceRole``
    (for operators that set only that one). ``status.currentPrimary`` of
    the Cluster is the operator's record of which instance should be primary; the labels are
    moved to match it, so it is read only to break a tie when, mid-failover, two pods carry the
    primary label. Needs RBAC ``list`` on pods (and ``get`` on clusters for the tie).

    Raises SandboxError ``SANDBOX_UNREACHABLE`` when no pod is labelled primary, naming the
    selectors tried.
    """
    tried = []
    for label in ROLE_LABELS:
        selector = f"{CLUSTER_LABEL}={cluster},{label}=primary"
        tried.append(selector)
        pods = kube.list(POD, namespace=namespace, selector=selector)
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        names = sorted(p["metadata"]["name"] for p in live or pods)
        if len(names) == 1:
            return names[0]
        if names:
            found = kube.get(CNPG_CLUSTER, cluster, namespace) or {}
            current = (found.get("status") or {}).get("currentPrimary")
            if current in names:
                return str(current)
            raise SandboxError(
                f"pods {', '.join(names)} in namespace {namespace} are all labelled primary of "
                f"Cluster {cluster} and its status.currentPrimary ({current or 'unset'}) names "
                "none of them: a failover is under way; retry once it has settled",
                code="SANDBOX_UNREACHABLE",
                namespace=namespace,
                cluster=cluster,
            )
    raise SandboxError(
        f"no primary pod of CloudNativePG Cluster {cluster} in namespace {namespace}: no pod "
        f"matches {' or '.join(repr(s) for s in tried)}; check that the Cluster exists and is "
        "ready (kubectl get pods -l cnpg.io/cluster=" + cluster + f" -n {namespace})",
        code="SANDBOX_UNREACHABLE",
        namespace=namespace,
        cluster=cluster,
    )


def socket_file(directory: Path, port: int) -> Path:
    """Where libpq looks for a server at host=``directory``, port=``port``."""
    return directory / f".s.PGSQL.{port}"


@dataclass
class Forward:
    """A running forward: ``errors`` collects what the pod's side reported (kubelet's error
    channel, or a stream that could not be opened), in arrival order."""

    namespace: str
    pod: str
    port: int
    socket_path: Path
    errors: list[str] = field(default_factory=list)
    connections: int = 0

    def check(self) -> None:
        """Raise SandboxError ``PORT_FORWARD_FAILED`` naming every error reported so far."""
        if self.errors:
            raise SandboxError(
                f"port-forward to pod {self.pod} port {self.port} in namespace "
                f"{self.namespace} failed: {'; '.join(self.errors)}",
                code="PORT_FORWARD_FAILED",
                namespace=self.namespace,
                pod=self.pod,
                errors=list(self.errors),
            )


class _Streams:
    """Opens port-forward streams on a private ApiClient that shares ``kube.api``'s
    configuration: ``kubernetes.stream.portforward`` swaps the client's ``request`` method for
    the duration of the call, which is not safe on a client other threads use."""

    def __init__(self, kube: Kube, namespace: str, pod: str, port: int) -> None:
        from kubernetes import client

        self.api = client.ApiClient(configuration=kube.api.configuration)
        self.core = client.CoreV1Api(self.api)
        self.namespace, self.pod, self.port = namespace, pod, port
        self.timeout = kube.timeout
        self._lock = threading.Lock()

    def open(self) -> tuple[Any, threading.Thread | None]:
        """One stream and the client's proxy thread serving it, within ``timeout`` seconds.

        The client gives the WebSocket connect no timeout, so it runs in a helper thread; if
        that does not answer in time the stream it may still open is closed when it does.
        """
        box: dict[str, Any] = {}
        finished = threading.Event()

        def opener() -> None:
            from kubernetes.stream import portforward

            try:
                with self._lock:
                    box["pf"] = portforward(
                        self.core.connect_get_namespaced_pod_portforward,
                        self.pod,
                        self.namespace,
                        ports=str(self.port),
                    )
                box["thread"] = _proxy_thread(box["pf"])
            except Exception as exc:  # handed to the waiting thread
                box["error"] = exc
            with self._lock:
                finished.set()
                late = box.get("abandoned")
            if late and "pf" in box:
                box["pf"].close()

        helper = threading.Thread(target=opener, name="drillkit-pf-open", daemon=True)
        helper.start()
        if not finished.wait(self.timeout):
            with self._lock:
                box["abandoned"] = not finished.is_set()
            if box["abandoned"]:
                raise TransientDrillError(
                    f"the Kubernetes API server did not answer the port-forward to pod "
                    f"{self.pod} in namespace {self.namespace} within {self.timeout:.0f}s; "
                    "check the connection's API server address and that it is up",
                    code="K8S_UNAVAILABLE",
                )
        helper.join(JOIN_TIMEOUT)
        if "error" in box:
            raise _open_error(box["error"], self.namespace, self.pod, self.port)
        return box["pf"], box.get("thread")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()
            self.api.rest_client.pool_manager.clear()


def _proxy_thread(pf: Any) -> threading.Thread | None:
    """The thread ``PortForward.__init__`` started for ``pf`` (it keeps no handle on it): found
    by its target, the bound ``pf._proxy``, so that closing can join it."""
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if getattr(target, "__self__", None) is pf:
            return thread
    return None


def _open_error(exc: Exception, namespace: str, pod: str, port: int) -> DrillError:
    """A DrillError for a port-forward that could not be opened. The client wraps the
    WebSocket library's exception in ``ApiException(status=0)`` (and kubernetes 36's ApiClient
    then fails decoding its empty body, an AttributeError around it): the HTTP status the
    server answered the handshake with is on the WebSocketBadStatusException in the chain."""
    from kubernetes.client.exceptions import ApiValueError

    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if any(isinstance(e, ApiValueError) for e in chain):
        return InvalidInputError(f"cannot forward port {port}: {exc}", code="INVALID_INPUT")
    cause = next((e for e in chain if hasattr(e, "status_code")), chain[-1])
    status = getattr(cause, "status_code", None)
    raw = getattr(cause, "resp_body", None) or b""
    body = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    message = body
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        import json

        message = json.loads(body).get("message", body)
    what = f"pod {pod} in namespace {namespace}"
    details = {"status": status, "namespace": namespace, "pod": pod}
    if status in (401, 403):
        return SandboxError(
            f"the Kubernetes API refused to port-forward to {what} ({status}: "
            f"{message or 'Forbidden'}); grant the connection's service account {RBAC_RULE} "
            "(see the README's RBAC table)",
            code="K8S_FORBIDDEN",
            **details,
        )
    if status == 404:
        return SandboxError(
            f"{what} is gone (404: {message}); the recovery Cluster's primary changed or the "
            "sandbox was torn down: look the primary up again",
            code="SANDBOX_UNREACHABLE",
            **details,
        )
    if status is not None and (status >= 500 or status == 429):
        return TransientDrillError(
            f"cannot port-forward to {what} ({status}: {message}); the pod is not running yet "
            "or the API server is busy, the task will retry",
            code="K8S_UNAVAILABLE",
            **details,
        )
    if status is not None:
        return SandboxError(
            f"cannot port-forward to {what} ({status}: {message})",
            code="SANDBOX_UNREACHABLE",
            **details,
        )
    return TransientDrillError(
        f"cannot reach the Kubernetes API server to port-forward to {what} ({cause}); check "
        "the connection's kubeconfig and that the API server is up",
        code="K8S_UNAVAILABLE",
        **details,
    )


def _check_socket_path(path: Path) -> None:
    parent = path.parent
    try:
        info = parent.stat()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot listen at {path}: its directory is not usable ({exc}); create it with "
            "mode 0700 first"
        ) from exc
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise InvalidInputError(
            f"cannot listen at {path}: {parent} must be a directory of this user that no one "
            f"else can enter (mode {stat.S_IMODE(info.st_mode):04o}; chmod 0700 it), or anyone "
            "on this machine could reach the restored database"
        )
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise InvalidInputError(
            f"cannot listen at {path}: a Unix socket path is at most {UNIX_PATH_MAX} bytes; "
            "use a shorter directory"
        )
    if path.exists() or path.is_symlink():
        raise InvalidInputError(
            f"cannot listen at {path}: it already exists (another forward, or one left "
            "behind); remove it or use another directory"
        )


class _Relay:
    """The listener and every connection's pump; ``stop()`` ends and joins them all."""

    def __init__(self, streams: _Streams, forward: Forward, listener: socket.socket) -> None:
        self.streams, self.forward, self.listener = streams, forward, listener
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self._threads: list[threading.Thread] = []

    def _track(self, item: Any = None, thread: threading.Thread | None = None) -> bool:
        """Remember a socket or thread to close/join on stop; False once stopping."""
        with self._lock:
            if self.stopping.is_set():
                return False
            if item is not None:
                self._sockets.append(item)
            if thread is not None:
                self._threads.append(thread)
            return True

    def _report(self, message: str) -> None:
        log.warning(
            "port-forward to pod %s port %s in namespace %s: %s",
            self.forward.pod,
            self.forward.port,
            self.forward.namespace,
            message,
        )
        with self._lock:
            self.forward.errors.append(message)

    def start(self) -> None:
        self._spawn(self._accept, "drillkit-pf-accept")

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        if self._track(thread=thread):
            thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(POLL)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._track(conn):
                conn.close()
                return
            with self._lock:
                self.forward.connections += 1
            self._spawn(self._serve, "drillkit-pf-conn", conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            try:
                pf, proxy = self.streams.open()
            except DrillError as exc:
                self._report(exc.message)
                return
            if proxy is not None:
                self._track(thread=proxy)
            stream = pf.socket(self.forward.port)
            if not self._track(stream):
                pf.close()
                return
            try:
                self._pump(conn, stream)
            finally:
                pf.close()
            # The client's proxy thread fills in the error channel before it closes its end.
            if proxy is not None:
                proxy.join(JOIN_TIMEOUT)
            error = pf.error(self.forward.port)
            if error:
                self._report(error)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _pump(self, conn: socket.socket, stream: Any) -> None:
        """Bytes both ways until either side ends: one closing closes the other."""
        conn.settimeout(self.streams.timeout)
        stream.settimeout(self.streams.timeout)
        pairs = {conn.fileno(): (conn, stream), stream.fileno(): (stream, conn)}
        while not self.stopping.is_set():
            readable, _, _ = select.select(list(pairs), [], [], POLL)
            for fd in readable:
                source, sink = pairs[fd]
                try:
                    data = source.recv(CHUNK)
                    if not data:
                        return
                    sink.sendall(data)
                except OSError:
                    return

    def stop(self) -> None:
        with self._lock:
            self.stopping.set()
            sockets, threads = list(self._sockets), list(self._threads)
        with contextlib.suppress(OSError):
            self.listener.close()
        for item in sockets:
            with contextlib.suppress(OSError):
                item.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        # Threads a late stream started after the snapshot above.
        with self._lock:
            late = [t for t in self._threads if t not in threads]
        for thread in late:
            thread.join(JOIN_TIMEOUT)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("port-forward threads still running after %ss: %s", JOIN_TIMEOUT, alive)


@contextlib.contextmanager
def forward_unix(
    kube: Kube, *, namespace: str, pod: str, port: int, socket_path: Path
) -> Iterator[Forward]:
    """Serve ``pod``'s ``port`` on the Unix socket ``socket_path`` (mode 0600) for the block.

    ``socket_path`` must lie in a directory of this user that no one else can enter (0700);
    for libpq, name it ``socket_file(dir, port)`` and connect with host=<dir>, port=<port>.
    Each accepted connection gets its own port-forward stream. Entering opens and closes one
    stream first, so a refusal fails fast: SandboxError ``K8S_FORBIDDEN`` (naming the RBAC rule
    to grant) on 401/403, SandboxError ``SANDBOX_UNREACHABLE`` when the pod is gone (404),
    TransientDrillError ``K8S_UNAVAILABLE`` when the API server cannot be reached or the pod is
    not running (5xx). What the kubelet reports on a stream's error channel (such as a refused
    connect to the pod's port) is logged, kept in ``Forward.errors`` (``Forward.check()``
    raises it) and added as a note to an exception leaving the block. Leaving the block closes
    the listener and every stream, removes the socket file and joins every thread it started.
    """
    _check_socket_path(socket_path)
    streams = _Streams(kube, namespace, pod, port)
    try:
        probe, proxy = streams.open()
        probe.close()
        if proxy is not None:
            proxy.join(JOIN_TIMEOUT)
        forward = Forward(namespace=namespace, pod=pod, port=port, socket_path=socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(socket_path))
            os.chmod(socket_path, 0o600)
            listener.listen(16)
        except OSError as exc:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
            raise InvalidInputError(f"cannot listen at {socket_path}: {exc}") from exc
        relay = _Relay(streams, forward, listener)
        relay.start()
        try:
            yield forward
        except BaseException as exc:
            for error in list(forward.errors):
                exc.add_note(f"port-forward to pod {pod}: {error}")
            raise
        finally:
            relay.stop()
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
    finally:
        streams.close()
