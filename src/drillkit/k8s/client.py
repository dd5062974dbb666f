"""The few API verbs drillkit needs, over a ``kubernetes`` ApiClient: get, list, apply, delete.

Apply is create, and on 409 AlreadyExists a JSON merge patch; delete takes 404 as done. Errors
become DrillErrors: 5xx and connection trouble are transient, the rest name the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from drillkit.exceptions import DrillError, InvalidInputError, SandboxError, TransientDrillError
from drillkit.k8s.kinds import Kind

MERGE_PATCH = "application/merge-patch+json"
_OBJECT = {200: "object", 201: "object", 202: "object"}
_CURRENT: ContextVar[Kube | None] = ContextVar("drillkit_kube", default=None)
REQUEST_TIMEOUT = 30.0


class Kube:
    """A thin verb layer on an ApiClient (from ``KubernetesHook(...).api_client``)."""

    def __init__(self, api: Any, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        what: str,
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map=_OBJECT,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise api_error(exc.status, exc.body, what=what, method=method) from exc
        except HTTPError as exc:
            raise TransientDrillError(
                f"cannot reach the Kubernetes API server to {method} {what} ({exc}); check the "
                "connection's kubeconfig and that the API server is up",
                code="K8S_UNAVAILABLE",
            ) from exc

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self._call(
                "GET",
                kind.path(namespace=namespace, name=name),
                what=kind.describe(name, namespace),
            )
        except DrillError as exc:
            if exc.details.get("status") == 404:
                return None
            raise

    def list(
        self, kind: Kind, *, namespace: str | None = None, selector: str = ""
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` (in ``namespace``, or in all namespaces), filtered by labels."""
        query = {"labelSelector": selector} if selector else {}
        listed = self._call(
            "GET",
            kind.path(namespace=namespace),
            query=query,
            what=f"{kind.plural} ({selector or 'all'})",
        )
        return list(listed.get("items") or [])

    def create(self, kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self._call(
            "POST",
            kind.path(namespace=meta.get("namespace")),
            body=dict(obj),
            what=kind.describe(meta["name"], meta.get("namespace")),
        )

    def patch(
        self, kind: Kind, name: str, patch: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return self._call(
            "PATCH",
            kind.path(namespace=namespace, name=name),
            body=dict(patch),
            content_type=MERGE_PATCH,
            what=kind.describe(name, namespace),
        )

    def apply(self, kind: Kind, obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """Create ``obj``; if it exists, merge-patch it to match. Returns (stored, action)."""
        try:
            return self.create(kind, obj), "created"
        except DrillError as exc:
            if exc.details.get("status") != 409:
                raise
        meta = obj["metadata"]
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        return self.patch(kind, meta["name"], patch, namespace=meta.get("namespace")), "patched"

    def delete(self, kind: Kind, name: str, *, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone (404 is done, not an error).

        A namespace already being deleted answers 409 Conflict ("The system is ensuring all
        content is removed from this namespace"): its deletion is in progress, which is what was
        asked, so that is True too, not an error.
        """
        try:
            self._call(
                "DELETE",
                kind.path(namespace=namespace, name=name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
                what=kind.describe(name, namespace),
            )
        except DrillError as exc:
            if exc.details.get("status") == 404:
                return False
            if exc.details.get("status") == 409 and kind.plural == "namespaces":
                return True
            raise
        return True

    def pod_log(self, namespace: str, pod: str, *, tail_lines: int = 200) -> str:
        """The last ``tail_lines`` lines a pod's container wrote (``GET .../pods/NAME/log``,
        text/plain; at most 256 KiB)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = f"the log of pod {pod} in namespace {namespace}"
        try:
            response = self.api.call_api(
                f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                "GET",
                query_params=[("tailLines", str(tail_lines)), ("limitBytes", str(256 * 1024))],
                header_params={"Accept": "text/plain"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise api_error(exc.status, exc.body, what=what, method="GET") from exc
        except HTTPError as exc:
            raise TransientDrillError(
                f"cannot reach the Kubernetes API server to read {what} ({exc})",
                code="K8S_UNAVAILABLE",
            ) from exc
        return bytes(response.data).decode("utf-8", errors="replace")

    def terminating(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Whether the object exists and is being deleted (``metadata.deletionTimestamp``)."""
        obj = self.get(kind, name, namespace)
        return bool(obj and (obj.get("metadata") or {}).get("deletionTimestamp"))


def api_error(status: int | None, body: Any, *, what: str, method: str) -> DrillError:
    """A DrillError for an API error response, naming what was refused and how to fix it."""
    import json

    message = str(body)
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = json.loads(body).get("message", message)
    details = {"status": status, "object": what}
    if status == 403 and _namespace_terminating(body):
        # NamespaceLifecycle admission: nothing can be created in a namespace being deleted. Not
        # an RBAC problem: the namespace will be gone shortly, and a retry starts afresh.
        return TransientDrillError(
            f"cannot {method} {what}: its namespace is still being deleted ({message}); a "
            "retry once it is gone starts afresh",
            code="K8S_NAMESPACE_TERMINATING",
            **details,
        )
    if status in (401, 403):
        return SandboxError(
            f"the Kubernetes API refused to {method} {what} ({status}: {message}); grant the "
            "connection's service account the RBAC drillkit needs (see the README)",
            code="K8S_FORBIDDEN",
            **details,
        )
    if status == 422 or status == 400:
        return InvalidInputError(
            f"the Kubernetes API rejected {what} as invalid: {message}; fix the drill spec "
            "(or the source cluster) so the object fits the API's schema",
            code="K8S_OBJECT_INVALID",
            **details,
        )
    if status in (404, 405, 409, 410) or (status is not None and status < 500 and status != 429):
        return SandboxError(
            f"{method} {what} failed ({status}: {message})", code=f"K8S_{status}", **details
        )
    return TransientDrillError(
        f"{method} {what} failed ({status}: {message}); the API server is busy or unavailable, "
        "the task will retry",
        code="K8S_UNAVAILABLE",
        **details,
    )


def _namespace_terminating(body: Any) -> bool:
    """A 403 Status whose cause is NamespaceTerminating (k8s.io/apimachinery StatusCause)."""
    import json

    try:
        status = json.loads(body) if isinstance(body, str | bytes) else body
        causes = (status.get("details") or {}).get("causes") or []
    except (TypeError, ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


@contextlib.contextmanager
def cluster(api: Any) -> Iterator[Kube]:
    """Make ``api`` the cluster the drill stages talk to, for the duration of the block."""
    kube = api if isinstance(api, Kube) else Kube(api)
    token = _CURRENT.set(kube)
    try:
        yield kube
    finally:
        _CURRENT.reset(token)


def current() -> Kube:
    """The cluster connection set by ``cluster(api)`` (the Kubernetes operators set it)."""
    kube = _CURRENT.get()
    if kube is None:
        raise InvalidInputError(
            "this drill needs a Kubernetes connection: run it through drillkit's Kubernetes "
            "operators (set kubernetes_conn_id in the drill spec) or wrap the call in "
            "drillkit.k8s.client.cluster(api_client)",
            code="K8S_NOT_CONNECTED",
        )
    return kube


def api_from_kubeconfig(path: str, *, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig file, for the command line (operators use the hook)."""
    from kubernetes import config

    try:
        return config.new_client_from_config(config_file=path, context=context)
    except (OSError, config.ConfigException) as exc:
        raise InvalidInputError(f"cannot load kubeconfig {path}: {exc}") from exc
