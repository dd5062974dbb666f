"""Smoke checks (SQL, HTTP, TCP, PITR, integrity) run against a drill's routing manifest.

``parse_checks`` validates the drill spec's ``checks``; ``run_checks`` runs them and returns the
``drillkit.validation/v1`` document.
"""

from drillkit.checks.engine import (
    DEFAULT_CONCURRENCY,
    POSTGRES_CONNECTIONS_PER_SERVICE,
    CheckContext,
    run_checks,
)
from drillkit.checks.http import idempotency_key, parse_json_path, resolve_json_path
from drillkit.checks.results import (
    VALIDATION_SCHEMA,
    CheckResult,
    Expectation,
    Outcome,
    build_validation,
    parse_expectation,
)
from drillkit.checks.spec import DEFAULT_TIMEOUT_SECONDS, KINDS, CheckSpec, parse_checks

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
