"""HTTP smoke checks on asyncio, carrying the signed drill context.

All HTTP checks of a run share one event loop (the engine runs them there): on two cores, one
thread per request costs more CPU than the requests themselves (``requests`` in a thread pool
needed 2.7x one check's time for 200 concurrent checks). One connection per request, HTTP/1.1
with ``Connection: close``, and nothing from the environment (no proxy, no .netrc): a drill's
traffic goes only where its manifest says.

Redirects are followed only to origins in the routing manifest: anything else could be production.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

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
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "drillkit-smoke-check"
# Fixed, so a retried task derives the same key for the same drill and check.
_IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "drillkit:idempotency-key")


def idempotency_key(drill_id: str, check_name: str) -> str:
    """The same key for the same drill and check: a retried task repeats no side effect."""
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{drill_id}/{check_name}"))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port filled in from the scheme."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme, 80)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def http_origins(services: Mapping[str, Any]) -> frozenset[tuple[str, str, int]]:
    """(scheme, host, port) of every HTTP endpoint in the manifest: where redirects may go."""
    origins = set()
    for entry in services.values():
        endpoint = entry.get("endpoint") if isinstance(entry, Mapping) else None
        if isinstance(endpoint, Mapping) and isinstance(endpoint.get("url"), str):
            origins.add(_origin(endpoint["url"]))
    return frozenset(origins)


@cache
def _tls_context() -> ssl.SSLContext:
    """Certificates are verified, against certifi's bundle when present (as ``requests`` did)."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


@dataclass
class _Answer:
    """A response's status line and headers (names lowercased); the body is read separately."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_redirect(self) -> bool:
        return self.status_code in _REDIRECT_STATUSES and "location" in self.headers

    @property
    def location(self) -> str:
        return self.headers["location"]


def describe(config: HttpConfig) -> str:
    parts = ["status " + " or ".join(str(s) for s in config.statuses)]
    parts += [f"{a.path} {a.expect.describe()}" for a in config.json]
    if config.latency_budget is not None:
        parts.append(f"latency <= {config.latency_budget * 1000:g} ms")
    return "; ".join(parts)


async def run_http_check(ctx: CheckContext) -> Outcome:
    """Run one HTTP check in the engine's event loop; raises the check's error."""
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
        answer, content = await _exchange(ctx, method, url, headers, body)
        if not answer.is_redirect:
            break
        location = urljoin(url, answer.location)
        if _origin(location) not in ctx.http_origins:
            raise CheckError(
                f"{method} {url} redirected to {location}, which is not an endpoint in the routing "
                "manifest (it could be production); drillkit did not follow it. Make the sandbox "
                "service redirect within itself, or add the target to the drill's services",
                code=REDIRECT_OUTSIDE_MANIFEST,
            )
        if answer.status_code in config.statuses:
            break
        if answer.status_code == 303 or (answer.status_code in (301, 302) and method == "POST"):
            method, body = "GET", UNSET  # what browsers do; 307/308 keep method and body
        url = location
    else:
        raise CheckError(f"{config.method} {ctx.spec.name}: more than {MAX_REDIRECTS} redirects")
    latency = perf_counter() - started
    return _judge(config, answer.status_code, content, latency, f"{method} {url}")


async def _exchange(
    ctx: CheckContext, method: str, url: str, headers: dict[str, str], body: Any
) -> tuple[_Answer, bytes]:
    """One request on its own connection: the answer and its whole body."""
    remaining = ctx.remaining()
    if remaining <= 0:
        raise CheckTimedOut(f"timed out after {seconds_text(ctx.budget)} before {method} {url}")
    scheme, host, port = _origin(url)
    tls = _tls_context() if scheme == "https" else None
    # Resolved once and judged by the guard; the connection goes to that address (the Host
    # header and TLS still name the host), so a second lookup cannot answer differently.
    if ctx.guard.known(host):
        addresses = ctx.pin(host, port)
    else:
        addresses = await asyncio.to_thread(ctx.pin, host, port)
    try:
        async with asyncio.timeout(remaining):
            reader, writer = await _open_any(addresses, port, tls, host)
    except TimeoutError as exc:
        raise EndpointUnreachable(
            f"timed out after {seconds_text(ctx.budget)}: {url} accepted no connection"
        ) from exc
    except ssl.SSLError as exc:
        raise CheckError(f"{method} {url}: the TLS handshake failed: {exc}") from exc
    except OSError as exc:  # refused, DNS failure, no route
        raise EndpointUnreachable(f"cannot connect to {url}: {exc}") from exc
    try:
        async with asyncio.timeout(max(ctx.remaining(), 0)):
            writer.write(_request(method, url, headers, body))
            await writer.drain()
            answer = await _read_head(reader, url)
            content = b"" if method == "HEAD" else await _read_body(ctx, reader, answer, url)
    except TimeoutError as exc:
        raise CheckTimedOut(
            f"timed out after {seconds_text(ctx.budget)} waiting for {url}"
        ) from exc
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise CheckError(f"{method} {url} failed after connecting: {exc!r}") from exc
    finally:
        writer.close()
    return answer, content


async def _open_any(
    addresses: tuple[str, ...], port: int, tls: ssl.SSLContext | None, host: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first judged address that answers, in the resolver's order."""
    error: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(
                address, port, ssl=tls, server_hostname=host if tls else None, limit=1 << 16
            )
        except ssl.SSLError:
            raise
        except OSError as exc:
            error = exc
    assert error is not None  # pin() never returns an empty tuple
    raise error


