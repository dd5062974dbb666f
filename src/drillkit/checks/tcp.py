"""TCP smoke checks: the service accepts a connection within the timeout; observed = latency.

A PostgreSQL endpoint on a unix-socket directory is checked through its socket file; a host is
resolved once, judged by the production guard, and the connection goes to that address.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from drillkit.checks.results import EndpointUnreachable, Outcome, seconds_text
from drillkit.exceptions import CheckError

if TYPE_CHECKING:
    from drillkit.checks.engine import CheckContext

_PG_DEFAULT_PORT = 5432


def endpoint_address(endpoint: Mapping[str, Any]) -> tuple[str, int] | str:
    """(host, port) of a manifest endpoint, or the socket file path of a unix-socket endpoint."""
    if isinstance(endpoint.get("url"), str):
        parts = urlsplit(endpoint["url"])
        if not parts.hostname:
            raise CheckError(f"endpoint url {endpoint['url']!r} has no host")
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    host, port = endpoint.get("host"), endpoint.get("port", _PG_DEFAULT_PORT)
    if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int):
        raise CheckError(f"endpoint {dict(endpoint)!r} needs a url, or a host and an integer port")
    if host.startswith("/"):  # libpq semantics: a directory holding the server's socket file
        return f"{host.rstrip('/')}/.s.PGSQL.{port}"
    return host, port


def _connect_any(ctx: CheckContext, addresses: tuple[str, ...], port: int) -> socket.socket:
    """Connect to the first of the judged ``addresses`` that answers (never to a name)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=max(ctx.remaining(), 0.001))
        except TimeoutError:
            raise
        except OSError as exc:
            error = exc
    assert error is not None  # pin() never returns an empty tuple
    raise error


def describe(timeout: float) -> str:
    return f"connects within {seconds_text(timeout)}"


def run_tcp_check(ctx: CheckContext) -> Outcome:
    address = endpoint_address(ctx.entry.get("endpoint") or {})
    shown = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
    started = perf_counter()
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(ctx.remaining(), 0.001))
                sock.connect(address)
            except OSError:
                sock.close()
                raise
        else:
            database = (ctx.entry.get("endpoint") or {}).get("database")
            sock = _connect_any(ctx, ctx.pin(address[0], address[1], database), address[1])
    except TimeoutError as exc:
        raise EndpointUnreachable(
            f"timed out after {seconds_text(ctx.budget)}: {shown} accepted no connection"
        ) from exc
    except OSError as exc:  # refused, DNS failure, socket file missing, no route
        raise EndpointUnreachable(f"cannot connect to {shown}: {exc.strerror or exc}") from exc
    latency_ms = (perf_counter() - started) * 1000
    sock.close()
    return Outcome(
        status="passed",
        observed=round(latency_ms, 3),
        expectation=describe(ctx.spec.timeout),
        detail=f"{shown} accepted a connection in {latency_ms:.1f} ms",
    )
