"""PITR checks: prove the restored data is the data as of the recovery target, from both sides.

Ground truth: a row committed before the target is there, one committed after it is not. Marker:
the newest timestamp in the data is at or before the target (and within a tolerance of it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from drillkit.checks.results import (
    RECOVERY_POINT_MISMATCH,
    RECOVERY_POINT_ONE_SIDED,
    UNSET,
    Outcome,
)
from drillkit.checks.sql import begin_read_only, connect, query_failure
from drillkit.exceptions import CheckError, InvalidInputError
from drillkit.findings import Finding
from drillkit.timeutil import human_span, isoformat, parse_duration, parse_target_time

if TYPE_CHECKING:
    from drillkit.checks.engine import CheckContext
    from drillkit.checks.spec import CheckSpec, PitrConfig

PARAM_KEYS = frozenset({"target_time", "tolerance", "before", "after"})
_MODE_KEYS = {
    "truth": frozenset({"before", "after"}),
    "marker": frozenset({"target_time", "tolerance"}),
}


def bind_params(specs: Sequence[CheckSpec], params: Mapping[str, Any] | None) -> list[CheckSpec]:
    """Fill pitr checks' run-time inputs (rendered by the operator) from ``params``.

    ``params`` = ``{target_time, tolerance, before, after}`` for every pitr check, and
    ``{"checks": {name: {...}}}`` for one. A value the spec also sets must agree with it.
    """
    params = dict(params or {})
    unknown = set(params) - PARAM_KEYS - {"checks"}
    if unknown:
        raise InvalidInputError(
            f"params: unknown key(s) {sorted(unknown)}; allowed: checks, "
            f"{', '.join(sorted(PARAM_KEYS))}"
        )
    per_check = params.pop("checks", {}) or {}
    names = {spec.name: spec for spec in specs}
    if not isinstance(per_check, Mapping):
        raise InvalidInputError("params.checks must map a check name to its parameters")
    for name, values in per_check.items():
        spec = names.get(name)
        if spec is None or spec.kind != "pitr" or not isinstance(values, Mapping):
            raise InvalidInputError(
                f"params.checks.{name}: not a pitr check of this drill, or not a mapping; "
                f"pitr checks: {sorted(n for n, s in names.items() if s.kind == 'pitr') or 'none'}"
            )
        allowed = _MODE_KEYS[spec.config.mode]  # type: ignore[union-attr]
        if set(values) - allowed:
            raise InvalidInputError(
                f"params.checks.{name}: {sorted(set(values) - allowed)} do not apply to this "
                f"check; it takes {sorted(allowed)}"
            )
    return [
        _bind(spec, params, per_check.get(spec.name, {})) if spec.kind == "pitr" else spec
        for spec in specs
    ]


def _bind(spec: CheckSpec, shared: Mapping[str, Any], own: Mapping[str, Any]) -> CheckSpec:
    config: PitrConfig = spec.config  # type: ignore[assignment]
    changes: dict[str, Any] = {}
    for key in _MODE_KEYS[config.mode]:
        where = f"params.checks.{spec.name}.{key}" if key in own else f"params.{key}"
        raw = own.get(key, shared.get(key, UNSET))
        if raw is UNSET:
            continue
        value = _convert(key, raw, where)
        current = getattr(config, key)
        if current is not UNSET and current is not None and current != value:
            raise InvalidInputError(
                f"{where}: {raw!r} disagrees with check {spec.name!r}, whose spec sets {key} to "
                f"{current!r}; set it in one place"
            )
        changes[key] = value
    config = dataclasses.replace(config, **changes)
    if config.mode == "truth" and config.before is UNSET:
        raise InvalidInputError(
            f"check {spec.name!r} has no 'before' id (a row committed before the target): set "
            "truth.before in the spec or pass it in params"
        )
    if config.mode == "marker" and config.target_time is None:
        raise InvalidInputError(
            f"check {spec.name!r} has no target_time: set it in the spec or pass the run's "
            "recovery target in params"
        )
    return dataclasses.replace(spec, config=config)


def _convert(key: str, raw: Any, where: str) -> Any:
    if key == "target_time":
        try:
            return parse_target_time(raw)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}", code=exc.code) from exc
    if key == "tolerance":
        return parse_duration(raw, field=where).total_seconds()
    if raw is None and key == "after":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidInputError(f"{where}: {raw!r} must be an id, an integer or a string")
    return raw


def describe(config: PitrConfig) -> str:
    if config.mode == "marker":
        target = isoformat(config.target_time) if config.target_time else "the target"
        text_ = f"marker <= {target}"
        if config.tolerance is not None and config.target_time is not None:
            low = config.target_time - timedelta(seconds=config.tolerance)
            text_ += f" and >= {isoformat(low)}"
        return text_
    parts = [f"{config.id_column}={config.before!r} present"]
    if config.after not in (UNSET, None):
        parts.append(f"{config.id_column}={config.after!r} absent")
    return "; ".join(parts)


def run_pitr_check(ctx: CheckContext) -> Outcome:
    config: PitrConfig = ctx.spec.config  # type: ignore[assignment]
    expectation = describe(config)
    with connect(ctx, read_only=True) as conn:
        try:
            begin_read_only(conn)
            if config.mode == "marker":
                marker = conn.exec_driver_sql(
                    config.marker_query, execution_options={"no_parameters": True}
                ).scalar()
                conn.rollback()
                return _judge_marker(ctx, config, marker, expectation)
            quote = conn.dialect.identifier_preparer.quote_identifier
            table = ".".join(quote(part) for part in str(config.table).split("."))
            # A string literal is 'unknown' to PostgreSQL and takes the column's type: ids of
            # any type compare, and the primary key index is used.
            exists = text(
                f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {quote(str(config.id_column))} = :id)"
            )
            before = bool(conn.execute(exists, {"id": str(config.before)}).scalar())
            after = None
            if config.after not in (UNSET, None):
                after = bool(conn.execute(exists, {"id": str(config.after)}).scalar())
            conn.rollback()
        except DBAPIError as exc:
            return query_failure(exc, ctx, expectation, f"check {ctx.spec.name}")
    return _judge_truth(ctx, config, before, after, expectation)


def _mismatch(ctx: CheckContext, message: str) -> Finding:
    return Finding(
        code=RECOVERY_POINT_MISMATCH,
        message=f"{ctx.spec.name} on {ctx.service}: {message}",
        subject=ctx.spec.name,
    )


def _judge_truth(
    ctx: CheckContext, config: PitrConfig, before: bool, after: bool | None, expectation: str
) -> Outcome:
    column, problems = config.id_column, []
    if not before:
        problems.append(
            f"row {column}={config.before!r}, committed before the target, is missing: the restore "
            "stopped short of the recovery target (or the row was never there)"
        )
    if after:
        problems.append(
            f"row {column}={config.after!r}, committed after the target, is present: the restore "
            "replayed past the recovery target"
        )
    observed = {"before_present": before, "after_present": after}
    if problems:
        findings = tuple(_mismatch(ctx, p) for p in problems)
        return Outcome(
            status="failed",
            observed=observed,
            expectation=expectation,
            detail="; ".join(problems),
            findings=findings,
        )
    one_sided: tuple[Finding, ...] = ()
    detail = "the row committed before the target is there and the one after it is not"
    if after is None:
        detail = "the row committed before the target is there; the after side was not checked"
        one_sided = (
            Finding(
                code=RECOVERY_POINT_ONE_SIDED,
                message=f"{ctx.spec.name} proves only that the restore reached the target, not "
                "that it stopped there: give truth.after, a row committed after the target",
                severity="warning",
                subject=ctx.spec.name,
            ),
        )
    return Outcome(
        status="passed",
        observed=observed,
        expectation=expectation,
        detail=detail,
        findings=one_sided,
    )


def _judge_marker(ctx: CheckContext, config: PitrConfig, marker: Any, expectation: str) -> Outcome:
    if marker is None:
        return Outcome(
            status="failed",
            expectation=expectation,
            detail="the marker query returned NULL or no row: nothing in the restored data marks "
            "a recovery point",
            findings=(_mismatch(ctx, "the marker query found no data at all"),),
        )
    if not isinstance(marker, datetime) or marker.tzinfo is None:
        raise CheckError(
            f"marker_query returned {type(marker).__name__} {marker!r}; it must return one "
            "timestamptz, e.g. select max(created_at)::timestamptz from orders"
        )
    target = config.target_time
    assert target is not None  # bind_params guarantees it
    problems = []
    if marker > target:
        problems.append(
            f"marker {isoformat(marker)} is {human_span((marker - target).total_seconds())} "
            f"after the target {isoformat(target)}: the restore replayed past the recovery target"
        )
    elif config.tolerance is not None and marker < target - timedelta(seconds=config.tolerance):
        problems.append(
            f"marker {isoformat(marker)} is {human_span((target - marker).total_seconds())} before "
            f"the target {isoformat(target)}, more than the tolerance of "
            f"{human_span(config.tolerance)}: the "
            "restore stopped short of the target (or writes had stopped earlier)"
        )
    return Outcome(
        status="failed" if problems else "passed",
        observed=marker,
        expectation=expectation,
        detail="; ".join(problems) or f"marker {isoformat(marker)} is within the expected range",
        findings=tuple(_mismatch(ctx, p) for p in problems),
    )
