"""Garbage collection of local sandboxes (found by their on-disk label).

A sandbox is collected when its expiry has passed, or at once when it is still ``provisioning``
and the process provisioning it is gone (killed mid-restore: nobody will finish it). A ready
sandbox belongs to its drill run and only expires (see ``sandbox/owner.py`` for the rule).
Collecting stops a running server first, then deletes the directory.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from drillkit.sandbox.base import valid_sandbox_id
from drillkit.sandbox.local import LABEL, LocalSandboxBackend
from drillkit.sandbox.owner import owner_gone
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
            owner = label.get("owner")
            if label.get("state") == "provisioning" and owner_gone(owner):
                reason = f"its provisioning process (pid {owner['pid']}) is gone"
            elif expires is None or expires > now:
                continue
            else:
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
