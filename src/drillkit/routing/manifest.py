"""The routing manifest: which endpoint each logical service of a drill reaches, and why.

Precedence: explicit override > endpoint provisioned by the sandbox > spec default.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from drillkit.exceptions import InvalidInputError, ProductionTargetRefusedError, RoutingError
from drillkit.routing.connstr import DEFAULT_PORT, build_url, validate_host, validate_port
from drillkit.routing.context import SignedContext, canonical_drill_id, validate_environment

if TYPE_CHECKING:
    from drillkit.routing.guard import ProductionGuard

MANIFEST_SCHEMA = "drillkit.routing_manifest/v1"
SERVICE_KINDS = ("postgres", "http", "tcp")
RESOLVED_BY = ("override", "provisioned", "spec_default")

_SERVICE_FIELDS = {
    "postgres": frozenset({"kind", "database", "user", "endpoint", "default"}),
    "http": frozenset({"kind", "endpoint", "default"}),
    "tcp": frozenset({"kind", "endpoint", "default"}),
}
_ENDPOINT_FIELDS = {
    "postgres": frozenset({"host", "port", "user", "database"}),
    "http": frozenset({"url"}),
    "tcp": frozenset({"host", "port"}),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_URL_UNSAFE_RE = re.compile(r"[\s\x00-\x1f\x7f\\]")


def url_host_port(url: Any, *, where: str) -> tuple[str, int]:
    """Host and port of an http(s) URL; refuses shapes that clients and parsers read differently."""
    if not isinstance(url, str) or _URL_UNSAFE_RE.search(url):
        raise InvalidInputError(
            f"{where}.url must be an http(s) URL without spaces, backslashes or control "
            "characters, e.g. http://127.0.0.1:8080"
        )
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"{where}.url {url!r} is not http(s)://host[:port]/...; fix the URL"
        )
    if "@" in parts.netloc:
        raise InvalidInputError(
            f"{where}.url carries credentials: remove user:password@ from the URL and keep "
            "secrets in an Airflow connection"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"{where}.url has a port outside 1-65535; fix the URL") from exc
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def normalize_endpoint(kind: str, raw: Any, *, where: str, strict: bool) -> dict[str, Any]:
    """Validate one endpoint of ``kind``; ``strict`` refuses unknown fields (hand-written input)."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"{where} must be a mapping of endpoint fields, got {type(raw).__name__}"
        )
    if "password" in raw:
        raise InvalidInputError(
            f"{where} has a password: the routing manifest travels through XCom and never holds "
            "secrets; keep the password in an Airflow connection"
        )
    if strict:
        unknown = sorted(set(raw) - _ENDPOINT_FIELDS[kind] - {"kind"})
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown field(s) {', '.join(unknown)}; a {kind} endpoint has "
                f"{', '.join(sorted(_ENDPOINT_FIELDS[kind]))}"
            )
    if raw.get("kind", kind) != kind:
        raise InvalidInputError(
            f"{where} is a {raw.get('kind')!r} endpoint but the service is {kind}; "
            f"bind the service to a {kind} endpoint"
        )
    if kind == "http":
        if "url" not in raw and not strict and "host" in raw:
            host = validate_host(raw["host"], where=where)
            port = validate_port(raw.get("port", 80), where=where)
            raw = {"url": f"http://{f'[{host}]' if ':' in host else host}:{port}"}
        if "url" not in raw:
            raise InvalidInputError(
                f"{where}: missing field 'url'; add e.g. url: http://127.0.0.1:8080"
            )
        url_host_port(raw["url"], where=where)
        return {"url": raw["url"]}
    if "host" not in raw:
        raise InvalidInputError(
            f"{where}: missing field 'host'; add the host name, IP or socket dir"
        )
    endpoint: dict[str, Any] = {"host": validate_host(raw["host"], where=where)}
    if kind == "tcp" and "port" not in raw:
        raise InvalidInputError(f"{where}: missing field 'port'; add it, e.g. port: 6379")
    endpoint["port"] = validate_port(raw.get("port", DEFAULT_PORT), where=where)
    if kind == "postgres":
        for field in ("user", "database"):
            value = raw.get(field)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInputError(f"{where}: {field} must be a non-empty string")
            if value is not None:
                endpoint[field] = value
    return endpoint


