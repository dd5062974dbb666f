"""The emulator's object store: resources, verbs, validation, resourceVersions. No HTTP here."""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crd_schema import Cause, VersionSchema
from emulator_errors import ApiError
from label_selectors import field_matcher, label_matcher

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SERVER_MANAGED = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp")


@dataclass(frozen=True)
class Resource:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    status_subresource: bool = False
    has_spec: bool = True  # generation is tracked for objects with a spec
    schema: VersionSchema | None = None
    dns_label_names: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def custom(self) -> bool:
        return self.group not in ("", "apps", "batch", "discovery.k8s.io", "networking.k8s.io")


BUILTINS = (
    Resource("", "v1", "namespaces", "Namespace", False, "namespace", True, False, None, True),
    Resource("", "v1", "services", "Service", True, "service", True, True, None, True),
    Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", False, False),
    Resource("", "v1", "secrets", "Secret", True, "secret", False, False),
    # CloudNativePG's instance pods (the operator stand-in writes them; port-forward reaches them).
    Resource("", "v1", "pods", "Pod", True, "pod", True, True, None, True),
    Resource("apps", "v1", "deployments", "Deployment", True, "deployment", True, True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy"),
    Resource("batch", "v1", "jobs", "Job", True, "job", True, True),
    # What the mesh stand-in (mesh_sidecar.py) reads a Service's endpoints from, as EDS does.
    Resource(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        True,
        "endpointslice",
        False,
        False,
    ),
)
# Used by drillkit but with no upstream CRD in ../shared/crds: served without a schema.
SCHEMALESS = (
    Resource("gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant", True),
    Resource("barmancloud.cnpg.io", "v1", "objectstores", "ObjectStore", True, "objectstore", True),
    Resource("postgresql.cnpg.io", "v1", "imagecatalogs", "ImageCatalog", True, "imagecatalog"),
)
# Served (unvalidated) when ../shared/crds is absent, so non-schema tests still run.
FALLBACK_CRDS = (
    Resource("postgresql.cnpg.io", "v1", "clusters", "Cluster", True, "cluster", True),
    Resource("postgresql.cnpg.io", "v1", "backups", "Backup", True, "backup", True),
    Resource("networking.istio.io", "v1", "virtualservices", "VirtualService", True, "", True),
    Resource("networking.istio.io", "v1beta1", "virtualservices", "VirtualService", True, "", True),
    Resource("networking.istio.io", "v1", "destinationrules", "DestinationRule", True, "", True),
    Resource(
        "networking.istio.io", "v1beta1", "destinationrules", "DestinationRule", True, "", True
    ),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True, "httproute", True),
)


