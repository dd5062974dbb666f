"""The sandbox backend Protocol and the helpers every backend shares.

A backend restores a coordinate into an isolated place and returns a ``drillkit.sandbox/v1`` record.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any, Protocol

SCHEMA = "drillkit.sandbox/v1"
LABEL = "drillkit-sandbox.json"  # a sandbox's label on disk, read by `drillkit gc`
_SLUG_RE = re.compile(r"[^a-z0-9]+")


class SandboxBackend(Protocol):
    kind: str

    def provision(
        self,
        coordinate: dict[str, Any],
        *,
        drill_id: str,
        name: str,
        ttl: timedelta,
        sandbox_id: str | None = None,
    ) -> dict[str, Any]:
        """Restore ``coordinate`` and return the sandbox record once it serves traffic."""
        ...

    def teardown(self, sandbox_id: str) -> dict[str, Any]:
        """Stop and delete; an unknown or already removed sandbox is not an error."""
        ...


def new_sandbox_id(name: str) -> str:
    """``<drill slug>-<8 hex>``: unique per call, so two runs never share a sandbox."""
    slug = _SLUG_RE.sub("-", name.lower()).strip("-")[:24] or "drill"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def valid_sandbox_id(value: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", value))
