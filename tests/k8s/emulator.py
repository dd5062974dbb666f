"""A small Kubernetes API server for tests: real HTTP on loopback, what drillkit uses of the API.

Behaves like kube-apiserver where drillkit can tell: 201 + uid/resourceVersion/creationTimestamp on
create, 409 AlreadyExists/Conflict, 404 NotFound Status objects, label and field selectors, merge
and JSON patch, PUT with resourceVersion preconditions, /status subresources, namespace deletion
that removes what the namespace holds, discovery, and custom objects pruned, defaulted and
validated against the upstream CRD schemas (422 Invalid naming the field).

Namespace deletion passes through phase Terminating for ``store.namespace_termination_seconds``
(0 by default: purged at once): meanwhile a second DELETE is 409 Conflict and creating in it is
403 Forbidden (cause NamespaceTerminating), as on a real API server.

Known differences (tests must not depend on them): no watch (405: drillkit polls with GET); no
server-side apply (415); strategic merge patch on built-ins behaves as a JSON merge patch (lists
are replaced); string formats and list-type uniqueness of CRD schemas are not enforced (their
CEL rules are: crd_cel.py); no admission webhooks or garbage collection by ownerReferences.
RBAC: with ``rbac`` set (``(group, resource, verb)`` rules), requests with the kubeconfig's
token (drillkit) are authorized against it (403 Forbidden otherwise); the harness's own token
is not limited.
pods/portforward (WebSocket) is served by emulator_portforward.py: a seeded Pod's
``status.podIP`` (a loopback address in tests) is where its ports are dialled.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from crd_schema import CrdVersion, load_crds
from emulator_errors import ApiError
from emulator_patches import json_patch, merge_patch
from emulator_portforward import serve_portforward
from emulator_store import BUILTINS, FALLBACK_CRDS, SCHEMALESS, Resource, Store, now_rfc3339
from label_selectors import SelectorError


def discovery_list(store: Store, group: str, version: str) -> dict[str, Any]:
    resources = []
    for res in store.kinds(group, version):
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update"]
        resources.append(
            {
                "name": res.plural,
                "singularName": res.singular or res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": verbs,
            }
        )
        if res.status_subresource:
            resources.append(
                {
                    "name": f"{res.plural}/status",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def discovery_groups(store: Store) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for res in store.resources:
        if res.group and res.version not in groups.setdefault(res.group, []):
            groups[res.group].append(res.version)
    listed = []
    for name, versions in groups.items():
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        listed.append({"name": name, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}


def _resources_from_crds(crds: list[CrdVersion]) -> list[Resource]:
    return [
        Resource(
            crd.group,
            crd.version,
            crd.plural,
            crd.kind,
            crd.namespaced,
            crd.singular,
            crd.status_subresource,
            True,
            crd.schema,
        )
        for crd in crds
    ]


class Emulator:
    """Start with ``start()``; ``url``, ``token`` and ``write_kubeconfig()`` for clients."""

    def __init__(self, *, crd_dir: Path | None, service_cidr: str = "127.0.0.0/8") -> None:
        crds = load_crds(crd_dir) if crd_dir is not None and crd_dir.is_dir() else []
        self.schemas_loaded = bool(crds)
        resources = [*BUILTINS, *SCHEMALESS, *(_resources_from_crds(crds) or FALLBACK_CRDS)]
        self.store = Store(resources, service_cidr=service_cidr)
        self.token = secrets.token_hex(16)  # the test harness's own requests: never limited
        # drillkit's identity (the kubeconfig's token): limited to ``rbac`` when it is set, as a
        # ClusterRole would (https://kubernetes.io/docs/reference/access-authn-authz/rbac/).
        self.drill_token = secrets.token_hex(16)
        self.rbac: frozenset[tuple[str, str, str]] | None = None
        self.denied: list[tuple[str, str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "drillkit", "user": {"token": self.drill_token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "drillkit"}}
            ],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps(self.kubeconfig()))
        return path

    def connect_airflow(self, path: Path, conn_id: str) -> Path:
        """Write the kubeconfig to ``path`` and make it Airflow connection ``conn_id`` (the
        environment way), as KubernetesHook reads it."""
        self.write_kubeconfig(path)
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(path)}}
        )
        return path

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = ""
    ) -> tuple[int, Any]:
        """Raw HTTP to this server, as a test's view of the cluster: ``(status, JSON body)``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": content_type or "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def reset(self) -> None:
        with self.store.lock:
            self.store.objects.clear()
            self.store.warnings.clear()
            self.store.requests.clear()
            self.store._terminating.clear()
            self.store.namespace_termination_seconds = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: Emulator

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for warning in getattr(self, "_warnings", []):
            self.send_header("Warning", f'299 - "{warning}"')
        self.end_headers()
        self.wfile.write(data)
        self.emulator.store.requests.append((self.command, self.path, code))

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError(
                400, "BadRequest", f"the body of the request is not JSON: {exc}"
            ) from exc

    def _handle(self) -> None:
        store = self.emulator.store
        before = len(store.warnings)
        try:
            auth = self.headers.get("Authorization")
            if auth not in (f"Bearer {self.emulator.token}", f"Bearer {self.emulator.drill_token}"):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._limited = auth == f"Bearer {self.emulator.drill_token}"
            store.reap()
            code, body = self._route()
        except ApiError as exc:
            code, body = exc.code, exc.status()
        except SelectorError as exc:
            code, body = 400, ApiError(400, "BadRequest", str(exc)).status()
        if body is None:  # answered on the raw connection (pods/portforward, pods/log)
            store.requests.append((self.command, self.path, code))
            return
        self._warnings = store.warnings[before:]
        self._send(code, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _route(self) -> tuple[int, dict[str, Any] | None]:
        parts_url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts_url.query).items()}
        parts = [p for p in parts_url.path.split("/") if p]
        store = self.emulator.store
        if parts == ["version"]:
            return 200, {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-drillkit-emulator",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": now_rfc3339(),
                "goVersion": "go1.22",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if parts == ["api"]:
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [],
            }
        if parts == ["apis"]:
            return 200, discovery_groups(store)
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            found = [g for g in discovery_groups(store)["groups"] if g["name"] == parts[1]]
            if not found:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 200, {"kind": "APIGroup", "apiVersion": "v1", **found[0]}
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if not store.kinds(group, version):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 200, discovery_list(store, group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        res = store.resource(group, version, rest[0])
        if res.namespaced and namespace is None and len(rest) > 1:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (res.group, res.plural, sub) == ("", "pods", "portforward") and namespace and name:
            self._authorize(res, namespace, name, sub, query)  # before the pod is looked up
            return serve_portforward(self, store, res, namespace, name), None
        if (res.group, res.plural, sub) == ("", "pods", "log") and namespace and name:
            self._authorize(res, namespace, name, sub, query)
            return self._pod_log(res, namespace, name, query)
        if sub not in (None, "status") or (sub == "status" and not res.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._verb(res, namespace, name, sub, query)

    def _pod_log(
        self, res: Resource, namespace: str, name: str, query: dict[str, str]
    ) -> tuple[int, None]:
        """``GET /api/v1/namespaces/{ns}/pods/{name}/log`` (read_namespaced_pod_log): the
        container's output as text/plain, cut to the last ``tailLines`` lines and to
        ``limitBytes`` (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/
        pod-v1/#get-read-log-of-the-specified-pod); 404 Status for a pod that does not exist."""
        store = self.emulator.store
        store.get(res, namespace, name)  # 404 NotFound Status when the pod does not exist
        text = store.pod_logs.get((namespace, name), "")
        if query.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]) :])
        data = text.encode()
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return 200, None

    def _verb(
        self,
        res: Resource,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        store = self.emulator.store
        dry_run = query.get("dryRun") == "All"
        strict = query.get("fieldValidation") == "Strict"
        method = self.command
        self._authorize(res, namespace, name, sub, query)
        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    raise ApiError(
                        405,
                        "MethodNotAllowed",
                        "the drillkit test emulator does not implement watch; poll with GET",
                    )
                return 200, store.list(
                    res,
                    namespace,
                    labels=query.get("labelSelector", ""),
                    fields=query.get("fieldSelector", ""),
                )
            if method == "POST":
                return 201, store.create(
                    res, namespace, self._read_body(), dry_run=dry_run, strict=strict
                )
            if method == "DELETE":
                listed = store.list(
                    res,
                    namespace,
                    labels=query.get("labelSelector", ""),
                    fields=query.get("fieldSelector", ""),
                )
                for item in listed["items"]:
                    store.delete(
                        res,
                        namespace or item["metadata"].get("namespace"),
                        item["metadata"]["name"],
                        {},
                        dry_run=dry_run,
                    )
                return 200, {**listed, "kind": f"{res.kind}List"}
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "GET":
            return 200, store.get(res, namespace, name)
        if method == "DELETE":
            return 200, store.delete(res, namespace, name, self._read_body() or {}, dry_run=dry_run)
        body = self._read_body()
        if method == "PUT":
            return 200, store.update(
                res,
                namespace,
                name,
                lambda _old: body,
                subresource=sub,
                require_version=True,
                dry_run=dry_run,
                strict=strict,
            )
        if method == "PATCH":
            change = self._patcher(res, body)
            return 200, store.update(
                res,
                namespace,
                name,
                change,
                subresource=sub,
                require_version=False,
                dry_run=dry_run,
                strict=strict,
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _authorize(
        self,
        res: Resource,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
    ) -> None:
        """RBAC for drillkit's identity: the request's verb on ``group/resource[/sub]`` must be
        granted, else 403 Forbidden worded as kube-apiserver's authorizer words it."""
        rules = self.emulator.rbac
        if rules is None or not getattr(self, "_limited", False):
            return
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}.get(
            self.command, "delete"
        )
        if name is None and self.command == "GET":
            verb = "watch" if query.get("watch") in ("true", "1") else "list"
        elif name is None and self.command == "DELETE":
            verb = "deletecollection"
        resource = f"{res.plural}/{sub}" if sub else res.plural
        if (res.group, resource, verb) in rules:
            return
        self.emulator.denied.append((res.group, resource, verb))
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        subject = f'{res.qualified} "{name}"' if name else res.qualified
        raise ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "system:serviceaccount:airflow:drillkit" cannot '
            f'{verb} resource "{resource}" in API group "{res.group}"{where}',
            name=name or "",
            group=res.group,
            kind=res.plural,
        )

    def _patcher(self, res: Resource, body: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(
                    400,
                    "BadRequest",
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                )
            return lambda old: json_patch(old, body)
        if content_type == "application/strategic-merge-patch+json" and res.custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json-patch+json, "
                "application/merge-patch+json, application/apply-patch+yaml",
            )
        if content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            return lambda old: merge_patch(old, body)
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the drillkit test emulator does not accept patch type "
            f"{content_type!r} (server-side apply is not emulated)",
        )
