"""Unit tests of drillkit.routing.manifest: precedence, validation, refusals, XCom contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from drillkit.exceptions import InvalidInputError, ProductionTargetRefusedError, RoutingError
from drillkit.routing import MANIFEST_SCHEMA, ProductionGuard, build_manifest, resolve_target
from drillkit.routing.context import issue_context, load_signing_key

pytestmark = pytest.mark.unit

KEY_TEXT = "9c" * 32
DRILL = "3f9c2a1b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
NOW = 1_800_000_000
SANDBOX = {
    "postgres": {
        "kind": "postgres",
        "host": "/tmp/drillkit-sandboxes/orders-3f9c2a1b/run",
        "port": 5432,
        "user": "postgres",
        "database": "postgres",
    }
}
SERVICES = {
    "orders-db": {"kind": "postgres", "database": "app"},
    "orders-api": {"kind": "http", "default": {"url": "http://10.0.0.8:8080"}},
    "cache": {"kind": "tcp", "default": {"host": "127.0.0.1", "port": 6379}},
}
PRODUCTION = {
    "hosts": ["db.prod.internal", "*.prod.example.com"],
    "cidrs": ["10.20.0.0/16"],
    "dsns": ["postgresql://app:prod-pass-123@db.prod.internal/app"],
}


def build(**changes: Any) -> dict[str, Any]:
    key = load_signing_key(env={"DRILLKIT_SIGNING_KEY": KEY_TEXT})
    context = issue_context(drill_id=DRILL, environment="drill", key=key, ttl_seconds=3600, now=NOW)
    args: dict[str, Any] = {
        "drill_id": DRILL,
        "environment": "drill",
        "endpoints": SANDBOX,
        "services": SERVICES,
        "overrides": {"orders-api": {"url": "http://127.0.0.1:8080"}},
        "production": ProductionGuard.from_spec(PRODUCTION),
        "context": context,
    }
    args.update(changes)
    return build_manifest(**args)


def test_manifest_matches_the_contract_exactly() -> None:
    manifest = build()
    socket_dir = SANDBOX["postgres"]["host"]
    assert manifest == {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": DRILL,
        "environment": "drill",
        "context": {
            "header": "X-Drill-Context",
            "value": manifest["context"]["value"],
            "expires_at": "2027-01-15T09:00:00Z",
        },
        "services": {
            "orders-db": {
                "kind": "postgres",
                "resolved_by": "provisioned",
                "endpoint": {
                    "host": socket_dir,
                    "port": 5432,
                    "user": "postgres",
                    "database": "app",
                },
                "dsn": f"postgresql://postgres@/app?host={socket_dir}&port=5432",
            },
            "orders-api": {
                "kind": "http",
                "resolved_by": "override",
                "endpoint": {"url": "http://127.0.0.1:8080"},
            },
            "cache": {
                "kind": "tcp",
                "resolved_by": "spec_default",
                "endpoint": {"host": "127.0.0.1", "port": 6379},
            },
        },
        "production": {
            "hosts": ["db.prod.internal", "*.prod.example.com"],
            "cidrs": ["10.20.0.0/16"],
            "dsns": ["postgresql://app:***@db.prod.internal/app"],
        },
    }
    assert manifest["context"]["value"].startswith(f"v1.{DRILL}.drill.{NOW}.{NOW + 3600}.")
    assert list(manifest["services"]) == list(SERVICES)


def test_xcom_round_trip_keeps_the_manifest_and_leaks_no_secret() -> None:
    manifest = build()
    text = json.dumps(manifest)
    restored = json.loads(text)
    assert restored == manifest
    assert resolve_target(restored, "orders-db") == manifest["services"]["orders-db"]
    ProductionGuard.from_spec(PRODUCTION).check_manifest(restored)
    key = bytes.fromhex(KEY_TEXT)
    for secret in ("prod-pass-123", KEY_TEXT, KEY_TEXT.upper(), key.decode("latin-1"), "password"):
        assert secret not in text


@pytest.mark.parametrize(
    ("endpoints", "overrides", "expected_by", "expected_host"),
    [
        (SANDBOX, {"orders-db": {"host": "/tmp/other", "user": "u"}}, "override", "/tmp/other"),
        (SANDBOX, None, "provisioned", SANDBOX["postgres"]["host"]),
        ({}, None, "spec_default", "127.0.0.2"),
        (None, None, "spec_default", "127.0.0.2"),
    ],
)
def test_precedence_override_then_provisioned_then_default(
    endpoints: Any, overrides: Any, expected_by: str, expected_host: str
) -> None:
    services = {
        "orders-db": {
            "kind": "postgres",
            "database": "app",
            "default": {"host": "127.0.0.2", "user": "app"},
        }
    }
    manifest = build(endpoints=endpoints, services=services, overrides=overrides)
    entry = manifest["services"]["orders-db"]
    assert (entry["resolved_by"], entry["endpoint"]["host"]) == (expected_by, expected_host)


def test_user_and_database_precedence() -> None:
    services = {"db": {"kind": "postgres", "database": "app", "user": "checker"}}
    provisioned = build(services=services, overrides={})["services"]["db"]["endpoint"]
    assert (provisioned["user"], provisioned["database"]) == ("checker", "app")
    override = {"db": {"host": "127.0.0.1", "port": 5433, "user": "ro", "database": "app2"}}
    entry = build(services=services, overrides=override)["services"]["db"]
    assert entry["endpoint"] == {
        "host": "127.0.0.1",
        "port": 5433,
        "user": "ro",
        "database": "app2",
    }
    assert entry["dsn"] == "postgresql://ro@127.0.0.1:5433/app2"
    partial = build(services=services, overrides={"db": {"host": "::1"}})["services"]["db"]
    assert partial["dsn"] == "postgresql://checker@[::1]:5432/app"


def test_a_postgres_service_without_any_user_is_refused() -> None:
    services = {"db": {"kind": "postgres", "database": "app"}}
    with pytest.raises(InvalidInputError, match=r"no user to connect as; set services\.db\.user"):
        build(services=services, overrides={"db": {"host": "127.0.0.1"}})


def test_explicit_binding_and_sandbox_http_endpoints() -> None:
    endpoints = {
        **SANDBOX,
        "replica": {"kind": "postgres", "host": "/tmp/r", "port": 5433, "user": "postgres"},
        "web": {"kind": "http", "host": "127.0.0.1", "port": 9000},
    }
    services = {
        "db": {"kind": "postgres", "database": "app", "endpoint": "replica"},
        "api": {"kind": "http"},
    }
    manifest = build(endpoints=endpoints, services=services, overrides=None)
    assert manifest["services"]["db"]["endpoint"]["host"] == "/tmp/r"
    assert manifest["services"]["api"]["endpoint"] == {"url": "http://127.0.0.1:9000"}


def test_binding_to_a_missing_sandbox_endpoint_falls_back_to_the_default() -> None:
    services = {
        "cache": {"kind": "tcp", "endpoint": "redis", "default": {"host": "::1", "port": 1}}
    }
    entry = build(services=services, overrides=None)["services"]["cache"]
    assert entry == {
        "kind": "tcp",
        "resolved_by": "spec_default",
        "endpoint": {"host": "::1", "port": 1},
    }


def test_unresolved_services_are_all_named_with_three_fixes() -> None:
    services = {"api": {"kind": "http"}, "cache": {"kind": "tcp"}, "db": SERVICES["orders-db"]}
    with pytest.raises(RoutingError) as info:
        build(services=services, overrides=None)
    message = str(info.value)
    assert info.value.code == "SERVICE_UNRESOLVED"
    assert info.value.details["services"] == ["api", "cache"]
    for name in ("api", "cache"):
        assert f"{name}: pass an override for it" in message
        assert f"bind services.{name}.endpoint" in message
        assert f"set services.{name}.default in the drill spec" in message


def test_production_targets_refuse_the_whole_manifest_listing_each_service() -> None:
    services = {
        "db": {"kind": "postgres", "database": "app", "user": "u", "default": {"host": "::1"}},
        "api": {"kind": "http", "default": {"url": "https://orders.prod.example.com"}},
        "cache": {"kind": "tcp", "default": {"host": "10.20.0.9", "port": 6379}},
        "ok": {"kind": "tcp", "default": {"host": "127.0.0.1", "port": 6379}},
    }
    overrides = {"db": {"host": "DB.PROD.INTERNAL.", "port": 5432, "database": "app"}}
    with pytest.raises(ProductionTargetRefusedError) as info:
        build(endpoints={}, services=services, overrides=overrides)
    message = str(info.value)
    assert info.value.code == "PRODUCTION_TARGET_REFUSED"
    assert info.value.details["services"] == ["api", "cache", "db"]
    assert "service 'db' (override)" in message and "'ok'" not in message
    assert "remove it from the drill spec's production list" in message


@pytest.mark.parametrize(
    ("services", "overrides", "fix"),
    [
        ({"x": {"kind": "ftp"}}, None, "services.x.kind 'ftp' is not a service kind; use one of"),
        (
            {"x": {"kind": "tcp", "hots": 1}},
            None,
            "services.x: unknown field(s) hots; a tcp service",
        ),
        ({"x": {"kind": "postgres"}}, None, "services.x: missing field 'database'; name the"),
        (
            {"x": {"kind": "postgres", "database": "a", "user": 5}},
            None,
            "x.user must be a non-empty",
        ),
        ({"x": "tcp"}, None, "services.x must be a mapping with at least 'kind'"),
        ({"bad name": {"kind": "tcp"}}, None, "must be 1-63 characters"),
        ({}, None, "services is empty: list the drill's logical services"),
        ({"x": {"kind": "tcp", "default": {"host": "h"}}}, None, "missing field 'port'; add it"),
        ({"x": {"kind": "http", "default": {}}}, None, "missing field 'url'; add e.g. url:"),
        ({"x": {"kind": "tcp", "default": {"host": "h", "port": 1, "ttl": 3}}}, None, "ttl"),
        (
            {"x": {"kind": "tcp", "default": {"host": "h", "port": 1}}},
            {"y": {"host": "h", "port": 1}},
            "overrides name unknown service(s) y; the drill's services are x",
        ),
        (
            {"x": {"kind": "postgres", "database": "a"}},
            {"x": {"host": "h", "password": "hunter2"}},
            "keep the password in an Airflow connection",
        ),
        (
            {"x": {"kind": "http"}},
            {"x": {"url": "http://u:hunter2@127.0.0.1/"}},
            "remove user:password@ from the URL",
        ),
        (
            {"x": {"kind": "tcp", "endpoint": "postgres"}},
            None,
            "of kind postgres, but the service is tcp; bind a tcp endpoint",
        ),
        ({"x": {"kind": "tcp", "default": "127.0.0.1:1"}}, None, "must be a mapping of endpoint"),
        (
            {"x": {"kind": "tcp", "default": {"host": "h", "port": 1}}},
            {"x": {"kind": "http", "host": "h", "port": 1}},
            "bind the service to a tcp endpoint",
        ),
    ],
)
def test_invalid_input_names_service_field_and_fix(
    services: dict, overrides: Any, fix: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        build(services=services, overrides=overrides)
    assert fix in str(info.value)
    assert "hunter2" not in str(info.value)


def test_an_unused_default_is_still_validated() -> None:
    services = {"db": {"kind": "postgres", "database": "a", "default": {"host": "h", "prt": 1}}}
    with pytest.raises(InvalidInputError, match=r"services\.db\.default: unknown field"):
        build(services=services, overrides=None)


def test_ambiguous_sandbox_endpoints_need_an_explicit_binding() -> None:
    endpoints = {**SANDBOX, "other": {**SANDBOX["postgres"], "host": "/tmp/o"}}
    with pytest.raises(
        InvalidInputError, match=r"set services\.orders-db\.endpoint to one of them"
    ):
        build(endpoints=endpoints, services={"orders-db": SERVICES["orders-db"]}, overrides=None)


@pytest.mark.parametrize(
    ("changes", "error", "fix"),
    [
        ({"endpoints": {"pg": {"host": "/x"}}}, InvalidInputError, "the sandbox record must give"),
        ({"endpoints": ["pg"]}, InvalidInputError, "mapping of name -> endpoint"),
        ({"overrides": [("x", 1)]}, InvalidInputError, "mapping of service name -> endpoint"),
        ({"production": PRODUCTION}, InvalidInputError, "ProductionGuard.from_spec"),
        ({"context": "v1.x"}, InvalidInputError, "create it with issue_context()"),
        ({"drill_id": "not-a-uuid"}, InvalidInputError, "pass the run's drill id"),
        ({"environment": "Drill"}, InvalidInputError, "e.g. drill, staging-eu"),
        ({"environment": "staging"}, RoutingError, "sign a context for this drill"),
        (
            {"drill_id": "00000000-0000-4000-8000-000000000000"},
            RoutingError,
            "sign a context for this drill",
        ),
    ],
)
def test_build_manifest_validates_its_other_inputs(
    changes: dict, error: type[Exception], fix: str
) -> None:
    with pytest.raises(error) as info:
        build(**changes)
    assert fix in str(info.value)


def test_resolve_target_returns_a_copy() -> None:
    manifest = build()
    entry = resolve_target(manifest, "cache")
    assert entry == {
        "kind": "tcp",
        "resolved_by": "spec_default",
        "endpoint": {"host": "127.0.0.1", "port": 6379},
    }
    entry["endpoint"]["host"] = "db.prod.internal"
    assert manifest["services"]["cache"]["endpoint"]["host"] == "127.0.0.1"


def test_resolve_target_refuses_unknown_services() -> None:
    with pytest.raises(RoutingError) as info:
        resolve_target(build(), "payments-db")
    assert info.value.code == "TARGET_NOT_IN_MANIFEST"
    assert "'payments-db' is not in the routing manifest" in str(info.value)
    assert "cache, orders-api, orders-db" in str(info.value)
    assert "fix the check's target" in str(info.value)


@pytest.mark.parametrize("manifest", [None, {}, {"schema": MANIFEST_SCHEMA}, {"schema": "x/v1"}])
def test_resolve_target_refuses_non_manifests(manifest: Any) -> None:
    with pytest.raises(RoutingError, match=r"build_manifest\(\)|apply_drill_route") as info:
        resolve_target(manifest, "cache")
    assert info.value.code == "MANIFEST_INVALID"
