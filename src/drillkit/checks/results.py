"""The result model of smoke checks and the ``drillkit.validation/v1`` document built from it.

Statuses: ``passed`` and ``failed`` mean the check ran and judged; ``error`` means it could not run
or judge (never a pass); ``skipped`` means it did not apply.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from drillkit.exceptions import CheckError, InvalidInputError
from drillkit.findings import Finding
from drillkit.timeutil import isoformat

VALIDATION_SCHEMA = "drillkit.validation/v1"

Status = Literal["passed", "failed", "error", "skipped"]

# Finding codes of smoke checks. Part of the contract: reports and alerts key on them.
SANDBOX_UNREACHABLE = "SANDBOX_UNREACHABLE"
TARGET_NOT_IN_MANIFEST = "TARGET_NOT_IN_MANIFEST"
TARGET_KIND_MISMATCH = "TARGET_KIND_MISMATCH"
WRITE_CHECK_REFUSED = "WRITE_CHECK_REFUSED"
WRITE_IN_READ_ONLY_CHECK = "WRITE_IN_READ_ONLY_CHECK"
CHECK_NOT_PERMITTED = "CHECK_NOT_PERMITTED"
CHECK_MULTIPLE_STATEMENTS = "CHECK_MULTIPLE_STATEMENTS"
CHECK_ENDED_TRANSACTION = "CHECK_ENDED_TRANSACTION"
SANDBOX_NETWORK_OPEN = "SANDBOX_NETWORK_OPEN"
REDIRECT_OUTSIDE_MANIFEST = "REDIRECT_OUTSIDE_MANIFEST"
CHECK_TIMED_OUT = "CHECK_TIMED_OUT"
CHECK_ERRORED = "CHECK_ERRORED"
DATA_CORRUPTION = "DATA_CORRUPTION"
INDEX_CORRUPTION = "INDEX_CORRUPTION"
AMCHECK_UNAVAILABLE = "AMCHECK_UNAVAILABLE"
RECOVERY_POINT_MISMATCH = "RECOVERY_POINT_MISMATCH"
RECOVERY_POINT_ONE_SIDED = "RECOVERY_POINT_ONE_SIDED"
NO_CHECKS_RAN = "NO_CHECKS_RAN"

# Findings that make the run COULD NOT VERIFY even when they come from a warm-up check: they say
# the drill could not reach, or refused to touch, what it was meant to test.
VERDICT_CODES = frozenset(
    {
        SANDBOX_UNREACHABLE,
        TARGET_NOT_IN_MANIFEST,
        "PRODUCTION_TARGET_REFUSED",
        WRITE_CHECK_REFUSED,
        REDIRECT_OUTSIDE_MANIFEST,
        NO_CHECKS_RAN,
    }
)

# Observed values land in XCom: a runaway text column must not bloat it.
_MAX_OBSERVED_CHARS = 1000


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "not given", as opposed to an explicit null

_COMPARATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "ne": "!="}
_ALLOWED = "equals, gt, gte, lt, lte, eq, ne, between, regex"


@dataclass(frozen=True, kw_only=True)
class Expectation:
    """What an observed value must be: one of equals / comparisons / between / regex, plus rows."""

    equals: Any = UNSET
    comparisons: tuple[tuple[str, int | float], ...] = ()
    between: tuple[int | float, int | float] | None = None
    regex: re.Pattern[str] | None = None
    rows: int | None = None

    @property
    def judges_value(self) -> bool:
        return (
            self.equals is not UNSET
            or bool(self.comparisons)
            or self.between is not None
            or self.regex is not None
        )

    def describe(self) -> str:
        parts = []
        if self.equals is not UNSET:
            parts.append("is NULL" if self.equals is None else f"== {self.equals!r}")
        if self.comparisons:
            parts.append(" and ".join(f"{_COMPARATORS[op]} {n}" for op, n in self.comparisons))
        if self.between is not None:
            parts.append(f"between {self.between[0]} and {self.between[1]}")
        if self.regex is not None:
            parts.append(f"matches /{self.regex.pattern}/")
        if self.rows is not None:
            parts.append(f"rows == {self.rows}")
        return "; ".join(parts)

    def check_value(self, value: Any) -> str | None:
        """None when ``value`` meets the expectation, else a sentence saying why not."""
        shown = _show(value)
        if self.equals is not UNSET and not _equal(value, self.equals):
            return f"observed {shown}, expected {self.describe_value()}"
        number = _number(value) if (self.comparisons or self.between is not None) else None
        if (self.comparisons or self.between is not None) and number is None:
            return f"observed {shown} is not a number, expected {self.describe_value()}"
        for op, bound in self.comparisons:
            if not _compare(op, number, _number(bound)):  # type: ignore[arg-type]
                return f"observed {shown}, expected {_COMPARATORS[op]} {bound}"
        if self.between is not None:
            low, high = (_number(b) for b in self.between)
            if not low <= number <= high:  # type: ignore[operator]
                return f"observed {shown}, expected between {self.between[0]} and {self.between[1]}"
        if self.regex is not None:
            if value is None:
                return f"observed NULL, expected a value matching /{self.regex.pattern}/"
            if not self.regex.search(_as_text(value)):
                return f"observed {shown} does not match /{self.regex.pattern}/"
        return None

    def describe_value(self) -> str:
        return dataclasses.replace(self, rows=None).describe()

    def check_rows(self, count: int) -> str | None:
        if self.rows is not None and count != self.rows:
            return f"query returned {count} rows, expected {self.rows}"
        return None


def parse_expectation(raw: Any, *, allow_rows: bool) -> Expectation:
    """Parse ``{gte: 1000}``-style mappings; InvalidInputError details carry the bad sub-field."""
    allowed = _ALLOWED + (", rows" if allow_rows else "")
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidInputError(f"must be a mapping with one of: {allowed}")
    for key in raw:
        known = key in _COMPARATORS or key in ("equals", "between", "regex", "rows")
        if not known or (key == "rows" and not allow_rows):
            raise InvalidInputError(f"unknown expectation; use one of: {allowed}", field=key)
    families = [
        f
        for f, present in (
            ("equals", "equals" in raw),
            ("comparisons", any(k in raw for k in _COMPARATORS)),
            ("between", "between" in raw),
            ("regex", "regex" in raw),
        )
        if present
    ]
    if len(families) > 1:
        raise InvalidInputError(
            f"combines {' and '.join(families)}; use one of equals, comparisons (gt, gte, lt, lte, "
            "eq, ne; several may be given), between or regex",
            field=next(k for k in raw if k != "rows"),
        )
    if not families and "rows" not in raw:
        raise InvalidInputError(f"says nothing to check; use one of: {allowed}")
    equals = raw.get("equals", UNSET)
    if equals is not UNSET and not (equals is None or isinstance(equals, str | int | float | bool)):
        raise InvalidInputError(
            f"{equals!r} is not a scalar; equals takes a string, number, true/false or null",
            field="equals",
        )
    comparisons = []
    for op in _COMPARATORS:
        if op in raw:
            if _number(raw[op]) is None:
                raise InvalidInputError(
                    f"{raw[op]!r} is not a number; {op} takes a number, e.g. {op}: 1000", field=op
                )
            comparisons.append((op, raw[op]))
    between = raw.get("between")
    if between is not None:
        if (
            not isinstance(between, list)
            or len(between) != 2
            or any(_number(b) is None for b in between)
            or _number(between[0]) > _number(between[1])  # type: ignore[operator]
        ):
            raise InvalidInputError(
                f"{between!r} must be [low, high], two numbers with low <= high", field="between"
            )
        between = (between[0], between[1])
    regex = None
    if "regex" in raw:
        if not isinstance(raw["regex"], str):
            raise InvalidInputError("must be a regular expression string", field="regex")
        try:
            regex = re.compile(raw["regex"])
        except re.error as exc:
            raise InvalidInputError(
                f"{raw['regex']!r} is not a valid regular expression ({exc}); use Python re syntax",
                field="regex",
            ) from exc
    rows = raw.get("rows")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0):
        raise InvalidInputError(f"{rows!r} must be a row count (an integer >= 0)", field="rows")
    return Expectation(
        equals=equals, comparisons=tuple(comparisons), between=between, regex=regex, rows=rows
    )


def _number(value: Any) -> Decimal | None:
    """Numbers only: a bool or a numeric-looking string is not a number to compare."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _compare(op: str, left: Decimal, right: Decimal) -> bool:
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
        "eq": left == right,
        "ne": left != right,
    }[op]


