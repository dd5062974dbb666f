"""pods/portforward for the API emulator: kube-apiserver's checks, then the kubelet's WebSocket
port-forward, relaying each requested port to a TCP connection to the pod's ``status.podIP``.

The path a WebSocket client (the python client offers ``v5.channel.k8s.io,v4.channel.k8s.io``)
takes on a real cluster: kube-apiserver authorizes the GET (verb ``get`` on ``pods/portforward``,
https://kubernetes.io/blog/2024/08/20/websockets-transition/), finds the pod, and proxies the
upgrade to the node's kubelet (kubernetes/kubernetes pkg/registry/core/pod/strategy.go
``PortForwardLocation``), which hands it to the container runtime's streaming server running
pkg/kubelet/cri/streaming/portforward/websocket.go over
staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go (golang.org/x/net/websocket).
Non-101 answers from the kubelet reach the client as the kubelet wrote them (plain text), because
the apiserver's upgrade-aware proxy echoes them (apimachinery pkg/util/proxy/upgradeaware.go).

Emulated, in that order: 404 NotFound Status for a missing pod; 400 "does not have a host
assigned" without ``spec.nodeName``; 400 "Upgrade request required" for a plain GET; the
kubelet's 400 ``query parameter "ports" is required``; the kubelet's 500 ``pod not found
("<name>_<namespace>")`` when the runtime has no running sandbox (here: ``status.phase`` is not
Running); then the RFC 6455 handshake (405 for a non-GET, 400 for a bad key or version, 403 with
an empty body when no offered subprotocol is served), and the session: per port, data channel
2*i and error channel 2*i+1, each opened with the port as uint16 little-endian; bytes relayed
between the data channel and TCP (``status.podIP``, port); a failed connect written to the error
channel as kubelet + CRI-O word it; the WebSocket closed once every port is done, and every TCP
connection closed once the client closes.

Known differences: the runtime dials ``podIP:port`` from the host, where a real one dials
``localhost:port`` inside the pod's network namespace (same socket for a test's listener); SPDY
and the ``SPDY/3.1+portforward.k8s.io`` tunnel are not served (400); fragmented messages are
reassembled per RFC 6455 §5.4 where x/net/websocket hands each frame up alone (the python client
never fragments); no idle timeout (the kubelet's default is 4 h).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import websocket_frames as wsf
from emulator_errors import ApiError

# wsstream/conn.go: "channel.k8s.io" prefixes each binary message with its channel byte,
# "base64.channel.k8s.io" with the channel as an ASCII digit and a base64 body; websocket.go
# serves them as v4.* and "" (no subprotocol: binary).
PROTOCOLS = {"": True, "v4.channel.k8s.io": True, "v4.base64.channel.k8s.io": False}
MAX_PAYLOAD = 32 << 20  # golang.org/x/net/websocket DefaultMaxPayloadBytes
DIAL_TIMEOUT = 5.0


def sandbox_id(pod: dict[str, Any]) -> str:
    """A stable stand-in for the CRI pod sandbox id (the runtime names the pod by it)."""
    return hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest()


def running_pod(
    namespace: str,
    name: str,
    *,
    pod_ip: str,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    node: str | None = "node-1",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Pod as the scheduler and kubelet leave it: ``(object, status)``. POST the object, then
    PATCH ``{"status": status}`` to ``/status`` (the kubelet reports status there)."""
    spec: dict[str, Any] = {"containers": [{"name": "postgres", "image": "postgres"}]}
    if node:
        spec["nodeName"] = node
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }
    status: dict[str, Any] = {"phase": phase}
    if phase == "Running":
        status |= {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}
    return obj, status


def _plain(handler: Any, code: int, reason: str, text: str, headers: dict[str, str]) -> int:
    """A raw response, as x/net/websocket and go-restful write them, then the connection ends."""
    head = f"HTTP/1.1 {code} {reason}\r\n"
    body = text.encode()
    if body:
        headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        headers["Content-Length"] = str(len(body))
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    handler.wfile.write(head.encode() + body)
    handler.wfile.flush()
    handler.close_connection = True
    return code


