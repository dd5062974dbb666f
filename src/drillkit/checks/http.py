"""HTTP smoke checks through one pooled ``requests`` session, carrying the signed drill context.

Redirects are followed only to origins in the routing manifest: anything else could be production.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from drillkit.checks.jsonpath import resolve_json_path
from drillkit.checks.results import (
    REDIRECT_OUTSIDE_MANIFEST,
    UNSET,
    CheckTimedOut,
    EndpointUnreachable,
    Outcome,
    seconds_text,
)
from drillkit.checks.spec import IDEMPOTENCY_HEADER, UNSAFE_METHODS
from drillkit.exceptions import CheckError

if TYPE_CHECKING:
    from drillkit.checks.engine import CheckContext
    from drillkit.checks.spec import HttpConfig

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 10 * 1024 * 1024
# Fixed, so a retried task derives the same key for the same drill and check.
_IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "drillkit:idempotency-key")


def idempotency_key(drill_id: str, check_name: str) -> str:
    """The same key for the same drill and check: a retried task repeats no side effect."""
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{drill_id}/{check_name}"))


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def http_origins(services: Mapping[str, Any]) -> frozenset[tuple[str, str, int]]:
    """(scheme, host, port) of every HTTP endpoint in the manifest: where redirects may go."""
    origins = set()
    for entry in services.values():
        endpoint = entry.get("endpoint") if isinstance(entry, Mapping) else None
        if isinstance(endpoint, Mapping) and isinstance(endpoint.get("url"), str):
            origins.add(_origin(endpoint["url"]))
    return frozenset(origins)


def new_session(*, pool_size: int, hosts: int) -> requests.Session:
    """One session per run: connection pools sized to the concurrency bound, no retries."""
    session = requests.Session()
    # Proxies and .netrc from the environment would send drill traffic, and credentials, elsewhere.
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=max(hosts, 1), pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def describe(config: HttpConfig) -> str:
    parts = ["status " + " or ".join(str(s) for s in config.statuses)]
    parts += [f"{a.path} {a.expect.describe()}" for a in config.json]
    if config.latency_budget is not None:
        parts.append(f"latency <= {config.latency_budget * 1000:g} ms")
    return "; ".join(parts)


def run_http_check(ctx: CheckContext) -> Outcome:
    config: HttpConfig = ctx.spec.config  # type: ignore[assignment]
    url = str(ctx.entry["endpoint"]["url"]).rstrip("/") + config.path
    headers = dict(config.headers)
    if ctx.drill_header is not None:
        headers[ctx.drill_header[0]] = ctx.drill_header[1]
    if config.method in UNSAFE_METHODS:
        headers[IDEMPOTENCY_HEADER] = idempotency_key(ctx.drill_id, ctx.spec.name)
    method, body = config.method, config.body
    started = perf_counter()
    for _hop in range(MAX_REDIRECTS + 1):
        response = _send(ctx, method, url, headers, body)
        if not response.is_redirect:
            break
        location = urljoin(url, response.headers["location"])
        if _origin(location) not in ctx.http_origins:
            response.close()
            raise CheckError(
                f"{method} {url} redirected to {location}, which is not an endpoint in the routing "
                "manifest (it could be production); drillkit did not follow it. Make the sandbox "
                "service redirect within itself, or add the target to the drill's services",
                code=REDIRECT_OUTSIDE_MANIFEST,
            )
        if response.status_code in config.statuses:
            break
        response.close()
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, body = "GET", UNSET  # what browsers do; 307/308 keep method and body
        url = location
    else:
        raise CheckError(f"{config.method} {ctx.spec.name}: more than {MAX_REDIRECTS} redirects")
    if method == "HEAD":
        content = b""
        response.close()
    else:
        content = _read_body(ctx, response, url)
    latency = perf_counter() - started
    return _judge(config, response.status_code, content, latency, f"{method} {url}")


def _send(
    ctx: CheckContext, method: str, url: str, headers: dict[str, str], body: Any
) -> requests.Response:
    remaining = ctx.remaining()
    if remaining <= 0:
        raise CheckTimedOut(f"timed out after {seconds_text(ctx.budget)} before {method} {url}")
    extra = {} if body is UNSET else {"json": body}
    try:
        response = ctx.http_session.request(  # type: ignore[union-attr]
            method,
            url,
            headers=headers,
            timeout=(remaining, remaining),
            allow_redirects=False,
            stream=True,
            **extra,
        )
    except requests.ConnectTimeout as exc:
        raise EndpointUnreachable(
            f"timed out after {seconds_text(ctx.budget)}: {url} accepted no connection"
        ) from exc
    except requests.ReadTimeout as exc:
        raise CheckTimedOut(
            f"timed out after {seconds_text(ctx.budget)} waiting for {url}"
        ) from exc
    except requests.ConnectionError as exc:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError):  # refused, DNS failure, no route
            raise EndpointUnreachable(f"cannot connect to {url}: {reason}") from exc
        raise CheckError(f"{method} {url} failed after connecting: {exc}") from exc
    ctx.on_cancel(lambda: _abort(response))
    return response


def _abort(response: requests.Response) -> None:
    """Wake a read stuck on a slow server. Closing the response instead would wait for that very
    read: the buffered reader holds its lock while reading."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _read_body(ctx: CheckContext, response: requests.Response, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise CheckError(
                    f"{url} answered more than {MAX_BODY_BYTES} bytes; check a smaller resource"
                )
            if ctx.remaining() <= 0:
                raise CheckTimedOut(f"timed out after {seconds_text(ctx.budget)} reading {url}")
            chunks.append(chunk)
    except requests.ConnectionError as exc:
        if exc.args and isinstance(exc.args[0], ReadTimeoutError):
            raise CheckTimedOut(
                f"timed out after {seconds_text(ctx.budget)} reading {url}"
            ) from exc
        raise CheckError(f"reading the answer of {url} failed: {exc}") from exc
    finally:
        response.close()
    return b"".join(chunks)


def _judge(config: HttpConfig, status: int, content: bytes, latency: float, what: str) -> Outcome:
    observed: dict[str, Any] = {"status": status}
    problems = []
    if status not in config.statuses:
        problems.append(f"status {status}, expected {' or '.join(map(str, config.statuses))}")
    if config.json:
        try:
            document = json.loads(content)
        except ValueError:
            document = UNSET
            problems.append(f"the body is not JSON (starts with {content[:60]!r})")
        for assertion in config.json if document is not UNSET else ():
            try:
                value = resolve_json_path(document, assertion.steps)
            except LookupError as exc:
                observed[assertion.path] = None
                problems.append(f"{assertion.path}: {exc}")
                continue
            observed[assertion.path] = value
            why = assertion.expect.check_value(value)
            if why:
                problems.append(f"{assertion.path}: {why}")
    if config.latency_budget is not None:
        observed["latency_ms"] = round(latency * 1000, 1)
        if latency > config.latency_budget:
            problems.append(
                f"latency {latency * 1000:.0f} ms over the budget of "
                f"{config.latency_budget * 1000:g} ms"
            )
    return Outcome(
        status="failed" if problems else "passed",
        observed=observed,
        expectation=describe(config),
        detail="; ".join(problems) if problems else f"{what} answered {status}",
    )
