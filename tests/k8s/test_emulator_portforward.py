"""The emulator's pods/portforward at the wire: RFC 6455 framing, the handshake, the channel
protocol of websocket.go, and the checks before the upgrade."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import websocket_frames as wsf

# These test the emulator itself (the harness token, no RBAC).
pytestmark = pytest.mark.usefixtures("unrestricted")
NS = "drill-wire"
POD_IP = "127.0.0.9"


# -- framing --------------------------------------------------------------------------------


def _reader(data: bytes):
    view = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise EOFError
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    return read


def test_accept_key_is_rfc_6455s_example():
    # RFC 6455 §1.3: "dGhlIHNhbXBsZSBub25jZQ==" is answered with this accept value.
    assert wsf.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wsf.valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not wsf.valid_key("not-base64!") and not wsf.valid_key("c2hvcnQ=")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_masked_frames_of_every_length_encoding_round_trip(size):
    payload = bytes(i % 251 for i in range(size))
    raw = wsf.encode(wsf.BINARY, payload, mask=True)
    assert raw[1] & 0x80  # the mask bit
    frame = wsf.read_frame(_reader(raw), limit=1 << 20)
    assert (frame.fin, frame.opcode, frame.payload, frame.masked) == (
        True,
        wsf.BINARY,
        payload,
        True,
    )
    assert wsf.read_frame(_reader(wsf.encode(wsf.TEXT, payload)), limit=1 << 20).payload == (
        payload
    )


def test_fragments_are_reassembled_and_pings_between_them_answered():
    pings: list[bytes] = []
    raw = (
        wsf.encode(wsf.BINARY, b"\x00abc", fin=False, mask=True)
        + wsf.encode(wsf.PING, b"are you there", mask=True)
        + wsf.encode(wsf.CONTINUATION, b"def", fin=False, mask=True)
        + wsf.encode(wsf.CONTINUATION, b"ghi", mask=True)
        + wsf.encode(wsf.CLOSE, wsf.close_payload(1001), mask=True)
    )
    reader = wsf.MessageReader(_reader(raw), on_ping=pings.append, limit=1 << 20)
    assert reader.read_message() == (wsf.BINARY, b"\x00abcdefghi")
    assert pings == [b"are you there"]
    assert reader.read_message() is None and reader.close_code == 1001


@pytest.mark.parametrize(
    "raw",
    [
        wsf.encode(wsf.BINARY, b"\x00x"),  # unmasked client frame (§5.1)
        wsf.encode(wsf.PING, b"x" * 126, mask=True),  # control frame over 125 bytes (§5.5)
        wsf.encode(wsf.PING, b"x", fin=False, mask=True),  # fragmented control frame
        wsf.encode(wsf.CONTINUATION, b"x", mask=True),  # nothing to continue (§5.4)
        wsf.encode(wsf.BINARY, b"a", fin=False, mask=True) + wsf.encode(wsf.TEXT, b"b", mask=True),
        bytes([0x80 | 0x40 | wsf.BINARY, 0x80]) + b"\0\0\0\0",  # RSV1 without an extension
        bytes([0x80 | 0x3, 0x80]) + b"\0\0\0\0",  # reserved opcode
    ],
)
def test_protocol_errors(raw):
    reader = wsf.MessageReader(_reader(raw), on_ping=lambda _: None, limit=1 << 20)
    with pytest.raises(wsf.ProtocolError):
        reader.read_message()


# -- the subresource on the wire ------------------------------------------------------------


class Echo:
    def __init__(self) -> None:
        self.listener = socket.create_server((POD_IP, 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
            self.closed.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


def _seed(cluster, name: str = "db-1", **kw) -> None:
    cluster.seed_running_pod(NS, name, pod_ip=POD_IP, **kw)


class Raw:
    """A hand-driven client: one HTTP request, then frames."""

    def __init__(self, emulator, query: str, headers: dict[str, str], pod: str = "db-1") -> None:
        host, port = urlsplit(emulator.url).netloc.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/portforward{query}"
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {emulator.token}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        status_line = self.file.readline().decode()
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()) != "":
            key, value = line.split(":", 1)
            self.headers[key.strip().lower()] = value.strip()
        length = int(self.headers.get("content-length", 0))
        self.body = self.file.read(length) if length else b""

    def read(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def frame(self) -> wsf.Frame:
        return wsf.read_frame(self.read, limit=1 << 24)

    def send(self, opcode: int, payload: bytes, **kw) -> None:
        self.sock.sendall(wsf.encode(opcode, payload, mask=kw.pop("mask", True), **kw))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_the_python_clients_offer_gets_v4_channel_and_the_echo(cluster, echo):
    _seed(cluster)
    offer = {**UPGRADE, "Sec-WebSocket-Protocol": "v5.channel.k8s.io,v4.channel.k8s.io"}
    raw = Raw(cluster.emulator, f"?ports={echo.port}", offer)
    try:
        assert raw.status == 101
        assert raw.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert raw.headers["sec-websocket-protocol"] == "v4.channel.k8s.io"
        prefix = struct.pack("<H", echo.port)
        assert raw.frame().payload == b"\x00" + prefix  # data channel first
        assert raw.frame().payload == b"\x01" + prefix  # then its error channel
        raw.send(wsf.BINARY, b"\x00hello")
        assert raw.frame().payload == b"\x00hello"
        raw.send(wsf.PING, b"p")
        pong = raw.frame()
        assert (pong.opcode, pong.payload, pong.masked) == (wsf.PONG, b"p", False)
        raw.send(wsf.CLOSE, wsf.close_payload(1000))
        closing = raw.frame()
        assert closing.opcode == wsf.CLOSE and closing.payload[:2] == b"\x03\xe8"
        assert echo.closed.wait(5)  # closing the WebSocket closed the pod's TCP connection
    finally:
        raw.close()


def test_no_offered_protocol_is_binary_and_an_unknown_one_is_403(cluster, echo):
    _seed(cluster)
    bare = Raw(cluster.emulator, f"?ports={echo.port}", UPGRADE)
    try:
        assert bare.status == 101 and "sec-websocket-protocol" not in bare.headers
        assert bare.frame().opcode == wsf.BINARY
    finally:
        bare.close()
    refused = Raw(
        cluster.emulator,
        f"?ports={echo.port}",
        {**UPGRADE, "Sec-WebSocket-Protocol": "v5.channel.k8s.io"},
    )
    try:
        assert (refused.status, refused.body) == (403, b"")
    finally:
        refused.close()


def test_base64_channel_protocol(cluster, echo):
    _seed(cluster)
    offer = {**UPGRADE, "Sec-WebSocket-Protocol": "v4.base64.channel.k8s.io"}
    raw = Raw(cluster.emulator, f"?ports={echo.port}", offer)
    try:
        first = raw.frame()
        assert first.opcode == wsf.TEXT
        assert first.payload == b"0" + base64.b64encode(struct.pack("<H", echo.port))
        raw.frame()
        raw.send(wsf.TEXT, b"0" + base64.b64encode(b"\xffbinary"))
        assert raw.frame().payload == b"0" + base64.b64encode(b"\xffbinary")
    finally:
        raw.close()


def test_two_ports_and_a_refused_one_reported_on_its_error_channel(cluster, echo):
    _seed(cluster)
    with socket.socket() as unused:
        unused.bind((POD_IP, 0))
        dead = unused.getsockname()[1]
    raw = Raw(cluster.emulator, f"?ports={echo.port},{dead}", UPGRADE)
    try:
        got = {}
        for _ in range(5):  # four port frames and the refusal, in any order across ports
            frame = raw.frame()
            got.setdefault(frame.payload[0], []).append(frame.payload[1:])
        assert got[0] == [struct.pack("<H", echo.port)]
        assert got[2] == [struct.pack("<H", dead)]
        assert got[1] == [struct.pack("<H", echo.port)]
        assert got[3][0] == struct.pack("<H", dead)
        message = got[3][1].decode()
        assert message.startswith(f"error forwarding port {dead} to pod ")
        assert message.endswith(f"dial tcp {POD_IP}:{dead}: connect: connection refused")
        raw.send(wsf.BINARY, b"\x00still here")
        assert raw.frame().payload == b"\x00still here"
    finally:
        raw.close()


def test_the_pod_closing_its_port_closes_the_websocket(cluster):
    _seed(cluster)
    listener = socket.create_server((POD_IP, 0))
    raw = Raw(cluster.emulator, f"?ports={listener.getsockname()[1]}", UPGRADE)
    try:
        raw.frame(), raw.frame()
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()
        assert raw.frame().opcode == wsf.CLOSE
    finally:
        raw.close()
        listener.close()


def test_an_unmasked_client_frame_is_closed_with_1002(cluster, echo):
    _seed(cluster)
    raw = Raw(cluster.emulator, f"?ports={echo.port}", UPGRADE)
    try:
        raw.frame(), raw.frame()
        raw.send(wsf.BINARY, b"\x00x", mask=False)
        closing = raw.frame()
        assert closing.opcode == wsf.CLOSE
        assert struct.unpack("!H", closing.payload[:2])[0] == wsf.CLOSE_PROTOCOL_ERROR
    finally:
        raw.close()


def test_checks_before_the_upgrade(cluster, echo):
    _seed(cluster)
    _seed(cluster, "unscheduled", node=None, phase="Pending")
    _seed(cluster, "pending", phase="Pending")
    emulator = cluster.emulator

    def answer(query: str, headers: dict[str, str], pod: str = "db-1") -> tuple[int, bytes]:
        raw = Raw(emulator, query, headers, pod)
        raw.close()
        return raw.status, raw.body

    code, body = answer(f"?ports={echo.port}", UPGRADE, "ghost")
    assert (code, json.loads(body)["message"]) == (404, 'pods "ghost" not found')
    code, body = answer(f"?ports={echo.port}", UPGRADE, "unscheduled")
    assert (code, json.loads(body)["message"]) == (
        400,
        "pod unscheduled does not have a host assigned",
    )
    code, body = answer(f"?ports={echo.port}", {})
    assert (code, json.loads(body)["message"]) == (400, "Upgrade request required")
    assert answer("", UPGRADE) == (400, b'query parameter "ports" is required')
    assert answer("?ports=", UPGRADE) == (400, b'query parameter "ports" cannot be empty')
    assert answer(f"?ports={echo.port}", UPGRADE, "pending") == (
        500,
        f'pod not found ("pending_{NS}")'.encode(),
    )
    code, _ = answer(f"?ports={echo.port}", {**UPGRADE, "Sec-WebSocket-Version": "8"})
    assert code == 400
    code, _ = answer(f"?ports={echo.port}", {**UPGRADE, "Sec-WebSocket-Key": "short"})
    assert code == 400
