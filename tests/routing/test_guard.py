"""Unit tests of drillkit.routing.guard: host globs, CIDRs, DSNs, normalisation, XCom re-checks."""

from __future__ import annotations

import copy
import json
import socket

import pytest

from drillkit.exceptions import InvalidInputError, ProductionTargetRefusedError, RoutingError
from drillkit.routing.context import issue_context
from drillkit.routing.guard import ProductionGuard, ip_candidates
from drillkit.routing.manifest import build_manifest

pytestmark = pytest.mark.unit

SPEC = {
    "hosts": [
        "db.prod.internal",
        "*.prod.example.com",
        "orders-?.corp",
        "10.9.9.9",
        "[2001:db8::9]",
    ],
    "cidrs": ["10.20.0.0/16", "192.168.7.0/24", "fd00:1::/64"],
    "dsns": [
        "postgresql://app:hunter2@pg.prod:6432/app",
        "host=/var/run/postgresql port=5432",
        "host=shared.db port=5432 dbname=orders",
    ],
}


@pytest.fixture
def guard() -> ProductionGuard:
    return ProductionGuard.from_spec(SPEC)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard is lexical: any name lookup is a bug."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the production guard must not resolve names")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, refuse)


def tcp(host: str, port: int = 5432) -> dict:
    return {"host": host, "port": port}


@pytest.mark.parametrize(
    "host",
    [
        "db.prod.internal",
        "DB.Prod.Internal",
        "db.prod.internal.",
        "a.prod.example.com",
        "a.b.prod.example.com",
        "ORDERS-1.corp",
        "10.9.9.9",
        "::ffff:10.9.9.9",
        "[::ffff:10.9.9.9]",
        "2001:db8::9",
        "[2001:DB8:0:0::9]",
    ],
)
def test_production_host_names_and_globs_are_refused(guard: ProductionGuard, host: str) -> None:
    assert guard.violation("tcp", tcp(host), service="s") is not None


@pytest.mark.parametrize(
    "host", ["prod.example.com", "db.prod.internal.evil", "orders-12.corp", "xdb.prod.internal"]
)
def test_near_misses_of_names_and_globs_are_allowed(guard: ProductionGuard, host: str) -> None:
    assert guard.violation("tcp", tcp(host), service="s") is None


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("10.20.0.0", True),
        ("10.20.255.255", True),
        ("10.19.255.255", False),
        ("10.21.0.0", False),
        ("192.168.7.255", True),
        ("192.168.8.0", False),
        ("::ffff:10.20.3.4", True),
        ("[::ffff:a14:304]", True),
        ("fd00:1::", True),
        ("fd00:1::ffff:ffff:ffff:ffff", True),
        ("fd00:1:0:1::", False),
        ("[fd00:1::5%eth0]", True),
        ("169083651", True),  # 10.20.3.3 as one number
        ("0x0a.0x14.3.3", True),
        ("10.20.771", True),  # inet_aton: 10.20.3.3
        ("012.20.3.3", True),  # octal 10.20.3.3 to glibc
        ("10.020.3.3", True),  # decimal 10.20.3.3 elsewhere; octal 10.16.3.3
        ("127.0.0.1", False),
    ],
)
def test_cidr_boundaries_and_address_spellings(
    guard: ProductionGuard, host: str, refused: bool
) -> None:
    assert (guard.violation("tcp", tcp(host, 1), service="s") is not None) is refused


def test_ip_candidates_read_every_spelling() -> None:
    assert [str(ip) for ip in ip_candidates("012.0.0.1")] == ["10.0.0.1", "12.0.0.1"]
    assert [str(ip) for ip in ip_candidates("[::ffff:10.0.0.1]")] == ["::ffff:a00:1", "10.0.0.1"]
    assert ip_candidates("db.internal") == ()
    assert ip_candidates("deadbeef.example") == ()


