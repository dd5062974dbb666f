"""Optimistic concurrency for the chain's writes: every patch of an existing object carries the
``resourceVersion`` it was computed from; on 409 Conflict, read again, recompute, retry.

Kubernetes API conventions, "Concurrency Control and Consistency": a write that names a
resourceVersion succeeds only if the object has not changed since that version; otherwise the
server answers 409 Conflict, and "the client must re-read the resource and retry"
(kubernetes/community contributors/devel/sig-architecture/api-conventions.md). A JSON merge patch
replaces lists whole, so without the precondition a patch of ``spec.http`` computed from a stale
read would silently drop a rule someone added in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drillkit.exceptions import DrillError, TransientDrillError
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import Kind

MAX_ATTEMPTS = 5
# stored object -> merge patch of the drill's change, or None when the stored object has it
Change = Callable[[dict[str, Any]], dict[str, Any] | None]


def _conflict(exc: DrillError) -> bool:
    return exc.details.get("status") == 409


def update(
    kube: Kube,
    kind: Kind,
    name: str,
    namespace: str | None,
    change: Change,
    *,
    attempts: int = MAX_ATTEMPTS,
) -> tuple[dict[str, Any] | None, str]:
    """Read, compute the drill's change, patch it with the read's resourceVersion; on 409 do it
    all again, at most ``attempts`` times. Returns (stored, action): action is "patched",
    "unchanged" or "absent" (nothing to patch)."""
    for _ in range(attempts):
        stored = kube.get(kind, name, namespace)
        if stored is None:
            return None, "absent"
        patch = change(stored)
        if patch is None:
            return stored, "unchanged"
        meta = dict(patch.get("metadata") or {})
        meta["resourceVersion"] = stored["metadata"]["resourceVersion"]
        try:
            return kube.patch(kind, name, {**patch, "metadata": meta}, namespace=namespace), (
                "patched"
            )
        except DrillError as exc:
            if not _conflict(exc):
                raise
    raise TransientDrillError(
        f"{kind.describe(name, namespace)} changed under each of {attempts} attempts to write "
        "the drill's change (409 Conflict every time): someone or something keeps editing it; "
        "the task will retry, or find the writer (kubectl get --watch)",
        code="CHAIN_WRITE_CONFLICT",
    )


def ensure(
    kube: Kube, kind: Kind, obj: Mapping[str, Any], change: Change, *, attempts: int = MAX_ATTEMPTS
) -> tuple[dict[str, Any], str]:
    """Create ``obj``, or apply ``change`` to the stored one (optimistically). Returns
    (stored, action): "created", "patched" or "unchanged"."""
    meta = obj["metadata"]
    for _ in range(attempts):
        stored, action = update(kube, kind, meta["name"], meta.get("namespace"), change)
        if stored is not None:
            return stored, action
        try:
            return kube.create(kind, obj), "created"
        except DrillError as exc:
            if not _conflict(exc):  # AlreadyExists: created in between, so update it
                raise
    raise TransientDrillError(
        f"{kind.describe(meta['name'], meta.get('namespace'))} kept appearing and disappearing "
        f"over {attempts} attempts; the task will retry",
        code="CHAIN_WRITE_CONFLICT",
    )


def spec_change(obj: Mapping[str, Any], labels: bool = True) -> Change:
    """The change that makes a stored object's spec (and labels, annotations) the built ones."""

    def change(stored: dict[str, Any]) -> dict[str, Any] | None:
        patch: dict[str, Any] = {}
        if stored.get("spec") != obj.get("spec"):
            # Merge patch: keys the built spec no longer has are removed (null), lists replaced.
            gone = {k: None for k in (stored.get("spec") or {}) if k not in obj["spec"]}
            patch["spec"] = {**gone, **obj["spec"]}
        meta = {}
        for key in ("labels", "annotations") if labels else ():
            wanted = obj["metadata"].get(key) or {}
            have = stored["metadata"].get(key) or {}
            if any(have.get(k) != v for k, v in wanted.items()):
                meta[key] = wanted
        if meta:
            patch["metadata"] = meta
        return patch or None

    return change
