"""The signed drill context: the ``X-Drill-Context`` header that marks (and routes) drill traffic.

Format ``v1.<drill-uuid>.<env>.<issued>.<expires>.<hmac>``: only RFC 7230 token characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drillkit.exceptions import InvalidInputError, RoutingError
from drillkit.timeutil import isoformat

CONTEXT_HEADER = "X-Drill-Context"
CONTEXT_VERSION = "v1"
KEY_ENV_VAR = "DRILLKIT_SIGNING_KEY"
SIGNING_CONN_ID = "drillkit_signing"
MIN_KEY_BYTES = 32
DEFAULT_LEEWAY_SECONDS = 60
# A context is a bearer ticket into the drill route: keep a leaked one useless within days.
MAX_TTL_SECONDS = 7 * 86400
MAX_VALUE_LENGTH = 256

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ENV_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_EPOCH_RE = re.compile(r"^(?:0|[1-9][0-9]{0,11})$")
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")

_KEY_HELP = (
    "set the password of the Airflow connection 'drillkit_signing' "
    "(airflow connections add drillkit_signing --conn-type generic --conn-password "
    '"$(openssl rand -hex 32)") or export DRILLKIT_SIGNING_KEY=$(openssl rand -hex 32)'
)


@dataclass(frozen=True)
class SignedContext:
    """A verified context. ``value`` is the header value; it holds a MAC, never the key."""

    drill_id: str
    environment: str
    issued_at: int
    expires_at: int
    value: str

    @property
    def header(self) -> tuple[str, str]:
        return CONTEXT_HEADER, self.value

    def to_manifest(self) -> dict[str, Any]:
        """The ``context`` block of the routing manifest."""
        expires = isoformat(datetime.fromtimestamp(self.expires_at, UTC))
        return {"header": CONTEXT_HEADER, "value": self.value, "expires_at": expires}


def canonical_drill_id(drill_id: Any) -> str:
    """The lowercase hyphenated form of a UUID, the only form a context carries."""
    try:
        return str(drill_id if isinstance(drill_id, uuid.UUID) else uuid.UUID(str(drill_id)))
    except ValueError as exc:
        raise InvalidInputError(
            f"drill id {drill_id!r} is not a UUID; pass the run's drill id (uuid4)"
        ) from exc


def validate_environment(environment: Any) -> str:
    if not isinstance(environment, str) or not _ENV_RE.match(environment):
        raise InvalidInputError(
            f"environment {environment!r} must be 1-32 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit (e.g. drill, staging-eu)"
        )
    return environment


def _check_key(key: Any) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        # Never echo the key, not even a short or mistyped one.
        raise InvalidInputError(
            f"signing key must be at least {MIN_KEY_BYTES} bytes; load it with "
            f"load_signing_key(): {_KEY_HELP}"
        )
    return bytes(key)


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_context(
    *,
    drill_id: str | uuid.UUID,
    environment: str,
    key: bytes,
    ttl_seconds: int,
    now: float | None = None,
) -> str:
    """Render the ``X-Drill-Context`` value for a drill, valid for ``ttl_seconds`` from ``now``."""
    key = _check_key(key)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise InvalidInputError(f"ttl_seconds {ttl_seconds!r} must be a whole number of seconds")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInputError(
            f"ttl_seconds {ttl_seconds} must be between 1 and {MAX_TTL_SECONDS} (7 days); "
            "a context only needs to outlive one drill"
        )
    issued = int(time.time() if now is None else now)
    if issued < 0:
        raise InvalidInputError(f"now {now!r} is before 1970; pass epoch seconds (time.time())")
    payload = ".".join(
        (
            CONTEXT_VERSION,
            canonical_drill_id(drill_id),
            validate_environment(environment),
            str(issued),
            str(issued + ttl_seconds),
        )
    )
    return f"{payload}.{_mac(key, payload)}"


def _invalid(reason: str) -> RoutingError:
    return RoutingError(
        f"drill context is malformed: {reason}; send the exact {CONTEXT_HEADER} value from the "
        "routing manifest",
        code="CONTEXT_INVALID",
    )


def verify_context(
    value: str,
    *,
    key: bytes,
    now: float | None = None,
    leeway: int = DEFAULT_LEEWAY_SECONDS,
) -> SignedContext:
    """Check version, shape, signature and time window; return the context or raise RoutingError.

    Codes: CONTEXT_INVALID, CONTEXT_UNSUPPORTED_VERSION, CONTEXT_BAD_SIGNATURE, CONTEXT_EXPIRED,
    CONTEXT_NOT_YET_VALID.
    """
    key = _check_key(key)
    if not isinstance(value, str) or not value:
        raise _invalid("it is empty or not a string")
    if len(value) > MAX_VALUE_LENGTH or not value.isascii():
        raise _invalid(f"it is longer than {MAX_VALUE_LENGTH} characters or not ASCII")
    fields = value.split(".")
    if fields[0] != CONTEXT_VERSION:
        if re.fullmatch(r"v[0-9]{1,3}", fields[0]):
            raise RoutingError(
                f"drill context version {fields[0]!r} is not supported (this drillkit reads "
                f"{CONTEXT_VERSION}); sign the context with the drillkit version that verifies it",
                code="CONTEXT_UNSUPPORTED_VERSION",
            )
        raise _invalid(f"it does not start with {CONTEXT_VERSION}.")
    if len(fields) != 6:
        raise _invalid(f"it has {len(fields)} dot-separated fields, expected 6")
    _, drill_id, environment, issued_text, expires_text, signature = fields
    if not _UUID_RE.match(drill_id):
        raise _invalid("the drill id is not a lowercase hyphenated UUID")
    if not _ENV_RE.match(environment):
        raise _invalid("the environment tag is not 1-32 characters of a-z, 0-9 and '-'")
    if not _EPOCH_RE.match(issued_text) or not _EPOCH_RE.match(expires_text):
        raise _invalid("issued or expiry is not a whole number of epoch seconds")
    issued, expires = int(issued_text), int(expires_text)
    if expires <= issued:
        raise _invalid("it expires before it was issued")
    if not _SIG_RE.match(signature):
        raise _invalid("the signature is not 43 base64url characters")
    payload = value[: -len(signature) - 1]
    # Compare the encoded text, not decoded bytes, so no second spelling of a signature verifies.
    if not hmac.compare_digest(_mac(key, payload).encode(), signature.encode()):
        raise RoutingError(
            "drill context signature does not match: it was altered or signed with another key; "
            f"use the value from this run's routing manifest and the same signing key "
            f"(connection {SIGNING_CONN_ID} or {KEY_ENV_VAR}) everywhere",
            code="CONTEXT_BAD_SIGNATURE",
        )
    current = time.time() if now is None else now
    if current > expires + leeway:
        raise RoutingError(
            f"drill context expired at {isoformat(datetime.fromtimestamp(expires, UTC))}; "
            "rebuild the routing manifest (re-run apply_drill_route) or raise the context TTL",
            code="CONTEXT_EXPIRED",
        )
    if issued > current + leeway:
        raise RoutingError(
            f"drill context is issued {issued - int(current)} s in the future, beyond the "
            f"{leeway} s leeway; synchronise the clocks (NTP) of the Airflow workers",
            code="CONTEXT_NOT_YET_VALID",
        )
    return SignedContext(drill_id, environment, issued, expires, value)


def issue_context(
    *,
    drill_id: str | uuid.UUID,
    environment: str,
    key: bytes,
    ttl_seconds: int,
    now: float | None = None,
) -> SignedContext:
    """Sign a context and return it verified, ready for ``build_manifest``."""
    value = sign_context(
        drill_id=drill_id, environment=environment, key=key, ttl_seconds=ttl_seconds, now=now
    )
    return verify_context(value, key=key, now=now)


def _decode_key(text: str) -> bytes:
    """Hex first, then base64 (standard or URL-safe), then the raw text as UTF-8."""
    if _HEX_RE.match(text):
        return bytes.fromhex(text)
    if len(text) >= 43 and _B64_RE.match(text):
        padded = text.replace("-", "+").replace("_", "/")
        padded += "=" * (-len(padded) % 4)
        try:
            decoded = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= MIN_KEY_BYTES:
            return decoded
    return text.encode("utf-8")


def load_signing_key(
    *,
    password: str | None = None,
    conn_extra: Mapping[str, Any] | None = None,
    env: Mapping[str, str] = os.environ,
) -> bytes:
    """The HMAC key: the ``drillkit_signing`` connection's password or extra ``key`` (passed in by
    the Airflow adapter), else ``$DRILLKIT_SIGNING_KEY``. At least 32 bytes after decoding.
    """
    if conn_extra is not None and not isinstance(conn_extra, Mapping):
        raise InvalidInputError(
            f"the extra of connection {SIGNING_CONN_ID} must be a JSON object such as "
            '{"key": "<64 hex characters>"}'
        )
    candidates = (
        (f"the password of connection {SIGNING_CONN_ID}", password),
        (f"the extra 'key' of connection {SIGNING_CONN_ID}", (conn_extra or {}).get("key")),
        (f"${KEY_ENV_VAR}", env.get(KEY_ENV_VAR)),
    )
    for source, raw in candidates:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if not isinstance(raw, str):
            raise InvalidInputError(f"signing key from {source} must be text; {_KEY_HELP}")
        key = _decode_key(raw.strip())
        if len(key) < MIN_KEY_BYTES:
            raise InvalidInputError(
                f"signing key from {source} is {len(key)} bytes after decoding; it needs at "
                f"least {MIN_KEY_BYTES}: {_KEY_HELP}"
            )
        return key
    raise InvalidInputError(f"no drill context signing key is configured: {_KEY_HELP}")
