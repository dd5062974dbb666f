"""Garbage collection of local sandboxes whose expiry has passed (found by their on-disk label).

A crash can leave a running sandbox behind; this finds it by label and removes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from drillkit.sandbox.base import valid_sandbox_id
from drillkit.sandbox.local import LABEL, LocalSandboxBackend
from drillkit.state import read_json
from drillkit.timeutil import isoformat, parse_iso, utcnow

# A directory with no readable label is only collected once it is clearly abandoned.
UNLABELLED_GRACE = timedelta(hours=1)


def collect_local(
    *, root: Path | None = None, now: datetime | None = None, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Remove expired sandboxes under ``root``; return one entry per sandbox removed (or due)."""
    backend = LocalSandboxBackend(root=root)
    now = now or utcnow()
    removed: list[dict[str, Any]] = []
    if not backend.root.exists():
        return removed
    for directory in sorted(backend.root.iterdir()):
        if not directory.is_dir() or not valid_sandbox_id(directory.name):
            continue
        label = read_json(directory / LABEL)
        if label is None:
            age = now - datetime.fromtimestamp(directory.stat().st_mtime, now.tzinfo)
            if age < UNLABELLED_GRACE:
                continue
            expires, reason = None, f"no label, untouched for {age}"
        else:
            expires = parse_iso(label.get("expires_at"))
            if expires is None or expires > now:
                continue
            reason = f"expired at {isoformat(expires)}"
        entry = {
            "kind": "local-sandbox",
            "id": directory.name,
            "drill_id": (label or {}).get("drill_id"),
            "path": str(directory),
            "reason": reason,
        }
        if not dry_run:
            entry["result"] = backend.teardown(directory.name)
        removed.append(entry)
    return removed
