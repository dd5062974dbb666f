"""Pure statistics of one fault phase: fallback, error, latency, replay identity, schema failures.

Every rate is carried as ``count`` over ``total`` (the escalation compares exact fractions); the
``percent`` beside them is for people.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drillkit.chain.model import TIER_HEADER, FaultPhase

SchemaCheck = Callable[[bytes], str | None]  # None when the body fits, else why not


@dataclass(frozen=True)
class Answer:
    """One synthetic request's outcome. ``status`` None: no HTTP answer (timeout, refused)."""

    key: str
    status: int | None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    latency: float = 0.0
    error: str | None = None
    sent: bool = True

    @property
    def tier(self) -> str | None:
        return self.headers.get(TIER_HEADER)

    @property
    def is_error(self) -> bool:
        """The chain did not answer: no response, or a 5xx (an abort no tier absorbed)."""
        return self.status is None or self.status >= 500

    @property
    def is_fallback(self) -> bool:
        """Answered by a tier other than primary, as the answering tier stamped itself.

        Behaviour, not configuration: no request header and no weight share counts here."""
        return self.tier is not None and self.tier != "primary"

    @property
    def is_untagged(self) -> bool:
        """An answer no tier stamped: who served it is unknown (counted apart, never guessed)."""
        return self.status is not None and self.status < 500 and self.tier is None


def rate(count: int, total: int) -> dict[str, Any]:
    percent = round(100 * count / total, 4) if total else None
    return {"count": count, "total": total, "percent": percent}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every value reported was observed)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def schema_check(schema: Mapping[str, Any] | None) -> SchemaCheck | None:
    if schema is None:
        return None
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)

    def check(body: bytes) -> str | None:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "body is not JSON"
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"{where}: {error.message}"[:300]

    return check


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def phase_figures(
    phase: FaultPhase,
    first: Sequence[Answer],
    replays: Sequence[tuple[Answer, Answer]],
    *,
    budget: float,
    check: SchemaCheck | None,
) -> dict[str, Any]:
    """The phase's entry in ``drillkit.chaos/v1``: rates over the first sends, replays apart."""
    sent = [a for a in first if a.sent]
    errors = [a for a in sent if a.is_error]
    fallback = [a for a in sent if a.is_fallback]
    tiers = Counter(a.tier or "untagged" for a in sent if a.status is not None)
    by_tier = Counter(a.tier for a in fallback)
    untagged = [a for a in sent if a.is_untagged]
    latencies = [a.latency for a in sent]
    over = sum(1 for value in latencies if value > budget)
    schema: dict[str, Any] | None = None
    if check is not None:
        checked = [a for a in sent if a.status is not None and 200 <= a.status < 300]
        failures = [(a.key, why) for a in checked if (why := check(a.body)) is not None]
        schema = {
            **rate(len(failures), len(checked)),
            "samples": [{"key": k, "why": why} for k, why in failures[:5]],
        }
    compared = [(a, b) for a, b in replays if a.status is not None and b.status is not None]
    mismatched = [a.key for a, b in compared if (a.status, a.body) != (b.status, b.body)]
    return {
        "name": phase.name,
        "fault": phase.to_dict(),
        "requests": {"planned": len(first), "sent": len(sent), "not_sent": len(first) - len(sent)},
        "complete": len(sent) == len(first),
        "fallback_rate": {**rate(len(fallback), len(sent)), "by_tier": dict(by_tier)},
        "untagged_rate": rate(len(untagged), len(sent)),
        "error_rate": {
            **rate(len(errors), len(sent)),
            "samples": [a.error or f"HTTP {a.status}" for a in errors[:5]],
        },
        "tiers": dict(tiers),
        "latency_ms": {
            "p50": _ms(percentile(latencies, 50)),
            "p95": _ms(percentile(latencies, 95)),
            "max": _ms(max(latencies) if latencies else None),
            "budget": _ms(budget),
        },
        "over_budget_rate": rate(over, len(sent)),
        "replay_mismatch_rate": {
            **rate(len(mismatched), len(compared)),
            "pairs": len(replays),
            "unanswered": len(replays) - len(compared),
            "mismatched_keys": mismatched[:10],
        },
        "schema_failure_rate": schema,
    }
