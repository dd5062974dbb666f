"""Drill specs: one YAML file per drill, validated on load with errors that name the field.

Unknown keys are errors: a typo in a safety setting must never be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drillkit.exceptions import DrillError, InvalidInputError
from drillkit.outputs import catalog_paths, refuse_inside
from drillkit.policies import POLICIES
from drillkit.timeutil import parse_duration, parse_target_time

CHAIN_KIND = "routing_chain"  # a routing-chain drill (drillkit.chain.spec), not a restore drill
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TIER_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
SANDBOX_KINDS = ("local", "kubernetes")
CATALOG_KINDS = ("local", "cnpg", "pgbackrest", "barman_cloud")
PGBACKREST_KEYS = {"kind", "stanza", "config", "repo", "options", "pgbackrest_conn_id"}
# The DAG-level fields every spec kind shares (drill specs here, routing chains in drillkit.chain).
SCHEDULING_KEYS = {
    "description": "free text shown in the Airflow UI",
    "schedule": "cron expression, preset such as @daily, or null for manual runs only",
    "start_date": "first logical date (ISO 8601 with zone), default 2026-01-01T00:00:00Z",
    "catchup": "true to create runs for past intervals (default false)",
    "paused": "true to create the DAG paused (default false)",
    "tags": "list of extra Airflow tags",
}
_TOP_KEYS = {
    "drill": "name of the drill ([a-z0-9_-]); the DAG id is drill_<name>",
    **SCHEDULING_KEYS,
    "catalog": "{kind: local, path: /backups/NAME}",
    "target": "logical_date (default), latest, or a timestamp with zone",
    "rpo": "accepted data loss, e.g. 15m (default 0s)",
    "rto": "restore time budget, e.g. 10m (default 1h)",
    "sandbox_ttl": "how long a kept sandbox lives before `drillkit gc` removes it (default 2h)",
    "environment": "environment tag signed into X-Drill-Context (default drill)",
    "tiers": "list of {name, sandbox, select, backup, timeout}",
    "services": "logical services: name -> {kind: postgres|http|tcp, ...}",
    "overrides": "explicit endpoints per service (win over provisioned ones)",
    "production": "{hosts: [globs], cidrs: [...], dsns: [...]} the drill must never reach",
    "checks": "list of smoke checks",
    "report": "{path: DIR or URL} where reports are written",
    "routes": "{kind: manifest|istio|gateway_api, ...} how drill traffic reaches the sandbox",
    "kubernetes_conn_id": "Airflow connection of the cluster (default kubernetes_default)",
    "postgres_bin_dirs": "{15: /usr/lib/postgresql/15/bin, ...} each major's binaries (optional)",
}
_TIER_KEYS = {"name", "sandbox", "select", "backup", "timeout"}
_SANDBOX_KEYS = {"kind", "port", "shared_buffers", "superuser"}


class SpecError(InvalidInputError):
    code = "SPEC_INVALID"


@dataclass(frozen=True)
class Tier:
    name: str
    select: str
    sandbox: dict[str, Any]
    backup: str | None
    timeout: timedelta


@dataclass(frozen=True)
class ScheduledSpec:
    """What every spec kind holds to become its DAG: its name, file and :data:`SCHEDULING_KEYS`."""

    name: str
    source: str
    description: str
    schedule: str | None
    start_date: datetime
    catchup: bool
    paused: bool
    tags: tuple[str, ...]

    @property
    def dag_id(self) -> str:
        return f"drill_{self.name.replace('-', '_')}"


@dataclass(frozen=True)
class DrillSpec(ScheduledSpec):
    """A validated restore drill."""

    catalog: dict[str, Any]
    target: str  # logical_date | latest | ISO timestamp
    rpo: timedelta
    rto: timedelta
    sandbox_ttl: timedelta
    environment: str
    tiers: tuple[Tier, ...]
    services: dict[str, Any]
    overrides: dict[str, Any]
    production: dict[str, Any]
    checks: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)
    routes: dict[str, Any] = field(default_factory=dict)
    kubernetes_conn_id: str = "kubernetes_default"
    # {major: bin dir}; keys are str in the DAG (Airflow serializes operator args as JSON).
    postgres_bin_dirs: dict[str, str] = field(default_factory=dict)


def is_chain_spec(data: Any) -> bool:
    """A loaded spec document that says ``kind: routing_chain`` (drillkit.chain reads it)."""
    return isinstance(data, Mapping) and data.get("kind") == CHAIN_KIND


def scheduling_fields(
    top: Mapping[str, Any], fail: Callable[[str, str], SpecError]
) -> dict[str, Any]:
    """The validated :data:`SCHEDULING_KEYS` of a spec, as DrillSpec and ChainSpec hold them;
    ``fail(path, problem)`` builds the error naming the file."""
    schedule = top.get("schedule")
    if schedule is not None and (not isinstance(schedule, str) or not schedule.strip()):
        raise fail("schedule", "a cron expression or preset (e.g. @daily), or null")
    try:
        start_date = parse_target_time(top.get("start_date", "2026-01-01T00:00:00Z"))
    except InvalidInputError as exc:
        raise fail("start_date", str(exc)) from exc
    for flag in ("catchup", "paused"):
        if not isinstance(top.get(flag, False), bool):
            raise fail(flag, "true or false")
    tags = top.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise fail("tags", "a list of non-empty strings")
    return {
        "description": str(top.get("description", "")),
        "schedule": schedule,
        "start_date": start_date,
        "catchup": top.get("catchup", False),
        "paused": top.get("paused", False),
        "tags": tuple(tags),
    }


def _fail(source: str, path: str, problem: str) -> SpecError:
    return SpecError(f"{source}: {path}: {problem}", path=path, source=source)


def _mapping(value: Any, source: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(source, path, f"must be a mapping, got {type(value).__name__}")
    return value


def _registered_catalog(catalog: Mapping[str, Any], source: str) -> None:
    """A kind with its own module validates its own keys (``from_config``: no I/O)."""
    from drillkit.catalog.registry import open_catalog

    try:
        open_catalog(catalog)
    except InvalidInputError as exc:
        raise _fail(source, "catalog", str(exc)) from exc


def _unknown(data: Mapping[str, Any], allowed: set[str] | dict[str, str], source: str, path: str):
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        prefix = f"{path}." if path else ""
        raise _fail(
            source,
            f"{prefix}{unknown[0]}",
            f"unknown key; allowed keys here: {', '.join(sorted(allowed))}",
        )


def _duration(data: Mapping[str, Any], key: str, default: str, source: str) -> timedelta:
    try:
        return parse_duration(data.get(key, default), field=key)
    except InvalidInputError as exc:
        raise _fail(source, key, str(exc).split(": ", 1)[-1]) from exc


def _kubernetes_part(parser: str, data: Mapping[str, Any], source: str, path: str) -> None:
    """Validate a Kubernetes part of the spec with drillkit.k8s.config, as a SpecError."""
    from drillkit.k8s import config

    try:
        getattr(config, parser)(data, where=path)
    except InvalidInputError as exc:
        raise _fail(source, exc.details.get("path", path), str(exc).split(": ", 1)[-1]) from exc


def _tier(raw: Any, index: int, source: str) -> Tier:
    path = f"tiers[{index}]"
    data = _mapping(raw, source, path)
    _unknown(data, _TIER_KEYS, source, path)
    name = data.get("name")
    if not isinstance(name, str) or not _TIER_RE.match(name):
        raise _fail(source, f"{path}.name", "required: a short name such as primary ([a-z0-9_])")
    select = data.get("select", "latest")
    if select not in POLICIES:
        raise _fail(source, f"{path}.select", f"{select!r} is not one of {', '.join(POLICIES)}")
    backup = data.get("backup")
    if select == "pinned" and not backup:
        raise _fail(source, f"{path}.backup", "select: pinned needs the backup id to restore")
    sandbox = dict(_mapping(data.get("sandbox", {"kind": "local"}), source, f"{path}.sandbox"))
    if sandbox.get("kind") == "kubernetes":
        _kubernetes_part("parse_sandbox", sandbox, source, f"{path}.sandbox")
    else:
        _unknown(sandbox, _SANDBOX_KEYS, source, f"{path}.sandbox")
    kind = sandbox.get("kind", "local")
    if kind not in SANDBOX_KINDS:
        raise _fail(
            source,
            f"{path}.sandbox.kind",
            f"{kind!r} is not a sandbox kind; use one of {', '.join(SANDBOX_KINDS)}",
        )
    port = sandbox.get("port")
    if port is not None and port != "auto" and not (isinstance(port, int) and 0 < port < 65536):
        raise _fail(source, f"{path}.sandbox.port", "a TCP port number, 'auto', or omitted")
    sandbox["kind"] = kind
    try:
        timeout = parse_duration(data.get("timeout", "1h"), field="timeout")
    except InvalidInputError as exc:
        raise _fail(source, f"{path}.timeout", str(exc).split(": ", 1)[-1]) from exc
    return Tier(name=name, select=select, sandbox=sandbox, backup=backup, timeout=timeout)


def parse_spec(data: Any, *, source: str = "<spec>") -> DrillSpec:
    """Validate a loaded YAML mapping; raise SpecError naming ``source`` and the field path."""
    from drillkit.checks import parse_checks
    from drillkit.routing.guard import ProductionGuard
    from drillkit.routing.manifest import validate_services

    top = _mapping(data, source, "(top level)")
    if is_chain_spec(top):
        raise _fail(
            source,
            "kind",
            f"{CHAIN_KIND} marks a routing-chain drill, not a restore drill: it runs as its "
            "Airflow DAG (the loader `drillkit dags sync` writes builds either kind); "
            "`drillkit run` runs restore drills only",
        )
    _unknown(top, _TOP_KEYS, source, "")
    name = top.get("drill")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(source, "drill", "required: the drill's name, [a-z0-9][a-z0-9_-]*")
    catalog = dict(_mapping(top.get("catalog"), source, "catalog"))
    if catalog.get("kind") == "cnpg":
        _kubernetes_part("parse_catalog", catalog, source, "catalog")
    elif catalog.get("kind") == "pgbackrest":
        _unknown(catalog, PGBACKREST_KEYS, source, "catalog")
        from drillkit.catalog.registry import open_catalog

        try:
            open_catalog(catalog)  # the kind's own validation (no I/O)
        except InvalidInputError as exc:
            raise _fail(source, "catalog", str(exc)) from exc
    elif catalog.get("kind", "local") == "local":
        _unknown(catalog, {"kind", "path"}, source, "catalog")
    elif catalog.get("kind") in CATALOG_KINDS:
        _registered_catalog(catalog, source)
    if catalog.get("kind", "local") not in CATALOG_KINDS:
        raise _fail(source, "catalog.kind", f"use one of {', '.join(CATALOG_KINDS)}")
    if catalog.get("kind", "local") == "local" and (
        not isinstance(catalog.get("path"), str) or not catalog["path"]
    ):
        raise _fail(source, "catalog.path", "required: the repository (base/ and wal/) path")
    catalog["kind"] = catalog.get("kind", "local")
    target = top.get("target", "logical_date")
    if target not in ("logical_date", "latest"):
        try:
            parse_target_time(target)
        except InvalidInputError as exc:
            raise _fail(source, "target", f"logical_date, latest, or a timestamp: {exc}") from exc
    tiers_raw = top.get("tiers")
    if not isinstance(tiers_raw, list) or not tiers_raw:
        raise _fail(source, "tiers", "required: a list of at least one tier")
    tiers = tuple(_tier(raw, i, source) for i, raw in enumerate(tiers_raw))
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise _fail(source, "tiers", f"tier names must be unique, got {names}")
    services = dict(_mapping(top.get("services"), source, "services"))
    overrides = dict(_mapping(top.get("overrides") or {}, source, "overrides"))
    production = dict(_mapping(top.get("production") or {}, source, "production"))
    environment = top.get("environment", "drill")
    checks_raw = top.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise _fail(
            source, "checks", "required: at least one check (an empty drill proves nothing)"
        )
    for index, check in enumerate(checks_raw):
        truth_file = check.get("truth_file") if isinstance(check, Mapping) else None
        if truth_file is not None and (
            check.get("kind") != "pitr" or not isinstance(truth_file, str) or not truth_file
        ):
            raise _fail(
                source,
                f"checks[{index}].truth_file",
                "a ground-truth JSON path, allowed only on pitr checks",
            )
    try:
        validate_services(services)
        ProductionGuard.from_spec(production)
        # truth_file is resolved by the drill at run time; the checks engine never sees it.
        checks = parse_checks(
            [
                {k: v for k, v in c.items() if k != "truth_file"} if isinstance(c, Mapping) else c
                for c in checks_raw
            ],
            source=source,
        )
    except SpecError:
        raise
    except DrillError as exc:
        raise SpecError(f"{source}: {exc}", source=source) from exc
    unknown_targets = sorted({c.target for c in checks} - set(services))
    if unknown_targets:
        raise _fail(
            source,
            "checks",
            f"check target(s) {', '.join(unknown_targets)} are not in services "
            f"({', '.join(sorted(services))})",
        )
    unknown_overrides = sorted(set(overrides) - set(services))
    if unknown_overrides:
        raise _fail(source, f"overrides.{unknown_overrides[0]}", "not a service in services")
    report = dict(_mapping(top.get("report") or {}, source, "report"))
    _unknown(report, {"path"}, source, "report")
    try:  # a drill never writes into what it drills
        refuse_inside(report.get("path"), setting="report.path", catalogs=catalog_paths(catalog))
    except InvalidInputError as exc:
        raise _fail(source, "report.path", str(exc)) from exc
    conn_id = top.get("kubernetes_conn_id", "kubernetes_default")
    if not isinstance(conn_id, str) or not conn_id:
        raise _fail(source, "kubernetes_conn_id", "an Airflow connection id")
    try:
        from drillkit.k8s.config import check_spec

        routes = check_spec(
            catalog=catalog,
            sandboxes=[t.sandbox for t in tiers],
            routes=top.get("routes"),
            production=production,
        )
    except InvalidInputError as exc:
        raise _fail(source, exc.details.get("path", "routes"), str(exc).split(": ", 1)[-1]) from exc
    from drillkit.pgmajors import parse_bin_dirs

    try:
        bin_dirs = parse_bin_dirs(top.get("postgres_bin_dirs"), where="postgres_bin_dirs")
    except InvalidInputError as exc:
        raise _fail(source, "postgres_bin_dirs", str(exc).split(": ", 1)[-1]) from exc
    return DrillSpec(
        name=name,
        source=source,
        **scheduling_fields(top, lambda path, problem: _fail(source, path, problem)),
        catalog=catalog,
        target=str(target),
        rpo=_duration(top, "rpo", "0s", source),
        rto=_duration(top, "rto", "1h", source),
        sandbox_ttl=_duration(top, "sandbox_ttl", "2h", source),
        environment=str(environment),
        tiers=tiers,
        services=services,
        overrides=overrides,
        production=production,
        checks=list(checks_raw),
        report=report,
        routes=routes,
        kubernetes_conn_id=conn_id,
        postgres_bin_dirs={str(k): v for k, v in bin_dirs.items()},
    )


def read_spec_file(path: str | Path) -> Any:
    """The YAML document of a spec file; SpecError names the file when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the drill spec ({exc.strerror})") from exc
    try:
        # libyaml when present: the pure-Python loader costs ~2.5 ms a spec at DAG-parse time.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc


def load_spec(path: str | Path) -> DrillSpec:
    """Read and validate a drill spec file."""
    return parse_spec(read_spec_file(path), source=str(path))


_LOADER = '''"""Airflow DAG of the drill spec {rel}.

Written by `drillkit dags sync`: edit the YAML, not this file.
"""

from drillkit.operators.dag_factory import dag_from_spec_file

dag = dag_from_spec_file("{rel}", loader=__file__)
'''


def spec_beside(spec_path: str | Path, loader: str | None) -> Path:
    """``spec_path`` as a loader names it: relative paths count from the loader's directory."""
    path = Path(spec_path)
    if loader and not path.is_absolute():
        path = Path(loader).parent / path
    return path


def loader_name(spec_path: Path) -> str:
    """File name of a spec's DAG loader: Airflow records import errors per file, so one each."""
    return f"drill_{spec_path.stem.replace('-', '_')}.py"


def loader_source(rel: str) -> str:
    """A spec's loader (mentions 'airflow' and 'dag', as Airflow's safe-mode scan requires)."""
    return _LOADER.format(rel=rel)