def _cel_causes(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """The CRD's x-kubernetes-validations (CEL) rules, for custom resources with a schema."""
    from crd_cel import collect, violations

    if res.schema is None:
        return []
    rules = res.schema.__dict__.setdefault("_cel_rules", None)
    if rules is None:
        rules = collect(res.schema.openapi)
        res.schema.__dict__["_cel_rules"] = rules
    return violations(rules, obj, old)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """All objects, keyed by (group, plural) then (namespace, name); one lock, one version."""

    def __init__(self, resources: list[Resource], *, service_cidr: str) -> None:
        self.resources = resources
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.lock = threading.RLock()
        self._rv = itertools.count(1000)
        self.version = 999  # the newest resourceVersion handed out
        self.service_cidr = ipaddress.ip_network(service_cidr)
        self._ips = (str(ip) for ip in itertools.islice(self.service_cidr.hosts(), 10, None))
        self.warnings: list[str] = []
        self.requests: list[tuple[str, str, int]] = []
        # What each pod's container wrote (the kubelet keeps it; GET .../pods/NAME/log serves it):
        # (namespace, pod) -> text, set by the test's stand-ins (the CloudNativePG operator).
        self.pod_logs: dict[tuple[str, str], str] = {}
        # How long a deleted namespace stays Terminating before the namespace controller purges it
        # (0: at once). Real deletion is asynchronous: DELETE answers with the namespace in phase
        # Terminating and the controller removes its content, then the namespace
        # (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/ and
        # https://kubernetes.io/docs/tasks/administer-cluster/namespaces/#deleting-a-namespace).
        self.namespace_termination_seconds = 0.0
        self._terminating: dict[str, float] = {}  # namespace -> monotonic time it is purged

    def resource(self, group: str, version: str, plural: str) -> Resource:
        found = self._by_path.get((group, version, plural))
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return found

    def kinds(self, group: str, version: str) -> list[Resource]:
        return [r for r in self.resources if (r.group, r.version) == (group, version)]

    def bucket(self, res: Resource) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault((res.group, res.plural), {})

    def next_rv(self) -> str:
        self.version = next(self._rv)
        return str(self.version)

    # -- helpers -----------------------------------------------------------------------------
    def _present(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = res.group_version, res.kind
        return out

    def _missing(self, res: Resource, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{res.qualified} "{name}" not found',
            name=name,
            group=res.group,
            kind=res.plural,
        )

    def reap(self) -> None:
        """Purge the Terminating namespaces whose termination time has come."""
        import time

        with self.lock:
            for name, at in list(self._terminating.items()):
                if time.monotonic() >= at:
                    del self._terminating[name]
                    self.objects.get(("", "namespaces"), {}).pop(("", name), None)
                    self.next_rv()

    def _require_namespace(self, namespace: str) -> None:
        if namespace in self._terminating:
            # The NamespaceLifecycle admission plugin: "enforces that a Namespace that is
            # undergoing termination cannot have new objects created in it"
            # (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/
            # #namespacelifecycle); apiserver answers 403 Forbidden with cause NamespaceTerminating.
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                causes=[
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            )
        if ("", namespace) not in self.objects.get(("", "namespaces"), {}):
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )

    def _validate(
        self, res: Resource, obj: dict[str, Any], *, strict: bool, old: dict | None = None
    ) -> None:
        name = obj["metadata"].get("name", "")
        causes: list[Cause] = []
        regex, limit = (_LABEL_RE, 63) if res.dns_label_names else (_SUBDOMAIN_RE, 253)
        if not name or len(name) > limit or not regex.match(name):
            what = "RFC 1123 label" if res.dns_label_names else "RFC 1123 subdomain"
            causes.append(
                Cause(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'metadata.name: Invalid value: "{name}": a lowercase {what} must consist of '
                    "lower case alphanumeric characters, '-' or '.', and must start and end with "
                    "an alphanumeric character",
                )
            )
        for key in ("labels", "annotations"):
            values = obj["metadata"].get(key) or {}
            for label, value in values.items():
                if not isinstance(value, str):
                    causes.append(
                        Cause(
                            f"metadata.{key}",
                            "FieldValueInvalid",
                            f"metadata.{key}.{label}: Invalid value: must be a string",
                        )
                    )
                elif key == "labels" and (
                    len(value) > 63
                    or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value)
                ):
                    causes.append(
                        Cause(
                            "metadata.labels",
                            "FieldValueInvalid",
                            f'metadata.labels: Invalid value: "{value}": a valid label value '
                            "must be 63 characters or less and consist of alphanumerics, "
                            "'-', '_' or '.'",
                        )
                    )
        if res.schema is not None:
            removed, schema_causes = res.schema.admit(obj)
            causes += schema_causes
            causes += _cel_causes(res, obj, old)
            for path in removed:
                if strict:
                    raise ApiError(
                        400, "BadRequest", f'strict decoding error: unknown field "{path}"'
                    )
                self.warnings.append(f'unknown field "{path}"')
        if res.plural == "services":
            causes += self._service_causes(obj)
        if causes:
            message = "; ".join(c.message for c in causes)
            if len(causes) > 1:
                message = f"[{', '.join(c.message for c in causes)}]"
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind}{"." + res.group if res.group else ""} "{name}" is invalid: {message}',
                name=name,
                group=res.group,
                kind=res.kind,
                causes=[c.to_status() for c in causes],
            )

    def _service_causes(self, obj: dict[str, Any]) -> list[Cause]:
        spec = obj.setdefault("spec", {})
        causes = []
        cluster_ip = spec.get("clusterIP")
        if cluster_ip in (None, ""):
            spec["clusterIP"] = next(self._ips)
        elif cluster_ip != "None":
            try:
                inside = ipaddress.ip_address(cluster_ip) in self.service_cidr
            except ValueError:
                inside = False
            if not inside:
                causes.append(
                    Cause(
                        "spec.clusterIPs",
                        "FieldValueInvalid",
                        f'spec.clusterIPs: Invalid value: ["{cluster_ip}"]: failed to allocate '
                        f"IP {cluster_ip}: the provided IP is not in the valid range "
                        f"({self.service_cidr})",
                    )
                )
        spec["clusterIPs"] = [spec["clusterIP"]]
        ports = spec.get("ports") or []
        if not ports and spec.get("clusterIP") != "None":
            causes.append(Cause("spec.ports", "FieldValueRequired", "spec.ports: Required value"))
        for index, port in enumerate(ports):
            number = port.get("port")
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append(
                    Cause(
                        f"spec.ports[{index}].port",
                        "FieldValueInvalid",
                        f"spec.ports[{index}].port: Invalid value: {number}: must be between 1 "
                        "and 65535, inclusive",
                    )
                )
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", number)
        spec.setdefault("type", "ClusterIP")
        return causes

    def _normalize_builtin(self, res: Resource, obj: dict[str, Any], old: dict | None) -> None:
        if res.plural == "secrets":
            data = obj.get("data") or {}
            for key, value in data.items():
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError) as exc:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'Secret "{obj["metadata"]["name"]}" is invalid: '
                        f"data[{key}]: Invalid value: illegal base64 data",
                    ) from exc
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            if data:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        if res.plural == "namespaces":
            obj["metadata"].setdefault("labels", {})
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = (old or {}).get("status") or {"phase": "Active"}

    # -- verbs -------------------------------------------------------------------------------
    def create(
        self, res: Resource, namespace: str | None, body: Any, *, dry_run: bool, strict: bool
    ) -> dict[str, Any]:
        obj = self._body(res, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        with self.lock:
            if res.namespaced:
                self._require_namespace(namespace or "")
            for key in SERVER_MANAGED:
                meta.pop(key, None)
            if res.status_subresource and res.custom:
                obj.pop("status", None)
            self._normalize_builtin(res, obj, None)
            self._validate(res, obj, strict=strict)
            key = (namespace or "", meta["name"])
            bucket = self.bucket(res)
            if key in bucket:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{res.qualified} "{meta["name"]}" already exists',
                    name=meta["name"],
                    group=res.group,
                    kind=res.plural,
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if res.has_spec:
                meta["generation"] = 1
            if dry_run:
                meta["resourceVersion"] = ""
                return self._present(res, obj)
            meta["resourceVersion"] = self.next_rv()
            bucket[key] = obj
            return self._present(res, obj)

    def _body(self, res: Resource, namespace: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        kind, version = obj.get("kind"), obj.get("apiVersion")
        if kind not in (None, res.kind) or version not in (None, res.group_version):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({version}) does not match the "
                f"expected API version ({res.group_version}) or kind {kind} is not {res.kind}",
            )
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.bucket(res).get((namespace or "", name))
            if obj is None:
                raise self._missing(res, name)
            return self._present(res, obj)

    def list(
        self, res: Resource, namespace: str | None, *, labels: str, fields: str
    ) -> dict[str, Any]:
        match_labels, match_fields = label_matcher(labels), field_matcher(fields)
        with self.lock:
            items = [
                self._present(res, obj)
                for (ns, _), obj in sorted(self.bucket(res).items())
                if (namespace is None or ns == namespace)
                and match_labels(obj["metadata"].get("labels") or {})
                and match_fields(obj["metadata"])
            ]
            version = str(self.version)
        if not res.custom:
            for item in items:
                item.pop("apiVersion"), item.pop("kind")
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.group_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        subresource: str | None,
        require_version: bool,
        dry_run: bool,
        strict: bool,
    ) -> dict[str, Any]:
        """PUT and PATCH: ``change`` maps the stored object to the requested new one."""
        with self.lock:
            key = (namespace or "", name)
            bucket = self.bucket(res)
            old = bucket.get(key)
            if old is None:
                raise self._missing(res, name)
            new = change(self._present(res, old))
            new = self._body(res, namespace, new)
            meta, old_meta = new["metadata"], old["metadata"]
            if meta.get("name", name) != name:
                raise ApiError(
                    400, "BadRequest", "the name of the object does not match the name on the URL"
                )
            wanted = meta.get("resourceVersion")
            if require_version and not wanted and res.custom:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{res.kind}.{res.group} "{name}" is invalid: '
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                )
            if wanted and wanted != old_meta["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    name=name,
                    group=res.group,
                    kind=res.plural,
                )
            for field_name in SERVER_MANAGED:
                if field_name in old_meta:
                    meta[field_name] = old_meta[field_name]
                else:
                    meta.pop(field_name, None)
            meta["name"] = name
            if subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
            elif res.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            self._normalize_builtin(res, new, old)
            self._validate(res, new, strict=strict, old=old)
            body = {k: v for k, v in new.items() if k not in ("metadata", "status")}
            old_body = {k: v for k, v in old.items() if k not in ("metadata", "status")}
            if res.has_spec and body != old_body:
                new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
            if dry_run:
                return self._present(res, new)
            if new == old:
                return self._present(res, old)  # a no-op write keeps its resourceVersion
            new["metadata"]["resourceVersion"] = self.next_rv()
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                del bucket[key]
            else:
                bucket[key] = new
            return self._present(res, new)

    def delete(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        options: dict[str, Any],
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        with self.lock:
            key = (namespace or "", name)
            bucket = self.bucket(res)
            obj = bucket.get(key)
            if obj is None:
                raise self._missing(res, name)
            pre = (options or {}).get("preconditions") or {}
            for field_name in ("uid", "resourceVersion"):
                if pre.get(field_name) and pre[field_name] != obj["metadata"].get(field_name):
                    raise ApiError(
                        409,
                        "Conflict",
                        f"Operation cannot be fulfilled on {res.qualified} "
                        f'"{name}": Precondition failed: {field_name} in precondition: '
                        f"{pre[field_name]}, {field_name} in object meta: "
                        f"{obj['metadata'].get(field_name)}",
                    )
            if dry_run:
                return self._present(res, obj)
            if res.plural == "namespaces":
                if name in self._terminating:
                    # kube-apiserver's namespace storage: a second DELETE while the namespace
                    # controller is still finalizing is a 409 Conflict (pkg/registry/core/
                    # namespace/storage/storage.go), not a success.
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on namespaces "{name}": The system is '
                        "ensuring all content is removed from this namespace.  Upon completion, "
                        "this namespace will automatically be purged by the system.",
                        name=name,
                        kind="namespaces",
                    )
                for (_group, plural), objects in self.objects.items():
                    for child in [k for k in objects if k[0] == name and plural != "namespaces"]:
                        del objects[child]
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["status"] = {"phase": "Terminating"}
                obj["metadata"]["resourceVersion"] = self.next_rv()
                gone = self._present(res, obj)
                if self.namespace_termination_seconds > 0:
                    import time

                    self._terminating[name] = time.monotonic() + self.namespace_termination_seconds
                else:
                    del bucket[key]
                return gone
            if obj["metadata"].get("finalizers"):
                obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
                obj["metadata"]["resourceVersion"] = self.next_rv()
                return self._present(res, obj)
            del bucket[key]
            self.next_rv()
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": res.group,
                    "kind": res.plural,
                    "uid": obj["metadata"]["uid"],
                },
            }