def _request(method: str, url: str, headers: dict[str, str], body: Any) -> bytes:
    scheme, name, port = _origin(url)
    host = f"[{name}]" if ":" in name else name  # an IPv6 address keeps its brackets
    if port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = {"Host": host, "User-Agent": USER_AGENT, **headers, "Connection": "close"}
    payload = b""
    if body is not UNSET:
        payload = json.dumps(body).encode()
        lines.setdefault("Content-Type", "application/json")
    if payload or method in ("POST", "PUT", "PATCH"):
        lines["Content-Length"] = str(len(payload))
    for name, value in lines.items():
        if any(c in f"{name}{value}" for c in "\r\n"):
            raise CheckError(f"header {name!r} holds a line break; drillkit does not send it")
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
    return (head + "\r\n").encode("latin-1") + payload


async def _read_head(reader: asyncio.StreamReader, url: str) -> _Answer:
    """The status line and headers, skipping interim 1xx answers."""
    while True:
        status_line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/") or not code.isdigit():
            raise CheckError(f"{url} did not answer HTTP (first line {status_line[:60]!r})")
        headers: dict[str, str] = {}
        while line := (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if not 100 <= int(code) < 200:
            return _Answer(int(code), headers)


async def _read_body(
    ctx: CheckContext, reader: asyncio.StreamReader, answer: _Answer, url: str
) -> bytes:
    if answer.status_code in (204, 304):
        return b""
    chunks: list[bytes] = []
    size = 0

    def too_big() -> CheckError:
        return CheckError(
            f"{url} answered more than {MAX_BODY_BYTES} bytes; check a smaller resource"
        )

    def keep(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_big()
        chunks.append(chunk)

    if "chunked" in answer.headers.get("transfer-encoding", "").lower():
        while True:
            size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
            try:
                length = int(size_line, 16)
            except ValueError:
                raise CheckError(f"{url} sent a broken chunked body ({size_line[:20]!r})") from None
            if length == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            if size + length > MAX_BODY_BYTES:
                raise too_big()
            keep(await reader.readexactly(length))
            await reader.readexactly(2)
    elif "content-length" in answer.headers:
        length = (
            int(answer.headers["content-length"])
            if answer.headers["content-length"].isdigit()
            else -1
        )
        if length < 0:
            raise CheckError(f"{url} sent a bad Content-Length")
        if length > MAX_BODY_BYTES:
            raise too_big()
        keep(await reader.readexactly(length))
    else:  # delimited by the end of the connection
        while chunk := await reader.read(65536):
            keep(chunk)
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
