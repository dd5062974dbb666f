"""Routing of drill traffic: manifest, precedence rules, production guard, signed drill context.

Route backends (manifest-only, Istio, Gateway API) consume the manifest built here.
"""

from drillkit.routing.connstr import (
    build_url,
    env_vars,
    override_dsn,
    parse_dsn,
    pg_service_entry,
    redact_dsn,
)
from drillkit.routing.context import (
    CONTEXT_HEADER,
    SignedContext,
    issue_context,
    load_signing_key,
    sign_context,
    verify_context,
)
from drillkit.routing.guard import ProductionGuard
from drillkit.routing.manifest import MANIFEST_SCHEMA, build_manifest, resolve_target

__all__ = [
    "CONTEXT_HEADER",
    "MANIFEST_SCHEMA",
    "ProductionGuard",
    "SignedContext",
    "build_manifest",
    "build_url",
    "env_vars",
    "issue_context",
    "load_signing_key",
    "override_dsn",
    "parse_dsn",
    "pg_service_entry",
    "redact_dsn",
    "resolve_target",
    "sign_context",
    "verify_context",
]