def _ports(raw_query: str) -> list[int] | str:
    """websocket.go NewV4Options: every ``ports`` value, comma-separated, each 1..65535."""
    values = parse_qs(raw_query, keep_blank_values=True).get("ports")
    if not values:
        return 'query parameter "ports" is required'
    ports = []
    for value in values:
        if not value:
            return 'query parameter "ports" cannot be empty'
        for part in value.split(","):
            if not part.isdigit() or int(part) > 65535:
                return f'unable to parse "{value}" as a port: strconv.ParseUint: parsing "{part}"'
            if int(part) < 1:
                return f'port "{value}" must be > 0'
            ports.append(int(part))
    return ports


def serve_portforward(handler: Any, store: Any, res: Any, namespace: str, name: str) -> int:
    """Answer GET .../pods/{name}/portforward on ``handler``'s connection; the status written.

    RBAC is checked by the caller before this (the apiserver authorizes before the handler runs).
    """
    pod = store.get(res, namespace, name)  # 404 `pods "x" not found`
    if not (pod.get("spec") or {}).get("nodeName"):
        raise ApiError(400, "BadRequest", f"pod {name} does not have a host assigned")
    headers = handler.headers
    upgrade = (headers.get("Upgrade") or "").strip().lower()
    connection = (headers.get("Connection") or "").lower()
    if upgrade != "websocket" or "upgrade" not in [c.strip() for c in connection.split(",")]:
        if upgrade:
            raise ApiError(
                400,
                "BadRequest",
                f"the drillkit test emulator serves port-forward over WebSocket only, "
                f"not {upgrade}",
            )
        raise ApiError(400, "BadRequest", "Upgrade request required")  # upgradeaware.go
    ports = _ports(urlsplit(handler.path).query)
    if isinstance(ports, str):
        return _plain(handler, 400, "Bad Request", ports, {})  # kubelet server.go getPortForward
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        # kubelet_pods.go GetPortForward: the runtime lists only running pods (GetPods(false)).
        text = f'pod not found ("{name}_{namespace}")'
        return _plain(handler, 500, "Internal Server Error", text, {})
    # golang.org/x/net/websocket hybi.go ReadHandshake / server.go newServerConn.
    if handler.command != "GET":
        return _plain(handler, 405, "Method Not Allowed", "bad method", {})
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return _plain(
            handler,
            400,
            "Bad Request",
            "missing or bad WebSocket Version",
            {"Sec-WebSocket-Version": "13"},
        )
    key = (headers.get("Sec-WebSocket-Key") or "").strip()
    if not wsf.valid_key(key):
        return _plain(handler, 400, "Bad Request", "mismatch challenge/response", {})
    offered = [p.strip() for p in (headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    offered = [p for p in offered if p] or [""]
    # wsstream handshake(): the first protocol the client offers that the server serves.
    chosen = next((p for p in offered if p in PROTOCOLS), None)
    if chosen is None:
        return _plain(handler, 403, "Forbidden", "", {})
    reply = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": wsf.accept_key(key),
    }
    if chosen:
        reply["Sec-WebSocket-Protocol"] = chosen
    _plain(handler, 101, "Switching Protocols", "", reply)
    session = Session(handler, ports, status["podIP"], pod, binary=PROTOCOLS[chosen])
    session.run()
    return 101


@dataclass
class _Port:
    number: int
    index: int
    ready: threading.Event = field(default_factory=threading.Event)
    conn: socket.socket | None = None


class Session:
    """One upgraded connection: the channel protocol over WebSocket, relayed to TCP."""

    def __init__(
        self, handler: Any, ports: list[int], pod_ip: str, pod: dict[str, Any], *, binary: bool
    ) -> None:
        self.sock: socket.socket = handler.connection
        self.rfile = handler.rfile
        self.binary = binary
        self.pod_ip = pod_ip
        self.sandbox = sandbox_id(pod)
        self.netns = f"/var/run/netns/{uuid.UUID(self.sandbox[:32])}"
        self.ports = [_Port(number, i) for i, number in enumerate(ports)]
        self._write = threading.Lock()
        self._remaining = len(ports)
        self._closed = False

    # -- WebSocket side ----------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _send_frame(self, frame: bytes) -> None:
        with self._write:
            if self._closed:
                return
            try:
                self.sock.sendall(frame)
            except OSError:
                self._closed = True

    def send(self, channel: int, data: bytes) -> None:
        """wsstream Conn.write: channel byte + raw data, or channel digit + base64."""
        if self.binary:
            self._send_frame(wsf.encode(wsf.BINARY, bytes([channel]) + data))
        else:
            text = str(channel).encode() + base64.b64encode(data)
            self._send_frame(wsf.encode(wsf.TEXT, text))

    def _close(self, code: int) -> None:
        """Send a close frame once and end the connection (x/net/websocket hybiConn.Close)."""
        with self._write:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self.sock.sendall(wsf.encode(wsf.CLOSE, wsf.close_payload(code)))
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    # -- the session -------------------------------------------------------------------------
    def run(self) -> None:
        # websocket.go handleWebSocketStreams: each stream pair first carries the port number.
        for port in self.ports:
            prefix = port.number.to_bytes(2, "little")
            self.send(2 * port.index, prefix)
            self.send(2 * port.index + 1, prefix)
        threads = [
            threading.Thread(target=self._forward, args=(p,), daemon=True, name=f"pf-{p.number}")
            for p in self.ports
        ]
        for thread in threads:
            thread.start()
        code = wsf.CLOSE_NORMAL
        try:
            self._receive()
        except wsf.ProtocolError:
            code = wsf.CLOSE_PROTOCOL_ERROR  # x/net/websocket hybiFrameHandler (unmasked frame)
        except (wsf.TooLarge, EOFError, OSError, ValueError):
            pass  # wsstream conn.handle: a receive error ends the connection
        # conn.handle then closes the connection (hybiConn.Close sends the close frame) and
        # every channel's pipe, so every copy to the pod ends and the runtime closes its TCP
        # connection.
        self._close(code)
        for port in self.ports:
            port.ready.wait(DIAL_TIMEOUT + 1)
            if port.conn is not None:
                with contextlib.suppress(OSError):
                    port.conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(DIAL_TIMEOUT + 1)

    def _receive(self) -> None:
        reader = wsf.MessageReader(
            self._read,
            on_ping=lambda payload: self._send_frame(wsf.encode(wsf.PONG, payload)),
            limit=MAX_PAYLOAD,
        )
        while (message := reader.read_message()) is not None:
            _, data = message
            if not data:
                continue
            channel, body = data[0], data[1:]
            if not self.binary:
                channel, body = channel - ord("0"), base64.b64decode(body)
            # Channels past the last port are ignored; error channels are write-only.
            if channel >= 2 * len(self.ports) or channel % 2:
                continue
            port = self.ports[channel // 2]
            port.ready.wait(DIAL_TIMEOUT + 1)
            if port.conn is not None:
                with contextlib.suppress(OSError):
                    port.conn.sendall(body)

    def _forward(self, port: _Port) -> None:
        """The runtime's PortForward for one port: dial, copy pod -> client, report failure."""
        try:
            try:
                conn = socket.create_connection((self.pod_ip, port.number), timeout=DIAL_TIMEOUT)
            except OSError as exc:
                port.ready.set()
                self.send(2 * port.index + 1, self._dial_error(port.number, exc).encode())
                return
            conn.settimeout(None)
            port.conn = conn
            port.ready.set()
            try:
                while data := conn.recv(65536):
                    self.send(2 * port.index, data)
            except OSError:
                pass
            finally:
                conn.close()
        finally:
            with self._write:
                self._remaining -= 1
                done = self._remaining == 0
            if done:
                # websocket.go: once every port's forwarder returned, the connection is closed.
                self._close(wsf.CLOSE_NORMAL)

    def _dial_error(self, port: int, exc: OSError) -> str:
        """websocket.go portForward's message around CRI-O's (cri-o internal/oci/runtime_oci.go
        PortForwardContainer); the dial error as Go words it. The CRI streaming server passes
        the sandbox id as the pod and an empty uid."""
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = "i/o timeout"
        else:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return (
            f"error forwarding port {port} to pod {self.sandbox}, uid : port forward into "
            f'network namespace "{self.netns}": failed to connect to localhost:{port} inside '
            f"namespace {self.sandbox}: dial tcp {self.pod_ip}:{port}: connect: {reason}"
        )