def _equal(observed: Any, expected: Any) -> bool:
    if expected is None or observed is None:
        return expected is None and observed is None
    if isinstance(expected, bool) or isinstance(observed, bool):
        return isinstance(observed, bool) and isinstance(expected, bool) and observed == expected
    if isinstance(expected, int | float):
        number = _number(observed)
        return number is not None and number == _number(expected)
    return (
        isinstance(observed, str | datetime | date | uuid.UUID) and _as_text(observed) == expected
    )


def _as_text(value: Any) -> str:
    """The text a regex or a string equality sees: datetimes in ISO 8601, like the report shows."""
    return value if isinstance(value, str) else str(json_safe(value))


def _show(value: Any) -> str:
    return "NULL" if value is None else repr(json_safe(value))


class EndpointUnreachable(CheckError):
    """The service did not accept a connection (refused, DNS failure, socket missing, silent)."""

    code = SANDBOX_UNREACHABLE


class CheckTimedOut(CheckError):
    """The check used up its time budget."""

    code = CHECK_TIMED_OUT


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a kind runner found; the engine adds name, target, latency and warm-up."""

    status: Status
    observed: Any = None
    expectation: str = ""
    detail: str = ""
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    kind: str
    target: str
    status: Status
    latency_ms: float | None
    observed: Any
    expectation: str
    detail: str
    warmup: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "observed": json_safe(self.observed),
            "expectation": self.expectation,
            "detail": self.detail,
            "warmup": self.warmup,
        }


def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy: datetimes as ISO 8601, decimals as numbers, long text cut."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        if len(value) > _MAX_OBSERVED_CHARS:
            return value[:_MAX_OBSERVED_CHARS] + f"... ({len(value)} characters)"
        return value
    if isinstance(value, datetime):
        return isoformat(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value)[: _MAX_OBSERVED_CHARS // 2].hex()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return json_safe(str(value))


def seconds_text(seconds: float) -> str:
    """``5s``, ``0.5s``: how timeouts are written in details, like the spec writes them."""
    return f"{seconds:g}s"


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (code, subject): an unreachable service is reported once, not per check."""
    seen: dict[tuple[str, str | None], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.code, finding.subject), finding)
    return list(seen.values())


def overall_status(results: list[CheckResult], findings: list[Finding]) -> str:
    """``error`` if anything could not be verified, else ``failed`` if anything failed."""
    if any(r.status == "error" for r in results) or any(
        f.code in VERDICT_CODES and f.severity == "error" for f in findings
    ):
        return "error"
    if any(r.status == "failed" for r in results):
        return "failed"
    return "passed"


def build_validation(
    *, results: list[CheckResult], warmup: list[CheckResult], findings: list[Finding]
) -> dict[str, Any]:
    """The ``drillkit.validation/v1`` document; an empty or all-skipped drill is an error."""
    findings = dedupe(findings)
    if not any(r.status != "skipped" for r in results):
        findings.append(
            Finding(
                code=NO_CHECKS_RAN,
                message="no smoke check ran, so nothing about the restored data is proven: add "
                "at least one check without warmup: true to the drill spec's checks",
                subject=None,
            )
        )
    return {
        "schema": VALIDATION_SCHEMA,
        "status": overall_status(results, findings),
        "results": [r.to_dict() for r in results],
        "warmup": [r.to_dict() for r in warmup],
        "findings": [f.to_dict() for f in findings],
    }