def _validate_service(name: Any, spec: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(
            f"service name {name!r} must be 1-63 characters of letters, digits, '.', '_' or '-'"
        )
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"services.{name} must be a mapping with at least 'kind'")
    kind = spec.get("kind")
    if kind not in SERVICE_KINDS:
        raise InvalidInputError(
            f"services.{name}.kind {kind!r} is not a service kind; use one of "
            f"{', '.join(SERVICE_KINDS)}"
        )
    unknown = sorted(set(spec) - _SERVICE_FIELDS[kind])
    if unknown:
        raise InvalidInputError(
            f"services.{name}: unknown field(s) {', '.join(unknown)}; a {kind} service has "
            f"{', '.join(sorted(_SERVICE_FIELDS[kind]))}"
        )
    if kind == "postgres" and (not isinstance(spec.get("database"), str) or not spec["database"]):
        raise InvalidInputError(
            f"services.{name}: missing field 'database'; name the database the checks use"
        )
    for field in ("user", "endpoint"):
        if field in spec and (not isinstance(spec[field], str) or not spec[field]):
            raise InvalidInputError(f"services.{name}.{field} must be a non-empty string")
    return kind


def validate_services(services: Any) -> dict[str, str]:
    """Check a spec's ``services`` mapping when the spec is loaded; return name -> kind."""
    if not isinstance(services, Mapping) or not services:
        raise InvalidInputError("services must be a mapping of logical service name -> {kind: ...}")
    return {name: _validate_service(name, spec) for name, spec in services.items()}


def _sandbox_endpoints(endpoints: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if endpoints is None:
        return {}
    if not isinstance(endpoints, Mapping):
        raise InvalidInputError("sandbox endpoints must be a mapping of name -> endpoint")
    for name, endpoint in endpoints.items():
        if not isinstance(endpoint, Mapping) or endpoint.get("kind") not in SERVICE_KINDS:
            raise InvalidInputError(
                f"sandbox endpoint {name!r} has no valid kind; the sandbox record must give "
                f"kind: {' | '.join(SERVICE_KINDS)}"
            )
    return dict(endpoints)


def _provisioned(
    name: str, kind: str, spec: Mapping[str, Any], endpoints: Mapping[str, Mapping[str, Any]]
) -> tuple[str, Mapping[str, Any]] | None:
    binding = spec.get("endpoint")
    if binding is not None:
        if binding not in endpoints:
            return None
        if endpoints[binding]["kind"] != kind:
            raise InvalidInputError(
                f"services.{name}.endpoint names sandbox endpoint {binding!r} of kind "
                f"{endpoints[binding]['kind']}, but the service is {kind}; bind a {kind} endpoint"
            )
        return binding, endpoints[binding]
    same_kind = sorted(n for n, ep in endpoints.items() if ep["kind"] == kind)
    if len(same_kind) > 1:
        raise InvalidInputError(
            f"services.{name}: the sandbox provides {len(same_kind)} {kind} endpoints "
            f"({', '.join(same_kind)}); set services.{name}.endpoint to one of them"
        )
    return (same_kind[0], endpoints[same_kind[0]]) if same_kind else None


def _resolve(
    name: str,
    kind: str,
    spec: Mapping[str, Any],
    endpoints: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any],
) -> dict[str, Any] | None:
    # A default is validated even when unused, so a typo surfaces before the day it is needed.
    default = None
    if spec.get("default") is not None:
        default = normalize_endpoint(
            kind, spec["default"], where=f"services.{name}.default", strict=True
        )
    if name in overrides:
        by = "override"
        endpoint = normalize_endpoint(kind, overrides[name], where=f"overrides.{name}", strict=True)
    elif (bound := _provisioned(name, kind, spec, endpoints)) is not None:
        by = "provisioned"
        endpoint = normalize_endpoint(
            kind, bound[1], where=f"sandbox endpoint {bound[0]!r}", strict=False
        )
    elif default is not None:
        by, endpoint = "spec_default", default
    else:
        return None
    entry: dict[str, Any] = {"kind": kind, "resolved_by": by, "endpoint": endpoint}
    if kind == "postgres":
        # An override is the most explicit statement; otherwise the service names its own
        # database and user inside whatever server it was routed to.
        first, second = (endpoint, spec) if by == "override" else (spec, endpoint)
        for field in ("user", "database"):
            value = first.get(field) or second.get(field)
            if not value:
                raise InvalidInputError(
                    f"services.{name}: no {field} to connect as; set services.{name}.{field}"
                )
            endpoint[field] = value
        entry["endpoint"] = {k: endpoint[k] for k in ("host", "port", "user", "database")}
        entry["dsn"] = build_url(endpoint, user=endpoint["user"], database=endpoint["database"])
    return entry


