"""Names of the backup selection policies, shared by spec validation and selection.

Kept apart from pitr so that validating a spec (at DAG-parse time) does not import the catalog.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from drillkit.exceptions import InvalidInputError
from drillkit.timeutil import isoformat

POLICIES = ("latest", "previous", "oldest", "pinned")
# A target a few seconds ahead of this clock is a clock difference, not the future.
FUTURE_LEEWAY = timedelta(seconds=5)


def check_selection(policy: str, target: datetime | None, now: datetime) -> None:
    """Refuse an unknown policy, and a target in the future: every catalog's selection asks."""
    if policy not in POLICIES:
        raise InvalidInputError(
            f"selection policy {policy!r} is unknown; use one of {', '.join(POLICIES)}"
        )
    if target is not None and target > now + FUTURE_LEEWAY:
        raise InvalidInputError(
            f"target time {isoformat(target)} is in the future (now {isoformat(now)}); a drill "
            "restores to a moment that has passed",
            code="TARGET_INVALID",
        )