@pytest.mark.parametrize(
    ("endpoint", "kind", "refused"),
    [
        ({"host": "pg.prod", "port": 6432}, "postgres", True),
        ({"host": "PG.PROD.", "port": 6432, "database": "app"}, "postgres", True),
        ({"host": "pg.prod", "port": 6432, "database": "app_drill"}, "postgres", False),
        ({"host": "pg.prod", "port": 5432}, "postgres", False),
        ({"host": "pg.prod", "port": 6432}, "tcp", True),
        ({"host": "shared.db", "port": 5432, "database": "orders"}, "postgres", True),
        ({"host": "shared.db", "port": 5432, "database": "orders_drill"}, "postgres", False),
        ({"host": "shared.db", "port": 5432}, "tcp", True),
        ({"host": "/var/run/postgresql", "port": 5432}, "postgres", True),
        ({"host": "/var/run/postgresql/", "database": "x"}, "postgres", True),
        ({"host": "/var/run/postgresql", "port": 5433}, "postgres", False),
        ({"host": "/tmp/drill/run", "port": 5432}, "postgres", False),
    ],
)
def test_production_dsns_name_host_port_and_database(
    guard: ProductionGuard, endpoint: dict, kind: str, refused: bool
) -> None:
    assert (guard.violation(kind, endpoint, service="s") is not None) is refused


def test_a_unix_socket_is_never_production_without_a_matching_dsn() -> None:
    guard = ProductionGuard.from_spec({"hosts": ["*"], "cidrs": ["0.0.0.0/0", "::/0"]})
    assert guard.violation("postgres", {"host": "/tmp/x/run"}, service="s") is None
    assert guard.violation("tcp", tcp("localhost"), service="s") is not None


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://api.prod.example.com/health", True),
        ("https://[::ffff:192.168.7.1]:8443/", True),
        ("http://pg.prod:6432/", True),
        ("http://pg.prod/", False),
        ("HTTP://user@127.0.0.1:8080", None),
        ("ftp://127.0.0.1", None),
        ("http://127.0.0.1:99999/", None),
        ("http://127.0.0.1\\@db.prod.internal/", None),
        ("http://127.0.0.1:8080/ok", False),
    ],
)
def test_http_endpoints_are_checked_by_url_host(
    guard: ProductionGuard, url: str, refused: bool | None
) -> None:
    if refused is None:
        with pytest.raises(InvalidInputError, match="url"):
            guard.violation("http", {"url": url}, service="api")
    else:
        assert (guard.violation("http", {"url": url}, service="api") is not None) is refused


def test_check_endpoint_raises_with_service_reason_and_fix(guard: ProductionGuard) -> None:
    with pytest.raises(ProductionTargetRefusedError) as info:
        guard.check_endpoint("orders-db", "postgres", {"host": "10.20.1.1", "port": 5432})
    message = str(info.value)
    assert info.value.code == "PRODUCTION_TARGET_REFUSED"
    assert "'orders-db'" in message and "10.20.0.0/16" in message
    assert "point the service at the sandbox" in message
    assert "remove it from the drill spec's production list" in message
    assert guard.check_endpoint("orders-db", "postgres", {"host": "/tmp/x"}) is None


def test_to_dict_normalises_and_redacts(guard: ProductionGuard) -> None:
    data = guard.to_dict()
    assert data["dsns"][0] == "postgresql://app:***@pg.prod:6432/app"
    assert data["hosts"][-1] == "2001:db8::9"
    assert "hunter2" not in json.dumps(data)
    assert ProductionGuard.from_spec(None).to_dict() == {"hosts": [], "cidrs": [], "dsns": []}


def test_host_bits_in_a_cidr_widen_to_the_network() -> None:
    guard = ProductionGuard.from_spec({"cidrs": ["10.20.5.1/16"]})
    assert guard.to_dict()["cidrs"] == ["10.20.0.0/16"]


