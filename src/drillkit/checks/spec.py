"""Check declarations of a drill spec, parsed strictly into typed ``CheckSpec`` objects.

Every refusal names the check, the field path (``checks[2].expect.gte``) and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn

from drillkit.checks.jsonpath import parse_json_path
from drillkit.checks.results import UNSET, Expectation, parse_expectation
from drillkit.exceptions import InvalidInputError
from drillkit.timeutil import parse_duration, parse_target_time

HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
# Set by drillkit on every request; a spec overriding them would unroute or replay traffic.
RESERVED_HEADERS = frozenset({"x-drill-context", IDEMPOTENCY_HEADER.lower(), "host"})


Kind = Literal["sql", "http", "tcp", "pitr", "integrity"]
KINDS: tuple[str, ...] = ("http", "integrity", "pitr", "sql", "tcp")
# Kinds that open PostgreSQL connections: they need a postgres service and share its connection cap.
POSTGRES_KINDS = frozenset({"sql", "pitr", "integrity"})
DEFAULT_TIMEOUT_SECONDS = 10.0
# A check that needs more than an hour is a typo ("5d") or not a smoke check.
MAX_TIMEOUT_SECONDS = 3600.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_COMMON_KEYS = frozenset({"name", "kind", "target", "timeout", "warmup"})
_KIND_KEYS: dict[str, frozenset[str]] = {
    "sql": frozenset({"query", "expect", "write"}),
    "http": frozenset({"method", "path", "headers", "json", "expect"}),
    "tcp": frozenset(),
    "pitr": frozenset({"truth", "marker_query", "target_time", "tolerance"}),
    "integrity": frozenset(),
}


@dataclass(frozen=True, kw_only=True)
class SqlConfig:
    query: str
    expect: Expectation
    write: bool = False


@dataclass(frozen=True, kw_only=True)
class JsonAssertion:
    path: str
    steps: tuple[str | int, ...]
    expect: Expectation


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any = UNSET
    statuses: tuple[int, ...]
    json: tuple[JsonAssertion, ...] = ()
    latency_budget: float | None = None


@dataclass(frozen=True, kw_only=True)
class TcpConfig:
    pass


@dataclass(frozen=True, kw_only=True)
class PitrConfig:
    """Ground-truth mode (``table``/``id_column``/``before``/``after``) or marker mode."""

    table: str | None = None
    id_column: str | None = None
    before: Any = UNSET
    after: Any = UNSET
    marker_query: str | None = None
    target_time: datetime | None = None
    tolerance: float | None = None

    @property
    def mode(self) -> Literal["truth", "marker"]:
        return "marker" if self.marker_query is not None else "truth"


@dataclass(frozen=True, kw_only=True)
class IntegrityConfig:
    pass


CheckConfig = SqlConfig | HttpConfig | TcpConfig | PitrConfig | IntegrityConfig


@dataclass(frozen=True, kw_only=True)
class CheckSpec:
    name: str
    kind: Kind
    target: str
    timeout: float
    warmup: bool = False
    config: CheckConfig
    index: int = 0


class _Where:
    """Builds refusals that name the spec, the check and the field."""

    def __init__(self, source: str, index: int) -> None:
        self.source = source
        self.index = index
        self.label = f"#{index} (unnamed)"

    def fail(self, field: str, problem: str) -> NoReturn:
        path = f"checks[{self.index}]{'.' + field if field else ''}"
        raise InvalidInputError(
            f"{self.source}: check {self.label}, {path}: {problem}",
            code="CHECK_SPEC_INVALID",
            check=self.label,
            field=path,
        )


def parse_checks(raw: Any, *, source: str = "<spec>") -> list[CheckSpec]:
    """Validate a drill spec's ``checks``; raises InvalidInputError on the first problem."""
    if not isinstance(raw, list):
        raise InvalidInputError(
            f"{source}: checks must be a list of check mappings, got {type(raw).__name__}",
            code="CHECK_SPEC_INVALID",
            field="checks",
        )
    specs: list[CheckSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        spec = _parse_one(item, _Where(source, index))
        if spec.name in seen:
            _Where(source, index).fail(
                "name",
                f"{spec.name!r} is also the name of checks[{seen[spec.name]}]; check names "
                "must be unique",
            )
        seen[spec.name] = index
        specs.append(spec)
    return specs


def _parse_one(item: Any, where: _Where) -> CheckSpec:
    if not isinstance(item, Mapping):
        where.fail("", f"a check is a mapping with name, kind and target, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problem = "missing" if name is None else f"{name!r} is not a check name"
        where.fail(
            "name",
            f"{problem}; every check needs a unique name of 1-100 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit",
        )
    where.label = repr(name)
    kind = item.get("kind")
    if kind not in KINDS:
        where.fail("kind", f"{kind!r} is not a check kind; use one of: {', '.join(KINDS)}")
    _refuse_unknown(item, _COMMON_KEYS | _KIND_KEYS[kind], where, "", f"{kind} checks")
    target = item.get("target")
    if not isinstance(target, str) or not target.strip():
        where.fail("target", "missing; name the logical service from the routing manifest")
    timeout = DEFAULT_TIMEOUT_SECONDS
    if "timeout" in item:
        timeout = _seconds(item["timeout"], where, "timeout")
        if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            where.fail("timeout", f"{item['timeout']!r} must be more than 0 and at most 1h")
    warmup = item.get("warmup", False)
    if not isinstance(warmup, bool):
        where.fail("warmup", f"{warmup!r} is not true or false")
    parser = {
        "sql": _sql,
        "http": _http,
        "tcp": lambda _i, _w: TcpConfig(),
        "pitr": _pitr,
        "integrity": lambda _i, _w: IntegrityConfig(),
    }[kind]
    return CheckSpec(
        name=name,
        kind=kind,
        target=target,
        timeout=timeout,
        warmup=warmup,
        config=parser(item, where),
        index=where.index,
    )


def _refuse_unknown(
    raw: Mapping[str, Any], allowed: frozenset[str], where: _Where, prefix: str, what: str
) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where.fail(
                f"{prefix}{key}",
                f"unknown key{hint}; {what} allow: {', '.join(sorted(allowed))}",
            )


def _seconds(value: Any, where: _Where, field: str) -> float:
    try:
        return parse_duration(value, field=field).total_seconds()
    except InvalidInputError as exc:
        where.fail(field, str(exc).removeprefix(f"{field}: "))


def _text(item: Mapping[str, Any], key: str, where: _Where, hint: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        where.fail(key, f"missing or empty; {hint}")
    return value


def _expectation(raw: Any, where: _Where, field: str, *, allow_rows: bool) -> Expectation:
    try:
        return parse_expectation(raw, allow_rows=allow_rows)
    except InvalidInputError as exc:
        sub = exc.details.get("field")
        where.fail(f"{field}.{sub}" if sub else field, str(exc))


def _sql(item: Mapping[str, Any], where: _Where) -> SqlConfig:
    query = _text(item, "query", where, "give the SELECT whose first column is judged")
    write = item.get("write", False)
    if not isinstance(write, bool):
        where.fail("write", f"{write!r} is not true or false")
    if "expect" not in item:
        where.fail("expect", "missing; say what the query must return, e.g. expect: {gte: 1000}")
    return SqlConfig(
        query=query,
        expect=_expectation(item["expect"], where, "expect", allow_rows=True),
        write=write,
    )


def _http(item: Mapping[str, Any], where: _Where) -> HttpConfig:
    method = item.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        where.fail(
            "method", f"{method!r} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}"
        )
    method = method.upper()
    path = item.get("path", "/")
    # The path is joined to the manifest's endpoint: a full URL would bypass the manifest.
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        where.fail("path", f"{path!r} must be a path starting with a single '/', e.g. /healthz")
    headers = item.get("headers", {})
    if not isinstance(headers, Mapping):
        where.fail("headers", "must be a mapping of header name to string value")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            where.fail(f"headers.{key}", "header names and values must be strings")
        if key.lower() in RESERVED_HEADERS:
            where.fail(f"headers.{key}", "is set by drillkit on every request; remove it")
    if "json" in item and method in ("GET", "HEAD"):
        where.fail("json", f"a {method} request carries no body; use POST, PUT or PATCH")
    expect = item.get("expect")
    if not isinstance(expect, Mapping) or "status" not in expect:
        where.fail("expect", "missing; give at least expect: {status: 200}")
    _refuse_unknown(
        expect, frozenset({"status", "json", "latency_budget"}), where, "expect.", "http expect"
    )
    statuses = expect["status"] if isinstance(expect["status"], list) else [expect["status"]]
    if not statuses or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
    ):
        where.fail(
            "expect.status", f"{expect['status']!r} must be an HTTP status or a list of them"
        )
    json_items = expect.get("json", [])
    if not isinstance(json_items, list):
        where.fail("expect.json", "must be a list of {path: '$.a.b', <expectation>} mappings")
    assertions = []
    for i, entry in enumerate(json_items):
        field = f"expect.json[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            where.fail(field, "must be a mapping with path: '$.a.b' and an expectation")
        try:
            steps = parse_json_path(entry["path"])
        except InvalidInputError as exc:
            where.fail(f"{field}.path", str(exc))
        rest = {k: v for k, v in entry.items() if k != "path"}
        assertions.append(
            JsonAssertion(
                path=entry["path"],
                steps=steps,
                expect=_expectation(rest, where, field, allow_rows=False),
            )
        )
    budget = None
    if "latency_budget" in expect:
        budget = _seconds(expect["latency_budget"], where, "expect.latency_budget")
    return HttpConfig(
        method=method,
        path=path,
        headers=dict(headers),
        body=item.get("json", UNSET),
        statuses=tuple(statuses),
        json=tuple(assertions),
        latency_budget=budget,
    )


def _pitr(item: Mapping[str, Any], where: _Where) -> PitrConfig:
    if ("truth" in item) == ("marker_query" in item):
        where.fail(
            "",
            "give exactly one of truth: {table, id_column, before, after} (rows committed before "
            "and after the target) or marker_query (returns one timestamptz) with target_time",
        )
    if "marker_query" in item:
        query = _text(item, "marker_query", where, "e.g. select max(created_at) from orders")
        target = None
        if "target_time" in item:
            try:
                target = parse_target_time(item["target_time"])
            except InvalidInputError as exc:
                where.fail("target_time", str(exc))
        tolerance = _seconds(item["tolerance"], where, "tolerance") if "tolerance" in item else None
        return PitrConfig(marker_query=query, target_time=target, tolerance=tolerance)
    for key in ("target_time", "tolerance"):
        if key in item:
            where.fail(key, "only applies with marker_query; ground truth needs no time")
    truth = item["truth"]
    if not isinstance(truth, Mapping):
        where.fail("truth", "must be a mapping {table, id_column, before, after}")
    _refuse_unknown(
        truth, frozenset({"table", "id_column", "before", "after"}), where, "truth.", "truth"
    )
    table, column = truth.get("table"), truth.get("id_column")
    if not isinstance(table, str) or not _TABLE_RE.match(table):
        where.fail("truth.table", f"{table!r} is not a table name; use name or schema.name")
    if not isinstance(column, str) or not _COLUMN_RE.match(column):
        where.fail("truth.id_column", f"{column!r} is not a column name")
    for key in ("before", "after"):
        value = truth.get(key, UNSET)
        if value is UNSET or (key == "after" and value is None):
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            where.fail(f"truth.{key}", f"{value!r} must be an id: an integer or a string")
    return PitrConfig(
        table=table,
        id_column=column,
        before=truth.get("before", UNSET),
        after=truth.get("after", UNSET),
    )
