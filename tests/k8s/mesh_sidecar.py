"""A stand-in for the drill workers' mesh sidecar: a loopback HTTP proxy routing by the objects
in the Kubernetes API emulator, as the documents below say Istio / Gateway API meshes do.

A test maps the production host name to this proxy's loopback address through drillkit's one
resolver seam (``drillkit.routing.resolve.lookup``), so a request drillkit sends to the
production host reaches the "sidecar", which picks a route and forwards to the endpoints of the
destination Service (loopback HTTP servers registered in EndpointSlices).

Each behaviour carries its reference. Anything the stand-in does not model raises
``NotModelled`` (recorded in ``unmodelled``, answered 599): a test that ends with an entry
there has met configuration this stand-in cannot judge, never a pass.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
# Keys of an Istio HTTPRoute (VirtualService.http[]) this stand-in reads. "timeout" and
# "retries" are accepted but not modelled: with one destination whose Service has no endpoints
# every try is the same 503 (Envoy UH), and the tests' backends answer at once.
_VS_RULE_KEYS = {"name", "match", "route", "headers", "timeout", "retries"}
_VS_MATCH_KEYS = {"name", "headers", "port"}
_GW_MATCH_KEYS = {"path", "headers", "method"}


class NotModelled(Exception):
    """Configuration whose documented behaviour this stand-in does not implement."""


def _fqdn(host: str, namespace: str) -> str:
    """Istio Destination.host, "Note for Kubernetes users": a short name (no dot) is read
    relative to the namespace of the rule; a fully qualified name is used as is."""
    host = host.lower().rstrip(".")
    if "*" in host:
        raise NotModelled(f"wildcard host {host!r}")
    if "." not in host:
        return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"
    if not host.endswith(f".svc.{CLUSTER_DOMAIN}"):
        raise NotModelled(f"host {host!r} is neither a short name nor a Service FQDN")
    return host


def _service_of(fqdn: str) -> tuple[str, str]:
    name, namespace = fqdn.split(".")[:2]
    return name, namespace


def _caller_fqdn(host: str, caller_namespace: str) -> str:
    """Kubernetes DNS for Services and Pods: a pod's search path completes ``svc`` and
    ``svc.ns`` to ``svc.<ns>.svc.cluster.local``; the caller here uses FQDNs or short names."""
    host = host.lower().rstrip(".")
    if "." not in host:
        return f"{host}.{caller_namespace}.svc.{CLUSTER_DOMAIN}"
    if host.endswith(f".svc.{CLUSTER_DOMAIN}"):
        return host
    raise NotModelled(f"caller host {host!r}")


class MeshSidecar:
    """The sidecar of a pod in ``namespace`` (the drill workers'), listening on loopback ports.

    ``ports``: one listener per production Service port the test dials (0 picks one); the
    listener's port is the port the caller asked for, as an iptables-redirected sidecar sees it.
    """

    def __init__(self, cluster: Any, *, namespace: str, ports: int = 1) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.count = ports
        self.ports: list[int] = []
        self.unmodelled: list[str] = []
        self.log: list[dict[str, Any]] = []  # every request: host, port, route, status
        self._servers: list[ThreadingHTTPServer] = []

    def __enter__(self) -> MeshSidecar:
        for _ in range(self.count):
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            server.daemon_threads = True
            self._servers.append(server)
            self.ports.append(server.server_address[1])
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def port(self) -> int:
        return self.ports[0]

    # -- routing ------------------------------------------------------------------------------

    def route(
        self, method: str, host: str, port: int, path: str, headers: dict[str, str]
    ) -> tuple[str, str | None, int | None, dict[str, str]]:
        """(what, destination fqdn or None, destination port, response headers to set).

        ``what``: "route" (forward), or "404" when routes exist but none matches.
        """
        fqdn = _caller_fqdn(host, self.namespace)
        routes = self._http_routes(fqdn, port)
        if routes:
            return self._gateway_api(routes, method, path, headers, port)
        services = self._virtual_services(fqdn)
        if len(services) > 1:
            # IST0109 ConflictingMeshGatewayVirtualServiceHosts: several VirtualServices for one
            # host on the mesh gateway conflict; which one Envoy uses is not documented.
            names = sorted(
                f"{v['metadata']['namespace']}/{v['metadata']['name']}" for v in services
            )
            raise NotModelled(f"conflicting VirtualServices for {fqdn}: {names}")
        if not services:
            # No VirtualService: the request goes to the Service it named (Istio's default
            # route for a registry host), on the port it asked for.
            return "route", fqdn, port, {}
        vs = services[0]
        namespace = vs["metadata"]["namespace"]
        # VirtualService.http: "The first rule matching an incoming request is used."
        for rule in vs["spec"].get("http") or []:
            extra = set(rule) - _VS_RULE_KEYS
            if extra:
                raise NotModelled(f"VirtualService rule keys {sorted(extra)}")
            if not self._vs_matches(rule.get("match"), port, headers):
                continue
            destinations = rule.get("route") or []
            if len(destinations) != 1 or set(destinations[0]) - {"destination"}:
                raise NotModelled("a rule with other than one destination (weights)")
            destination = destinations[0]["destination"]
            if set(destination) - {"host", "port"}:
                raise NotModelled(f"destination keys {sorted(destination)}")
            target = _fqdn(destination["host"], namespace)
            # Destination.port: "If a service exposes only a single port it is not required to
            # explicitly select the port": without one the request keeps its own port.
            target_port = (destination.get("port") or {}).get("number", port)
            response = (rule.get("headers") or {}).get("response") or {}
            if set(rule.get("headers") or {}) - {"response"} or set(response) - {"set"}:
                raise NotModelled(f"header operations {rule.get('headers')}")
            return "route", target, target_port, dict(response.get("set") or {})
        # Envoy response flag NR: "No route configured for a given request", answered 404.
        return "404", None, None, {}

    def _virtual_services(self, fqdn: str) -> list[dict[str, Any]]:
        """VirtualServices a sidecar in ``self.namespace`` applies to ``fqdn``.

        exportTo (VirtualService): none means all namespaces, "." the declaring namespace only,
        "*" all, else the named namespaces. gateways: none means the reserved ``mesh`` (all
        sidecars); only ``mesh``-bound ones reach a sidecar. hosts: short names relative to the
        VirtualService's namespace (Destination docs, "Note for Kubernetes users").
        """
        found = []
        for vs in self.cluster.listed("networking.istio.io/v1", "virtualservices"):
            namespace = vs["metadata"]["namespace"]
            spec = vs.get("spec") or {}
            if spec.get("tcp") or spec.get("tls") or spec.get("delegate"):
                raise NotModelled("tcp/tls/delegate VirtualServices")
            export = spec.get("exportTo") or ["*"]
            visible = (
                "*" in export
                or self.namespace in export
                or ("." in export and namespace == self.namespace)
            )
            if not visible or "mesh" not in (spec.get("gateways") or ["mesh"]):
                continue
            if fqdn in {_fqdn(h, namespace) for h in spec.get("hosts") or []}:
                found.append(vs)
        return found

    @staticmethod
    def _vs_matches(matches: list[dict[str, Any]] | None, port: int, headers: dict) -> bool:
        """HTTPMatchRequest: conditions in one match are ANDed, the list is ORed; no match list
        matches every request. headers: ``exact`` string match (header names lower-case)."""
        if not matches:
            return True
        for match in matches:
            extra = set(match) - _VS_MATCH_KEYS
            if extra:
                raise NotModelled(f"VirtualService match keys {sorted(extra)}")
            if "port" in match and match["port"] != port:
                continue
            ok = True
            for name, condition in (match.get("headers") or {}).items():
                if set(condition) != {"exact"}:
                    raise NotModelled(f"header match {condition}")
                if headers.get(name.lower()) != condition["exact"]:
                    ok = False
            if ok:
                return True
        return False

    def _http_routes(self, fqdn: str, port: int) -> list[dict[str, Any]]:
        """GAMMA (Gateway API for Service Mesh): HTTPRoutes whose parentRef is the Service
        (group "", kind Service) apply to requests for it. Only producer routes (in the
        Service's own namespace) are modelled."""
        name, namespace = _service_of(fqdn)
        found = []
        for route in self.cluster.listed("gateway.networking.k8s.io/v1", "httproutes"):
            route_ns = route["metadata"]["namespace"]
            for ref in route["spec"].get("parentRefs") or []:
                if ref.get("kind") != "Service" or ref.get("group", "") != "":
                    continue
                if ref.get("name") != name or ref.get("namespace", route_ns) != namespace:
                    continue
                if route_ns != namespace:
                    raise NotModelled("consumer HTTPRoutes (outside the Service's namespace)")
                if ref.get("port") not in (None, port):
                    continue
                found.append(route)
        return found

    def _gateway_api(
        self, routes: list[dict[str, Any]], method: str, path: str, headers: dict, port: int
    ) -> tuple[str, str | None, int | None, dict[str, str]]:
        """HTTPRouteRule.matches precedence across all rules of the applicable routes
        (gateway-api-httproutes.yaml CRD description): an Exact path; the longest Prefix; a
        method match; the most header matches; the most query param matches; then the oldest
        route; then "{namespace}/{name}" alphabetically; within a route, the first matching
        rule in list order. A rule without matches is a ``/`` prefix match. "When no rules
        matching a request have been successfully attached to the parent a request is coming
        from, a HTTP 404 status code MUST be returned." Query param matches are not modelled."""
        candidates = []
        for route in routes:
            meta = route["metadata"]
            for index, rule in enumerate(route["spec"].get("rules") or []):
                if set(rule) - {"name", "matches", "backendRefs", "filters", "timeouts"}:
                    raise NotModelled(f"HTTPRoute rule keys {sorted(rule)}")
                for match in rule.get("matches") or [{}]:
                    if set(match) - _GW_MATCH_KEYS:
                        raise NotModelled(f"HTTPRoute match keys {sorted(match)}")
                    if not _gw_matches(match, method, path, headers):
                        continue
                    kind, value = _path(match)
                    key = (
                        0 if kind == "Exact" else 1,
                        -len(value),
                        0 if match.get("method") else 1,
                        -len(match.get("headers") or []),
                        meta.get("creationTimestamp", ""),
                        f"{meta['namespace']}/{meta['name']}",
                        index,
                    )
                    candidates.append((key, route, rule))
        if not candidates:
            return "404", None, None, {}
        _key, route, rule = min(candidates, key=lambda c: c[0])
        backends = rule.get("backendRefs") or []
        if len(backends) != 1 or backends[0].get("kind", "Service") != "Service":
            raise NotModelled("a rule with other than one Service backendRef")
        backend = backends[0]
        namespace = backend.get("namespace", route["metadata"]["namespace"])
        stamp: dict[str, str] = {}
        for item in rule.get("filters") or []:
            if item.get("type") != "ResponseHeaderModifier" or set(
                item["responseHeaderModifier"]
            ) - {"set"}:
                raise NotModelled(f"filter {item}")
            stamp.update({h["name"]: h["value"] for h in item["responseHeaderModifier"]["set"]})
        target = f"{backend['name']}.{namespace}.svc.{CLUSTER_DOMAIN}"
        return "route", target, backend.get("port", port), stamp

    # -- endpoints ----------------------------------------------------------------------------

    def endpoints(self, fqdn: str, port: int) -> list[tuple[str, int]]:
        """Ready endpoints of the Service's port, from its EndpointSlices (label
        ``kubernetes.io/service-name``; the slice port has the Service port's name; an endpoint
        whose ``conditions.ready`` is false is not used), as the mesh's EDS reads them."""
        name, namespace = _service_of(fqdn)
        service = self.cluster.stored("v1", "services", name, namespace)
        if service is None:
            return []
        ports = service["spec"].get("ports") or []
        port_names = [p.get("name") for p in ports if p["port"] == port]
        if not port_names:
            return []
        found = []
        for piece in self.cluster.listed(
            "discovery.k8s.io/v1",
            "endpointslices",
            namespace,
            selector=f"kubernetes.io/service-name={name}",
        ):
            ports = [p["port"] for p in piece.get("ports") or [] if p.get("name") == port_names[0]]
            for endpoint in piece.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                found += [(address, p) for address in endpoint["addresses"] for p in ports]
        return found

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sidecar = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                port = self.server.server_address[1]
                headers = {k.lower(): v for k, v in self.headers.items()}
                entry: dict[str, Any] = {
                    "method": self.command,
                    "host": host,
                    "port": port,
                    "path": self.path,
                    "headers": headers,
                }
                sidecar.log.append(entry)
                try:
                    what, target, target_port, stamp = sidecar.route(
                        self.command, host, port, self.path, headers
                    )
                except NotModelled as exc:
                    sidecar.unmodelled.append(str(exc))
                    return self._reply(599, {}, f"stand-in: not modelled: {exc}".encode())
                entry["destination"] = target
                if what == "404":
                    return self._reply(404, {}, b"")
                assert target is not None and target_port is not None
                upstream = sidecar.endpoints(target, target_port)
                if not upstream:
                    # Envoy response flag UH: "No healthy upstream hosts in upstream cluster in
                    # addition to 503 response code"; the rule names one destination, so there
                    # is nothing to fail over to. (Whether Envoy stamps route response headers
                    # on this local reply is not modelled: none are set.)
                    entry["status"] = 503
                    return self._reply(503, {}, b"no healthy upstream")
                address, backend_port = upstream[0]
                connection = http.client.HTTPConnection(address, backend_port, timeout=10)
                try:
                    connection.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in ("connection", "content-length"):
                            connection.putheader(name, value)
                    connection.putheader("Content-Length", str(len(body)))
                    connection.endheaders(body)
                    answer = connection.getresponse()
                    content = answer.read()
                    status, answer_headers = answer.status, dict(answer.getheaders())
                finally:
                    connection.close()
                # VirtualService headers.response.set / ResponseHeaderModifier.set: overwrite.
                answer_headers.update(stamp)
                entry["status"] = status
                self._reply(status, answer_headers, content)

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("connection", "content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler


def _path(match: dict[str, Any]) -> tuple[str, str]:
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    if path.get("type", "PathPrefix") not in ("Exact", "PathPrefix"):
        raise NotModelled(f"path match {path}")
    return path.get("type", "PathPrefix"), path.get("value", "/")


def _gw_matches(match: dict[str, Any], method: str, path: str, headers: dict) -> bool:
    """HTTPRouteMatch: all conditions ANDed. PathPrefix matches element-wise ("/abc" matches
    "/abc" and "/abc/def", not "/abcd"); header type Exact (default); method exact."""
    kind, value = _path(match)
    path = path.split("?", 1)[0]
    if kind == "Exact" and path != value:
        return False
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return False
    if match.get("method") and match["method"] != method:
        return False
    for header in match.get("headers") or []:
        if header.get("type", "Exact") != "Exact":
            raise NotModelled(f"header match {header}")
        if headers.get(header["name"].lower()) != header["value"]:
            return False
    return True


class Backend:
    """A loopback HTTP server standing in for a Service's pods; records every request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                backend.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers)}
                )
                body = f'{{"served_by": "{backend.name}"}}'.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def __enter__(self) -> Backend:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


def service_with_endpoints(
    cluster: Any, *, name: str, namespace: str, port: int, backend_port: int | None
) -> None:
    """A Service with one named port and its EndpointSlice (one ready loopback endpoint, or
    none when ``backend_port`` is None), as the EndpointSlice controller keeps them."""
    cluster.seed(
        {
            "_plural": "services",
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": port}]},
        }
    )
    cluster.seed(
        {
            "_plural": "endpointslices",
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [] if backend_port is None else [{"name": "http", "port": backend_port}],
            "endpoints": []
            if backend_port is None
            else [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }
    )