@pytest.mark.parametrize(
    ("spec", "fix"),
    [
        ({"cidrs": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not an IPv4/IPv6 network; write it as"),
        ({"cidrs": ["prod-net"]}, "'prod-net' is not an IPv4/IPv6 network"),
        ({"hosts": ["db[.prod"]}, "'db[.prod' is not a host name or glob"),
        ({"hosts": ["db prod"]}, "'db prod' is not a host name or glob"),
        ({"hosts": ["db/prod"]}, "'db/prod' is not a host name or glob"),
        ({"hosts": [""]}, "must be a non-empty string"),
        ({"hosts": "db.prod"}, "must be a list of strings"),
        ({"dsns": ["postgresql://app@/db"]}, "names no host; add host="),
        ({"dsns": ["host='oops"]}, "closing quote"),
        ({"dbs": []}, "unknown key(s) dbs; use hosts, cidrs, dsns"),
        (["db.prod"], "must be a mapping"),
    ],
)
def test_bad_production_entries_are_named(spec: object, fix: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        ProductionGuard.from_spec(spec)  # type: ignore[arg-type]
    assert fix in str(info.value)


def test_bad_production_dsn_error_does_not_echo_its_password() -> None:
    with pytest.raises(InvalidInputError) as info:
        ProductionGuard.from_spec({"dsns": ["postgresql://app:hunter2@/db"]})
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


# --- manifests coming back from XCom -------------------------------------------------------


@pytest.fixture
def manifest(guard: ProductionGuard) -> dict:
    key = b"k" * 32
    drill = "3f9c2a1b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    ctx = issue_context(drill_id=drill, environment="drill", key=key, ttl_seconds=600)
    built = build_manifest(
        drill_id=drill,
        environment="drill",
        endpoints={"pg": {"kind": "postgres", "host": "/tmp/x/run", "port": 5432, "user": "u"}},
        services={
            "orders-db": {"kind": "postgres", "database": "app"},
            "api": {"kind": "http", "default": {"url": "http://127.0.0.1:8080"}},
        },
        overrides=None,
        production=guard,
        context=ctx,
    )
    return json.loads(json.dumps(built))


def test_check_manifest_accepts_a_clean_manifest(guard: ProductionGuard, manifest: dict) -> None:
    assert guard.check_manifest(manifest) is None


def test_check_manifest_refuses_tampered_endpoints_and_lists_them_all(
    guard: ProductionGuard, manifest: dict
) -> None:
    manifest["services"]["orders-db"]["dsn"] = "postgresql://u@pg.prod:6432/app"
    manifest["services"]["api"]["endpoint"]["url"] = "https://api.prod.example.com"
    with pytest.raises(ProductionTargetRefusedError) as info:
        guard.check_manifest(manifest)
    assert info.value.details["services"] == ["api", "orders-db"]
    assert "'api'" in str(info.value) and "'orders-db'" in str(info.value)
    assert "point the service at the sandbox" in str(info.value)


def test_check_manifest_ignores_a_tampered_production_block(
    guard: ProductionGuard, manifest: dict
) -> None:
    manifest["production"] = {"hosts": [], "cidrs": [], "dsns": []}
    manifest["services"]["orders-db"]["endpoint"]["host"] = "db.prod.internal"
    with pytest.raises(ProductionTargetRefusedError, match=r"db\.prod\.internal"):
        guard.check_manifest(manifest)


@pytest.mark.parametrize(
    ("mutate", "fix"),
    [
        (lambda m: m.update(schema="drillkit.sandbox/v1"), "apply_drill_route"),
        (lambda m: m.update(services=[]), "rebuild it with build_manifest()"),
        (lambda m: m["services"]["api"].update(resolved_by="magic"), "rebuild it"),
        (lambda m: m["services"]["orders-db"].pop("dsn"), "rebuild it with build_manifest()"),
        (
            lambda m: m["services"]["orders-db"].update(dsn="postgresql://u:pw@/app?host=/tmp/x"),
            "never stores secrets",
        ),
    ],
)
def test_check_manifest_refuses_malformed_manifests(
    guard: ProductionGuard, manifest: dict, mutate, fix: str
) -> None:
    broken = copy.deepcopy(manifest)
    mutate(broken)
    with pytest.raises(RoutingError, match=fix) as info:
        guard.check_manifest(broken)
    assert info.value.code == "MANIFEST_INVALID"


def test_check_manifest_refuses_a_hostless_dsn(guard: ProductionGuard, manifest: dict) -> None:
    manifest["services"]["orders-db"]["dsn"] = "postgresql://u@/app"
    with pytest.raises(ProductionTargetRefusedError, match="names no host"):
        guard.check_manifest(manifest)


def test_check_manifest_validates_endpoint_shapes(guard: ProductionGuard, manifest: dict) -> None:
    manifest["services"]["api"]["kind"] = "ftp"
    with pytest.raises(InvalidInputError, match="use one of postgres, http, tcp"):
        guard.check_manifest(manifest)
