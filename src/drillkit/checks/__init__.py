"""Smoke checks (SQL, HTTP, TCP, PITR, integrity) run against a drill's routing manifest.

``parse_checks`` validates the drill spec's ``checks``; ``run_checks`` runs them and returns the
``drillkit.validation/v1`` document.
"""

from typing import Any

from drillkit.checks.jsonpath import parse_json_path, resolve_json_path
from drillkit.checks.results import (
    VALIDATION_SCHEMA,
    CheckResult,
    Expectation,
    Outcome,
    build_validation,
    parse_expectation,
)
from drillkit.checks.spec import DEFAULT_TIMEOUT_SECONDS, KINDS, CheckSpec, parse_checks

# The engine pulls in requests, SQLAlchemy and psycopg: loaded on first use, so that parsing a
# drill spec (at DAG-parse time) stays cheap.
_LAZY = {
    "DEFAULT_CONCURRENCY": "drillkit.checks.engine",
    "POSTGRES_CONNECTIONS_PER_SERVICE": "drillkit.checks.engine",
    "CheckContext": "drillkit.checks.engine",
    "run_checks": "drillkit.checks.engine",
    "idempotency_key": "drillkit.checks.http",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drillkit.checks' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT_SECONDS",
    "KINDS",
    "POSTGRES_CONNECTIONS_PER_SERVICE",
    "VALIDATION_SCHEMA",
    "CheckContext",
    "CheckResult",
    "CheckSpec",
    "Expectation",
    "Outcome",
    "build_validation",
    "idempotency_key",
    "parse_checks",
    "parse_expectation",
    "parse_json_path",
    "resolve_json_path",
    "run_checks",
]
