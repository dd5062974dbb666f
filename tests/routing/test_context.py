"""Unit tests of drillkit.routing.context: header format, verification, key loading and secrecy."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from drillkit.exceptions import DrillError, InvalidInputError, RoutingError
from drillkit.routing.context import (
    CONTEXT_HEADER,
    MAX_TTL_SECONDS,
    SignedContext,
    issue_context,
    load_signing_key,
    sign_context,
    verify_context,
)

pytestmark = pytest.mark.unit

KEY_HEX = "5f" * 16 + "a3" * 16
KEY = bytes.fromhex(KEY_HEX)
DRILL = "3f9c2a1b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
NOW = 1_800_000_000
# The HTTPRoute CRD's pattern for header names; values use the same RFC 7230 token set here.
GATEWAY_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def signed(**changes: object) -> str:
    args: dict = {"drill_id": DRILL, "environment": "drill", "key": KEY, "ttl_seconds": 3600}
    args.update(changes)
    return sign_context(now=NOW, **args)


def test_header_format_is_exact() -> None:
    value = signed()
    match = re.fullmatch(
        r"v1\.([0-9a-f-]{36})\.([a-z0-9-]+)\.(\d+)\.(\d+)\.([A-Za-z0-9_-]{43})", value
    )
    assert match is not None
    assert match.groups()[:4] == (DRILL, "drill", str(NOW), str(NOW + 3600))


def test_header_value_is_safe_for_istio_and_gateway_api_exact_matches() -> None:
    value = signed(environment="staging-eu-1")
    assert GATEWAY_TOKEN_RE.match(value)
    assert not set(value) & set(" ,;\"'\\=/+")
    assert 1 <= len(value) <= 4096
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", CONTEXT_HEADER)


def test_sign_canonicalises_the_drill_id() -> None:
    assert signed(drill_id=DRILL.upper()) == signed(drill_id=uuid.UUID(DRILL)) == signed()


def test_round_trip_and_manifest_block() -> None:
    ctx = verify_context(signed(), key=KEY, now=NOW + 10)
    assert ctx == SignedContext(DRILL, "drill", NOW, NOW + 3600, signed())
    assert ctx.header == (CONTEXT_HEADER, signed())
    assert ctx.to_manifest() == {
        "header": "X-Drill-Context",
        "value": signed(),
        "expires_at": "2027-01-15T09:00:00Z",
    }


def test_issue_context_is_sign_then_verify() -> None:
    ctx = issue_context(drill_id=DRILL, environment="drill", key=KEY, ttl_seconds=60, now=NOW)
    assert (ctx.value, ctx.expires_at) == (signed(ttl_seconds=60), NOW + 60)


def _replace_field(value: str, index: int, new: str) -> str:
    fields = value.split(".")
    fields[index] = new
    return ".".join(fields)


@pytest.mark.parametrize(
    ("index", "new"),
    [
        (1, "00000000-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
        (2, "prod"),
        (3, str(NOW - 1)),
        (4, str(NOW + 999_999)),
    ],
)
def test_tampered_fields_fail_the_signature(index: int, new: str) -> None:
    with pytest.raises(RoutingError, match="same signing key") as info:
        verify_context(_replace_field(signed(), index, new), key=KEY, now=NOW)
    assert info.value.code == "CONTEXT_BAD_SIGNATURE"


def test_flipped_signature_character_fails() -> None:
    value = signed()
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    with pytest.raises(RoutingError) as info:
        verify_context(flipped, key=KEY, now=NOW)
    assert info.value.code == "CONTEXT_BAD_SIGNATURE"


def test_other_key_fails_and_never_leaks_either_key() -> None:
    other = b"x" * 40
    with pytest.raises(RoutingError) as info:
        verify_context(signed(), key=other, now=NOW)
    assert info.value.code == "CONTEXT_BAD_SIGNATURE"
    text = str(info.value) + repr(info.value) + repr(info.value.to_dict())
    assert KEY_HEX not in text and "xxxxxxxx" not in text


def test_expiry_honours_leeway_at_the_boundary() -> None:
    expires = NOW + 3600
    assert verify_context(signed(), key=KEY, now=expires + 60, leeway=60).expires_at == expires
    with pytest.raises(RoutingError, match="rebuild the routing manifest") as info:
        verify_context(signed(), key=KEY, now=expires + 61, leeway=60)
    assert info.value.code == "CONTEXT_EXPIRED"


def test_future_issue_honours_leeway_at_the_boundary() -> None:
    assert verify_context(signed(), key=KEY, now=NOW - 30, leeway=30).issued_at == NOW
    with pytest.raises(RoutingError, match="synchronise the clocks") as info:
        verify_context(signed(), key=KEY, now=NOW - 31, leeway=30)
    assert info.value.code == "CONTEXT_NOT_YET_VALID"


def test_unsupported_version_has_its_own_code() -> None:
    with pytest.raises(RoutingError, match="drillkit version") as info:
        verify_context("v2." + signed()[3:], key=KEY, now=NOW)
    assert info.value.code == "CONTEXT_UNSUPPORTED_VERSION"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "x1.a.b.c.d.e",
        "v1." + DRILL,
        signed() + ".extra",
        _replace_field(signed(), 1, DRILL.upper()),
        _replace_field(signed(), 1, "not-a-uuid"),
        _replace_field(signed(), 2, "Prod"),
        _replace_field(signed(), 2, "-drill"),
        _replace_field(signed(), 3, "0" + str(NOW)),
        _replace_field(signed(), 3, "-5"),
        _replace_field(signed(), 4, str(NOW)),
        _replace_field(signed(), 5, "short"),
        _replace_field(signed(), 5, "+" * 43),
        signed() + "é",
        "v1." + "a" * 300,
    ],
)
def test_malformed_values_are_context_invalid(value: str) -> None:
    with pytest.raises(RoutingError, match="exact X-Drill-Context value") as info:
        verify_context(value, key=KEY, now=NOW)
    assert info.value.code == "CONTEXT_INVALID"


def test_each_failure_has_a_distinct_code() -> None:
    cases = [
        "garbage",
        "v9." + signed()[3:],
        _replace_field(signed(), 2, "other"),
    ]
    codes = set()
    for value in cases:
        with pytest.raises(DrillError) as info:
            verify_context(value, key=KEY, now=NOW)
        codes.add(info.value.code)
    for now in (NOW + 10**6, NOW - 10**6):
        with pytest.raises(DrillError) as info:
            verify_context(signed(), key=KEY, now=now)
        codes.add(info.value.code)
    assert codes == {
        "CONTEXT_INVALID",
        "CONTEXT_UNSUPPORTED_VERSION",
        "CONTEXT_BAD_SIGNATURE",
        "CONTEXT_EXPIRED",
        "CONTEXT_NOT_YET_VALID",
    }


@pytest.mark.parametrize(
    ("changes", "fix"),
    [
        ({"drill_id": "nope"}, "uuid4"),
        ({"environment": "Prod"}, "e.g. drill"),
        ({"environment": "a" * 33}, "e.g. drill"),
        ({"environment": "drill.x"}, "e.g. drill"),
        ({"ttl_seconds": 0}, "outlive one drill"),
        ({"ttl_seconds": MAX_TTL_SECONDS + 1}, "outlive one drill"),
        ({"ttl_seconds": True}, "whole number"),
        ({"ttl_seconds": 1.5}, "whole number"),
        ({"key": b"short-key"}, "openssl rand -hex 32"),
        ({"key": KEY_HEX}, "load_signing_key"),
    ],
)
def test_sign_validates_inputs(changes: dict, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(fix)) as info:
        signed(**changes)
    assert "short-key" not in str(info.value) and KEY_HEX not in str(info.value)


def test_short_key_is_refused_by_verify_too() -> None:
    with pytest.raises(InvalidInputError, match="at least 32 bytes"):
        verify_context(signed(), key=b"k" * 31, now=NOW)


# --- key loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KEY_HEX, KEY),
        (KEY_HEX.upper() + "\n", KEY),
        (base64.b64encode(KEY).decode(), KEY),
        (base64.urlsafe_b64encode(b"\xfb" * 33).decode().rstrip("="), b"\xfb" * 33),
        ("correct horse battery staple 1234", b"correct horse battery staple 1234"),
    ],
)
def test_key_formats(text: str, expected: bytes) -> None:
    assert load_signing_key(env={"DRILLKIT_SIGNING_KEY": text}) == expected


def test_key_precedence_password_then_extra_then_env() -> None:
    env = {"DRILLKIT_SIGNING_KEY": "e" * 64}
    extra = {"key": "d" * 64}
    assert load_signing_key(password="c" * 64, conn_extra=extra, env=env) == b"\xcc" * 32
    assert load_signing_key(password="", conn_extra=extra, env=env) == b"\xdd" * 32
    assert load_signing_key(conn_extra={}, env=env) == b"\xee" * 32


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"env": {}}, "no drill context signing key"),
        ({"env": {"DRILLKIT_SIGNING_KEY": "   "}}, "no drill context signing key"),
        ({"env": {"DRILLKIT_SIGNING_KEY": "tooshort-secret"}}, "15 bytes"),
        ({"env": {"DRILLKIT_SIGNING_KEY": "ab" * 20}}, "20 bytes"),
        ({"password": "tooshort-secret", "env": {}}, "password of connection drillkit_signing"),
        ({"conn_extra": {"key": "tooshort-secret"}, "env": {}}, "extra 'key'"),
        ({"conn_extra": {"key": 12345}, "env": {}}, "must be text"),
        ({"conn_extra": '{"key": "tooshort-secret"}', "env": {}}, "JSON object"),
    ],
)
def test_missing_or_short_keys_say_how_to_set_one(kwargs: dict, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(fix)) as info:
        load_signing_key(**kwargs)
    message = str(info.value)
    if "JSON object" not in fix:
        assert "airflow connections add drillkit_signing --conn-type generic" in message
        assert "export DRILLKIT_SIGNING_KEY=$(openssl rand -hex 32)" in message
    assert "tooshort-secret" not in message and "abab" not in message


def test_the_key_never_appears_in_outputs() -> None:
    key = load_signing_key(env={"DRILLKIT_SIGNING_KEY": KEY_HEX})
    ctx = issue_context(drill_id=DRILL, environment="drill", key=key, ttl_seconds=60, now=NOW)
    rendered = " ".join([ctx.value, repr(ctx), str(ctx), repr(ctx.to_manifest())])
    for form in (KEY_HEX, KEY_HEX.upper(), base64.b64encode(key).decode().rstrip("=")):
        assert form not in rendered
    assert repr(key)[2:-1] not in rendered
