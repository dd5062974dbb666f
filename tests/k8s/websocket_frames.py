"""RFC 6455 WebSocket framing for the emulator's server side: handshake key, frames, messages.

Written from RFC 6455 (https://www.rfc-editor.org/rfc/rfc6455): §4.2.2 the accept key, §5.2 the
frame layout, §5.3 client-to-server masking, §5.4 fragmentation, §5.5 control frames (at most 125
bytes, never fragmented, allowed between the fragments of a message), §7.4 close status codes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = (CLOSE, PING, PONG)
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR = 1000, 1002  # RFC 6455 §7.4.1


class ProtocolError(Exception):
    """The peer broke RFC 6455; the connection is to be failed with close status 1002."""


class TooLarge(Exception):
    """A frame longer than the reader's limit."""


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    masked: bool


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)), §4.2.2 step 5.4."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def valid_key(key: str) -> bool:
    """A Sec-WebSocket-Key is base64 of 16 bytes (§4.1, client requirement 7)."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _xor(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    # §5.3: octet i of the payload is XOR'ed with octet i MOD 4 of the masking key.
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def encode(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = False) -> bytes:
    """One frame. Servers send unmasked frames, clients masked ones (§5.1)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: a 2-byte status code then a UTF-8 reason (§5.5.1)."""
    return struct.pack("!H", code) + reason.encode()


def read_frame(read: Callable[[int], bytes], *, limit: int) -> Frame:
    """One frame from ``read(n)`` (which returns exactly n bytes or raises EOFError).

    Reserved bits set without a negotiated extension, unknown opcodes, and control frames that
    are fragmented or longer than 125 bytes are protocol errors (§5.2, §5.5).
    """
    first, second = read(2)
    if first & 0x70:
        raise ProtocolError("reserved bits set with no extension negotiated")
    fin, opcode = bool(first & 0x80), first & 0x0F
    if opcode not in (CONTINUATION, TEXT, BINARY, *CONTROL):
        raise ProtocolError(f"unknown opcode {opcode:#x}")
    masked, size = bool(second & 0x80), second & 0x7F
    if size == 126:
        size = struct.unpack("!H", read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read(8))[0]
    if opcode in CONTROL and (not fin or size > 125):
        raise ProtocolError("a control frame must be unfragmented and at most 125 bytes")
    if size > limit:
        raise TooLarge(f"frame of {size} bytes is over the {limit}-byte limit")
    key = read(4) if masked else b""
    payload = read(size) if size else b""
    return Frame(fin, opcode, _xor(payload, key) if masked else payload, masked)


class MessageReader:
    """Data messages reassembled from fragments (§5.4); control frames handed to callbacks.

    ``on_ping(payload)`` is called for each ping (the caller answers with a pong, §5.5.2); a
    close frame ends reading: ``read_message`` returns None and ``close_code`` holds its status.
    Every client frame must be masked (§5.1: the server closes with 1002 otherwise).
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        on_ping: Callable[[bytes], None],
        limit: int,
    ) -> None:
        self._read, self._on_ping, self._limit = read, on_ping, limit
        self.close_code: int | None = None

    def read_message(self) -> tuple[int, bytes] | None:
        opcode, parts = None, []
        while True:
            frame = read_frame(self._read, limit=self._limit)
            if not frame.masked:
                raise ProtocolError("a client frame was not masked")
            if frame.opcode == PING:
                self._on_ping(frame.payload)
                continue
            if frame.opcode == PONG:
                continue  # an unsolicited pong needs no answer (§5.5.3)
            if frame.opcode == CLOSE:
                body = frame.payload
                self.close_code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else 1005
                return None
            if opcode is None:
                if frame.opcode == CONTINUATION:
                    raise ProtocolError("a continuation frame with no message to continue")
                opcode = frame.opcode
            elif frame.opcode != CONTINUATION:
                raise ProtocolError("a new data frame before the fragmented message ended")
            parts.append(frame.payload)
            if sum(map(len, parts)) > self._limit:
                raise TooLarge(f"message over the {self._limit}-byte limit")
            if frame.fin:
                return opcode, b"".join(parts)