def build_manifest(
    *,
    drill_id: str,
    environment: str,
    endpoints: Mapping[str, Any] | None,
    services: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    production: ProductionGuard,
    context: SignedContext,
) -> dict[str, Any]:
    """Resolve every logical service, refuse production targets, return the JSON-safe manifest."""
    drill_id = canonical_drill_id(drill_id)
    environment = validate_environment(environment)
    if not isinstance(context, SignedContext):
        raise InvalidInputError("context must be a SignedContext; create it with issue_context()")
    if (context.drill_id, context.environment) != (drill_id, environment):
        raise RoutingError(
            f"the signed context is for drill {context.drill_id} ({context.environment}), not "
            f"{drill_id} ({environment}); sign a context for this drill",
            code="CONTEXT_MISMATCH",
        )
    if not hasattr(production, "violation"):
        raise InvalidInputError(
            "production must be a ProductionGuard; build it with ProductionGuard.from_spec(...)"
        )
    if not isinstance(services, Mapping) or not services:
        raise InvalidInputError("services is empty: list the drill's logical services in the spec")
    kinds = {name: _validate_service(name, spec) for name, spec in services.items()}
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise InvalidInputError("overrides must be a mapping of service name -> endpoint")
    unknown = sorted(set(overrides) - set(services))
    if unknown:
        raise InvalidInputError(
            f"overrides name unknown service(s) {', '.join(map(str, unknown))}; "
            f"the drill's services are {', '.join(services)}"
        )
    sandbox = _sandbox_endpoints(endpoints)
    entries: dict[str, Any] = {}
    unresolved = []
    for name, spec in services.items():
        entry = _resolve(name, kinds[name], spec, sandbox, overrides)
        if entry is None:
            unresolved.append(name)
        else:
            entries[name] = entry
    if unresolved:
        fixes = "; ".join(
            f"{n}: pass an override for it, let the sandbox provision a {kinds[n]} endpoint "
            f"(or bind services.{n}.endpoint to one), or set services.{n}.default in the drill spec"
            for n in unresolved
        )
        raise RoutingError(
            f"no endpoint for service(s) {', '.join(unresolved)}. Fix: {fixes}",
            code="SERVICE_UNRESOLVED",
            services=unresolved,
        )
    offenders = {
        name: reason
        for name, entry in entries.items()
        if (reason := production.violation(entry["kind"], entry["endpoint"], service=name))
    }
    if offenders:
        raise ProductionTargetRefusedError(
            "refusing the routing manifest: "
            + "; ".join(
                f"service {n!r} ({entries[n]['resolved_by']}) would reach production: {r}"
                for n, r in offenders.items()
            )
            + ". Point these services at the sandbox (fix the override or spec default); if a "
            "host is not production, remove it from the drill spec's production list",
            services=sorted(offenders),
        )
    return {
        "schema": MANIFEST_SCHEMA,
        "drill_id": drill_id,
        "environment": environment,
        "context": context.to_manifest(),
        "services": entries,
        "production": production.to_dict(),
    }


def manifest_services(manifest: Any) -> Mapping[str, Any]:
    """The ``services`` of a manifest after checking that it is one (XCom input is untrusted)."""
    if not isinstance(manifest, Mapping) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise RoutingError(
            f"not a {MANIFEST_SCHEMA} document; pass the routing manifest XCom of "
            "apply_drill_route",
            code="MANIFEST_INVALID",
        )
    services = manifest.get("services")
    if not isinstance(services, Mapping):
        raise RoutingError(
            "routing manifest has no services mapping; rebuild it with build_manifest()",
            code="MANIFEST_INVALID",
        )
    return services


def resolve_target(manifest: Mapping[str, Any], service_name: str) -> dict[str, Any]:
    """The manifest entry (kind, resolved_by, endpoint, dsn) a check must use for a service."""
    services = manifest_services(manifest)
    if service_name not in services:
        known = ", ".join(sorted(services)) or "none"
        raise RoutingError(
            f"service {service_name!r} is not in the routing manifest (it has: {known}); add it "
            "to the drill spec's services or fix the check's target",
            code="TARGET_NOT_IN_MANIFEST",
            service=service_name,
        )
    return copy.deepcopy(dict(services[service_name]))
