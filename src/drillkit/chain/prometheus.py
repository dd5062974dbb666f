"""The fallback rate from Prometheus: one instant query (``GET /api/v1/query``), a 0..1 ratio.

No data, several series or a value outside 0..1 is an error, never a zero: a drill that cannot
read the rate must not report a healthy chain.
"""

from __future__ import annotations

import math
from fractions import Fraction
from string import Template
from typing import Any

import requests

from drillkit.chain.model import PrometheusConfig
from drillkit.exceptions import CheckError, TransientDrillError


def prom_duration(seconds: float) -> str:
    """A PromQL range: ``10m``, ``1h``, ``90s`` (whole seconds, rounded up)."""
    whole = max(1, math.ceil(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def render_query(config: PrometheusConfig, *, window: float) -> str:
    return Template(config.query).safe_substitute(window=prom_duration(window))


def _failed(code: str, message: str) -> CheckError:
    return CheckError(message, code=code)


def _sample(data: Any, query: str) -> tuple[float, str]:
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return float(result[0]), str(result[1])
    if kind != "vector" or not isinstance(result, list):
        raise _failed(
            "PROMETHEUS_UNEXPECTED_RESULT",
            f"Prometheus answered a {kind!r} result for {query!r}; write a query that returns "
            "one instant value (a scalar, or a vector with one series)",
        )
    if not result:
        raise _failed(
            "PROMETHEUS_NO_DATA",
            f"Prometheus has no data for {query!r}: the metric is absent or had no traffic in "
            "the window; check the metric names and the window",
        )
    if len(result) > 1:
        raise _failed(
            "PROMETHEUS_AMBIGUOUS",
            f"Prometheus returned {len(result)} series for {query!r}; aggregate them into one "
            "ratio, e.g. sum(rate(a[5m])) / sum(rate(b[5m]))",
        )
    at, value = result[0]["value"]
    return float(at), str(value)


def query_fallback_rate(
    config: PrometheusConfig, *, window: float, session: requests.Session | None = None
) -> dict[str, Any]:
    query = render_query(config, window=window)
    url = f"{config.url}/api/v1/query"
    own = session is None
    session = session or requests.Session()
    session.trust_env = False  # no proxy from the environment: this URL is the one configured
    try:
        response = session.get(url, params={"query": query}, timeout=config.timeout)
    except requests.RequestException as exc:
        raise TransientDrillError(
            f"cannot reach Prometheus at {config.url} ({type(exc).__name__}); check "
            "chaos.prometheus.url and that Prometheus is up",
            code="PROMETHEUS_UNAVAILABLE",
        ) from exc
    finally:
        if own:
            session.close()
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientDrillError(
            f"Prometheus answered HTTP {response.status_code} to {query!r}; it is overloaded or "
            "restarting, the task will retry",
            code="PROMETHEUS_UNAVAILABLE",
        )
    try:
        payload = response.json()
    except ValueError as exc:
        raise _failed(
            "PROMETHEUS_QUERY_FAILED",
            f"{url} answered HTTP {response.status_code} without JSON: is it Prometheus?",
        ) from exc
    if response.status_code != 200 or payload.get("status") != "success":
        raise _failed(
            "PROMETHEUS_QUERY_FAILED",
            f"Prometheus refused {query!r}: {payload.get('errorType', response.status_code)}: "
            f"{payload.get('error', 'no error message')}; fix chaos.prometheus.query",
        )
    at, value = _sample(payload.get("data"), query)
    try:
        exact = Fraction(value)
    except (ValueError, ZeroDivisionError) as exc:  # NaN, +Inf: no traffic, or a bad ratio
        raise _failed(
            "PROMETHEUS_NO_DATA",
            f"Prometheus returned {value} for {query!r}: no traffic in the window (0/0) or not "
            "a ratio; a drill cannot judge the chain from it",
        ) from exc
    if not 0 <= exact <= 1:
        raise _failed(
            "PROMETHEUS_NOT_A_RATIO",
            f"Prometheus returned {value} for {query!r}; the query must give a ratio between 0 "
            "and 1 (fallback answers / all answers)",
        )
    return {
        "source": "prometheus",
        "query": query,
        "window": prom_duration(window),
        "value": value,
        "percent": round(float(exact) * 100, 4),
        "evaluated_at": at,
    }
