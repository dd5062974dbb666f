"""Proof that a mesh drill route is in effect, before any smoke check relies on it.

The drill rule (istio or gateway_api, ``drillkit.k8s.route_objects``) stamps every answer it
routes with ``x-drill-sandbox: <sandbox id>``. For each routed service, two probes go to the
production host, as a caller of the mesh sends them:

- one carrying the signed ``X-Drill-Context`` must come back with that stamp (the drill rule
  matched and sent it to this sandbox);
- one without it must come back without the stamp (production traffic is not steered).

Only when both hold does ``ProductionGuard.admit_route`` let requests that carry the context
reach the production host (the mesh sends them to the sandbox), and HTTP checks of the service
go there: the path smoke traffic takes is the production path. Otherwise the tier is COULD NOT
VERIFY with ``ROUTE_NOT_IN_EFFECT``. Probes are ``HEAD`` requests (safe, no body), connect to
the addresses the guard resolved (one lookup, as checks do) and never follow redirects.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from drillkit.routing.guard import ProductionGuard
from drillkit.routing.resolve import UnresolvableHostError

ROUTE_NOT_IN_EFFECT = "ROUTE_NOT_IN_EFFECT"
PROBE_TIMEOUT_SECONDS = 5.0
PROBE_PATH = "/"
USER_AGENT = "drillkit-route-probe"


@dataclass(frozen=True)
class ProbeAnswer:
    """What one probe saw: the status and the proof header (or why there was no answer)."""

    status: int | None
    stamp: str | None
    error: str | None = None


# (addresses, host, port, path, headers, timeout) -> answer; tests may pass their own.
Send = Callable[[tuple[str, ...], str, int, str, Mapping[str, str], float, str], ProbeAnswer]


def send_head(
    addresses: tuple[str, ...],
    host: str,
    port: int,
    path: str,
    headers: Mapping[str, str],
    timeout: float,
    proof_header: str,
) -> ProbeAnswer:
    """One ``HEAD`` on its own connection to the first judged address that accepts it."""
    error = "no address"
    for address in addresses:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            connection.putrequest("HEAD", path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", host if port == 80 else f"{host}:{port}")
            connection.putheader("User-Agent", USER_AGENT)
            connection.putheader("Connection", "close")
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            return ProbeAnswer(response.status, response.getheader(proof_header))
        except (OSError, http.client.HTTPException) as exc:
            error = f"{address}:{port}: {exc!r}"
        finally:
            connection.close()
    return ProbeAnswer(None, None, error)


def prove_routes(
    manifest: Mapping[str, Any],
    *,
    guard: ProductionGuard,
    sandbox_id: str,
    timeout: float = PROBE_TIMEOUT_SECONDS,
    send: Send = send_head,
) -> dict[str, Any]:
    """Probe every routed service; admit the proven ones to ``guard``; return the record.

    The record (``drillkit.route_proof/v1``) lists per service the host probed and both
    answers; ``proven`` is True only when every route is proven.
    """
    routes = manifest.get("routes") or {}
    context = manifest.get("context") or {}
    header, value = str(context.get("header") or ""), str(context.get("value") or "")
    proof_header = str(routes.get("proof_header") or "x-drill-sandbox")
    record: dict[str, Any] = {
        "schema": "drillkit.route_proof/v1",
        "backend": routes.get("backend"),
        "proof_header": proof_header,
        "sandbox_id": sandbox_id,
        "routes": {},
    }
    for name, route in sorted((routes.get("routes") or {}).items()):
        host, port = str(route["host"]), int(route.get("port") or 80)
        entry: dict[str, Any] = {"host": host, "port": port, "path": PROBE_PATH}
        record["routes"][name] = entry
        try:
            addresses = tuple(str(a) for a in guard.addresses(host))
        except UnresolvableHostError as exc:
            entry.update(proven=False, reason=str(exc))
            continue
        if any(a in ("0.0.0.0", "::") for a in addresses):
            entry.update(proven=False, reason=f"{host} resolves to a local wildcard address")
            continue
        drill = send(addresses, host, port, PROBE_PATH, {header: value}, timeout, proof_header)
        plain = send(addresses, host, port, PROBE_PATH, {}, timeout, proof_header)
        entry["with_context"], entry["without_context"] = asdict(drill), asdict(plain)
        reason = _why_not(drill, plain, sandbox_id, proof_header, header)
        entry["proven"] = reason is None
        if reason is None:
            guard.admit_route(host, port, context=value)
        else:
            entry["reason"] = f"{host}:{port}: {reason}"
    record["proven"] = bool(record["routes"]) and all(
        e.get("proven") for e in record["routes"].values()
    )
    return record


def _why_not(
    drill: ProbeAnswer, plain: ProbeAnswer, sandbox_id: str, proof_header: str, header: str
) -> str | None:
    if drill.error is not None:
        return f"the probe with {header} got no answer ({drill.error})"
    if drill.stamp != sandbox_id:
        seen = f"{proof_header}: {drill.stamp}" if drill.stamp else f"no {proof_header}"
        return (
            f"the probe with {header} answered {drill.status} with {seen}, not {sandbox_id}: "
            "the drill rule did not route it (another route wins, or the mesh has not applied it)"
        )
    if plain.error is None and plain.stamp is not None:
        return (
            f"a probe without {header} came back stamped {proof_header}: {plain.stamp}: "
            "production traffic reaches a drill route"
        )
    return None


def not_in_effect(
    proof: Mapping[str, Any], checks: list[Mapping[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """The finding's message, and every check as an error that did not run."""
    reasons = [str(e.get("reason")) for e in proof["routes"].values() if not e.get("proven")]
    message = (
        "the drill route is not proven in effect ("
        + ("; ".join(reasons) or "no route to probe")
        + "): no smoke check ran, since it could reach production instead of the sandbox. Check "
        "the route objects in the report's manifest, that the mesh applied them (istioctl "
        "analyze / proxy-config routes, or the HTTPRoute status), and re-run"
    )
    results = [
        {
            "name": c.get("name"),
            "kind": c.get("kind"),
            "target": c.get("target"),
            "status": "error",
            "latency_ms": None,
            "observed": None,
            "expectation": "",
            "detail": f"{ROUTE_NOT_IN_EFFECT}: not run, the drill route is not proven in effect",
            "warmup": bool(c.get("warmup")),
        }
        for c in checks
    ]
    return message, results


def via_production_host(manifest: Mapping[str, Any], proof: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with each proven routed HTTP service pointed at its production host.

    Its checks then take the production path with the signed context, as a caller would; the
    entry keeps the sandbox URL under ``sandbox_url``.
    """
    routed = dict(manifest)
    services = {name: dict(entry) for name, entry in (manifest.get("services") or {}).items()}
    for name, entry in (proof.get("routes") or {}).items():
        service = services.get(name)
        if not entry.get("proven") or not service or service.get("kind") != "http":
            continue
        endpoint = dict(service.get("endpoint") or {})
        host = str(entry["host"])
        url = f"http://{host}" + ("" if int(entry["port"]) == 80 else f":{entry['port']}")
        service["sandbox_url"] = endpoint.get("url")
        service["endpoint"] = {**endpoint, "url": url}
        service["via_route"] = f"{host}:{entry['port']}"
        services[name] = service
    routed["services"] = services
    return routed
