"""Garbage collection of drill-owned Kubernetes objects whose expiry annotation has passed.

Found by label (``app.kubernetes.io/managed-by=drillkit``), never by name: routes first (they sit
in production namespaces), then drill namespaces (which take everything inside with them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drillkit.exceptions import DrillError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import NAMESPACE, Kind
from drillkit.k8s.routes import owned_routes
from drillkit.timeutil import isoformat, parse_iso, utcnow


def _expiry(obj: dict[str, Any]) -> datetime | None:
    value = (obj["metadata"].get("annotations") or {}).get(objects.EXPIRES_ANNOTATION)
    try:
        return parse_iso(value)
    except (TypeError, ValueError):
        return None


def collect(
    kube: Kube, *, now: datetime | None = None, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Delete expired drill routes and namespaces; one entry per object removed (or due).

    An object without a readable expiry is left alone: GC removes only what it can prove expired.
    A namespace already Terminating is reported as in progress (deleting it again is a 409 on a
    real API server); an object the API refuses to delete is reported with the error and GC
    goes on with the others.
    """
    now = now or utcnow()
    candidates: list[tuple[Kind, dict[str, Any]]] = [
        *owned_routes(kube, objects.OWNED),
        *((NAMESPACE, ns) for ns in kube.list(NAMESPACE, selector=objects.OWNED)),
    ]
    removed: list[dict[str, Any]] = []
    for kind, obj in candidates:
        expires = _expiry(obj)
        if expires is None or expires > now:
            continue
        meta = obj["metadata"]
        entry = {
            "kind": kind.kind,
            "id": meta["name"],
            "namespace": meta.get("namespace"),
            "drill_id": (meta.get("labels") or {}).get(objects.DRILL_ID_LABEL),
            "sandbox": (meta.get("labels") or {}).get(objects.SANDBOX_LABEL),
            "reason": f"expired at {isoformat(expires)}",
        }
        if meta.get("deletionTimestamp"):
            entry["removed"], entry["reason"] = True, f"{entry['reason']}; deletion in progress"
        elif not dry_run:
            try:
                entry["removed"] = kube.delete(kind, meta["name"], namespace=meta.get("namespace"))
            except DrillError as exc:  # one refusal must not stop the rest of the collection
                entry["removed"], entry["error"] = False, f"{exc.code}: {exc}"
        removed.append(entry)
    return removed
