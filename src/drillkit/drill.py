"""One drill, stage by stage: what each Airflow task of a tier does, without Airflow.

Operators render their arguments and call these; ``drillkit run`` reaches them through the DAG.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drillkit.exceptions import BackupError, InvalidInputError
from drillkit.sandbox.base import LABEL
from drillkit.state import read_json
from drillkit.timeutil import isoformat, parse_iso, parse_target_time

if TYPE_CHECKING:
    from drillkit.pgbin import PgSettings
    from drillkit.sandbox.local import LocalSandboxBackend

# Operators import this module at DAG-parse time: the catalog, the sandbox backend (psycopg2)
# and the checks engine are imported where they are used, not here.

Say = Callable[[str], None]
_NAMESPACE = uuid.UUID("6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10")
_SLUG_RE = re.compile(r"[^a-z0-9]+")


def drill_id_for(dag_id: str, run_id: str) -> str:
    """One stable UUID per DAG run: every task of the run derives the same one."""
    return str(uuid.uuid5(_NAMESPACE, f"{dag_id}/{run_id}"))


def sandbox_id_for(drill: str, dag_id: str, run_id: str, tier: str) -> str:
    """Deterministic per (run, tier): a retried or resumed task finds its own sandbox again,
    and two runs never share one."""
    slug = _SLUG_RE.sub("-", drill.lower()).strip("-")[:24] or "drill"
    digest = hashlib.sha256(f"{dag_id}/{run_id}/{tier}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def resolve_target(
    *, requested: str | None, spec_target: str, logical_date: datetime | None
) -> datetime | None:
    """The run's recovery target: the form's value, else the spec's rule; None means newest."""
    if requested not in (None, "", "None"):
        return parse_target_time(str(requested))
    if spec_target == "latest":
        return None
    if spec_target == "logical_date":
        return None if logical_date is None else parse_target_time(logical_date)
    return parse_target_time(spec_target)


def requested_target(
    *, requested: str | None, spec_target: str, logical_date: datetime | None
) -> dict[str, str | None]:
    """What the run asked to restore to, known before (and whether or not) any tier selects a
    backup: ``requested`` (ISO 8601, None for the newest restorable point) and ``source``."""
    if requested not in (None, "", "None"):
        source = "run configuration"
    elif spec_target == "latest" or (spec_target == "logical_date" and logical_date is None):
        source = "newest"
    else:
        source = "logical date" if spec_target == "logical_date" else "spec"
    try:
        moment = resolve_target(
            requested=requested, spec_target=spec_target, logical_date=logical_date
        )
    except InvalidInputError:
        return {"requested": str(requested), "source": source}  # shown as given, never hidden
    return {"requested": isoformat(moment), "source": source}


def select(
    catalog: Mapping[str, Any],
    *,
    policy: str,
    target: datetime | None,
    rpo: timedelta,
    exclude: list[str],
    pinned: str | None,
    checksum_gate: bool = True,
    say: Say | None = None,
    postgres: PgSettings | None = None,
) -> dict[str, Any]:
    """Choose a tier's coordinate. With ``checksum_gate`` (drill tiers) a backup that failed
    verification is still chosen, so its tier visibly fails the gate and falls back.
    ``postgres``: where each major's binaries are (the ``postgres_bin_dirs`` setting)."""
    from drillkit.catalog.registry import open_catalog

    return open_catalog(catalog, postgres=postgres).select(
        policy=policy,
        target=target,
        rpo=rpo,
        exclude=exclude,
        pinned=pinned,
        checksum_gate=checksum_gate,
        say=say,
    )


def backend_for(
    sandbox: Mapping[str, Any], *, say: Say | None = None, postgres: PgSettings | None = None
) -> Any:
    kind = sandbox.get("kind", "local")
    if kind == "kubernetes":
        from drillkit.k8s.client import current
        from drillkit.k8s.sandbox import KubernetesSandboxBackend

        config = {k: v for k, v in sandbox.items() if k != "kind"}
        return KubernetesSandboxBackend(kube=current(), config=config, say=say)
    if kind != "local":
        raise InvalidInputError(f"sandbox kind {kind!r} is not supported here")
    from drillkit.sandbox.local import LocalSandboxBackend

    return LocalSandboxBackend(
        port=sandbox.get("port"),
        shared_buffers=sandbox.get("shared_buffers", "128MB"),
        superuser=sandbox.get("superuser", "postgres"),
        postgres=postgres,
        say=say,
    )


def _resumable(
    backend: LocalSandboxBackend, sandbox_id: str, coordinate: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A ready sandbox left by an earlier try of the same task (retry after a worker crash),
    restored from this very coordinate: a cleared tier that re-selected must not get the old one."""
    label = read_json(backend.path(sandbox_id) / LABEL)
    data = backend.path(sandbox_id) / "data"
    if not label or label.get("state") != "ready" or not (data / "postmaster.pid").exists():
        return None
    same = (label.get("backup_id"), label.get("target")) == (
        coordinate.get("backup_id"),
        coordinate.get("target"),
    )
    if not same:
        return None
    try:
        backend.connect(Path(label["socket_dir"]), label["endpoints"]["postgres"]["port"]).close()
    except Exception:  # any failure means: not usable, rebuild it
        return None
    record = {k: v for k, v in label.items() if k not in ("state", "socket_dir", "name")}
    return {**record, "resumed": True}


def provision(
    coordinate: Mapping[str, Any],
    *,
    sandbox: Mapping[str, Any],
    drill: str,
    drill_id: str,
    sandbox_id: str,
    ttl: timedelta,
    dry_run: bool,
    say: Say | None = None,
    postgres: PgSettings | None = None,
) -> dict[str, Any]:
    """The checksum gate, then restore (or, in a dry run, plan) the tier's sandbox."""
    if sandbox.get("kind") == "kubernetes":
        # No checksum gate: Backup objects carry nothing to verify (the coordinate says so).
        k8s_backend = backend_for(sandbox, say=say)
        if dry_run:
            return k8s_backend.plan(coordinate, drill_id=drill_id, sandbox_id=sandbox_id, ttl=ttl)
        return k8s_backend.provision(
            dict(coordinate), drill_id=drill_id, name=drill, ttl=ttl, sandbox_id=sandbox_id
        )
    from drillkit.catalog.model import RESTORABLE_STATUSES, VERIFICATION_CODES

    backup = coordinate.get("backup") or {}
    status = backup.get("verification")
    if status == "unverifiable":
        # Not a finding against the backup (a tool could not judge it): COULD NOT VERIFY.
        raise BackupError(
            f"backup {coordinate.get('backup_id')} could not be verified (pg_verifybackup could "
            "not judge it; the catalog says why): it is not restored unverified; the next tier "
            "tries another backup",
            code="BACKUP_UNVERIFIABLE",
        )
    if status not in RESTORABLE_STATUSES:
        code = VERIFICATION_CODES.get(str(status), "BACKUP_UNVERIFIABLE")
        raise BackupError(
            f"backup {coordinate.get('backup_id')} failed its checksum gate ({status}): it is not "
            "restored; the next tier tries another backup. Take a new backup and find out what "
            "damaged this one (storage, copy, retention job)",
            code=code,
        )
    backend = backend_for(sandbox, say=say, postgres=postgres)
    if dry_run:
        return backend.plan(coordinate, drill_id=drill_id, sandbox_id=sandbox_id, ttl=ttl)
    resumed = _resumable(backend, sandbox_id, coordinate)
    if resumed is not None:
        if say:
            say(f"resuming ready sandbox {sandbox_id} from an earlier try")
        return resumed
    backend.teardown(sandbox_id)  # a half-built sandbox from a crashed try
    try:
        return backend.provision(
            coordinate, drill_id=drill_id, name=drill, ttl=ttl, sandbox_id=sandbox_id
        )
    except BaseException:
        backend.teardown(sandbox_id)
        raise


def teardown(
    sandbox_record: Mapping[str, Any], *, keep: bool, keep_ttl: timedelta
) -> dict[str, Any]:
    """Delete the tier's sandbox, or keep it for investigation until ``keep_ttl`` runs out."""
    sandbox_id = str(sandbox_record.get("id"))
    if sandbox_record.get("backend") == "kubernetes":
        from drillkit.k8s.client import current
        from drillkit.k8s.sandbox import teardown as k8s_teardown

        return k8s_teardown(current(), sandbox_record, keep_sandbox=keep, keep_ttl=keep_ttl)
    backend = backend_for({"kind": sandbox_record.get("backend", "local")})
    if sandbox_record.get("dry_run"):
        return {"id": sandbox_id, "removed": False, "dry_run": True}
    if keep:
        from drillkit.state import write_json_atomic
        from drillkit.timeutil import utcnow

        label_path = backend.path(sandbox_id) / LABEL
        label = read_json(label_path) or {}
        label["expires_at"] = isoformat(utcnow() + keep_ttl)
        label["kept"] = True
        write_json_atomic(label_path, label)
        return {"id": sandbox_id, "removed": False, "kept_until": label["expires_at"]}
    return backend.teardown(sandbox_id)


def route(
    *,
    sandbox: Mapping[str, Any],
    services: Mapping[str, Any],
    overrides: Mapping[str, Any],
    production: Mapping[str, Any],
    environment: str,
    drill_id: str,
    key: bytes,
    ttl: timedelta,
    routes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The routing manifest: every service resolved to the sandbox, production refused;
    mesh ``routes`` (istio, gateway_api) are then applied to the cluster."""
    from drillkit.routing.context import issue_context
    from drillkit.routing.guard import ProductionGuard
    from drillkit.routing.manifest import build_manifest

    context = issue_context(
        drill_id=drill_id,
        environment=environment,
        key=key,
        ttl_seconds=int(min(ttl.total_seconds(), 7 * 86400)),
    )
    endpoints = sandbox.get("endpoints")
    if sandbox.get("backend") == "kubernetes" and not sandbox.get("dry_run"):
        from drillkit.k8s.client import current
        from drillkit.k8s.sandbox import endpoints as k8s_endpoints

        endpoints = k8s_endpoints(current(), sandbox)  # from the Services CloudNativePG made
    manifest = build_manifest(
        drill_id=drill_id,
        environment=environment,
        endpoints=endpoints,
        services=services,
        overrides=overrides,
        production=ProductionGuard.from_spec(production),
        context=context,
    )
    manifest["routes"] = {
        "backend": "manifest",
        "applied": [],
        "dry_run": bool(sandbox.get("dry_run")),
    }
    if (routes or {}).get("kind", "manifest") != "manifest":
        from drillkit.k8s.client import current
        from drillkit.k8s.routes import apply_routes

        manifest["routes"] = apply_routes(
            current(),
            routes=routes or {},
            manifest=manifest,
            sandbox=sandbox,
            guard=ProductionGuard.from_spec(production),
            dry_run=bool(sandbox.get("dry_run")),
        )
    return manifest


def truth_params(truth_file: str, target: datetime | None) -> dict[str, Any]:
    """``before``/``after`` ids for a ground-truth pitr check, from a scenario's truth.json."""
    truth = read_json(Path(truth_file))
    if not truth or "batches" not in truth:
        raise InvalidInputError(f"{truth_file} is not a ground-truth file (no batches)")
    batches = sorted(truth["batches"], key=lambda b: b["committed_at"])
    if target is None:
        return {"before": batches[-1]["last_id"], "after": None}
    committed = [b for b in batches if parse_iso(b["committed_at"]) <= target]
    later = [b for b in batches if parse_iso(b["committed_at"]) > target]
    return {
        "before": committed[-1]["last_id"] if committed else None,
        "after": later[0]["first_id"] if later else None,
    }


def smoke(
    *,
    checks: list[dict[str, Any]],
    manifest: Mapping[str, Any],
    production: Mapping[str, Any],
    coordinate: Mapping[str, Any],
    sandbox: Mapping[str, Any],
    key: bytes,
) -> dict[str, Any]:
    """Run the checks against the manifest, re-checked: XCom is never trusted blindly."""
    from drillkit.checks.spec import POSTGRES_KINDS
    from drillkit.routing.context import verify_context
    from drillkit.routing.guard import ProductionGuard

    # Every name resolved once (this guard remembers it) and every address judged; the checks
    # connect to the addresses judged here.
    guard = ProductionGuard.from_spec(production)
    guard.check_manifest(manifest, resolve=not sandbox.get("dry_run"))
    verify_context(manifest["context"]["value"], key=key)
    if sandbox.get("dry_run"):
        return {
            "schema": "drillkit.validation/v1",
            "status": "skipped",
            "dry_run": True,
            "results": [
                {
                    "name": c["name"],
                    "kind": c["kind"],
                    "target": c.get("target"),
                    "status": "skipped",
                }
                for c in checks
            ],
            "warmup": [],
            "findings": [],
        }
    requested = (coordinate.get("target") or {}).get("requested")
    target = parse_iso(requested) if requested else parse_iso(coordinate.get("recovery_point"))
    clean: list[dict[str, Any]] = []
    per_check: dict[str, dict[str, Any]] = {}
    for check in checks:
        check = dict(check)
        truth_file = check.pop("truth_file", None)
        if truth_file:
            # None means "no such row" (nothing committed before, or after, the target): leave
            # that side unset so the check reports exactly what it could not prove.
            known = {k: v for k, v in truth_params(truth_file, target).items() if v is not None}
            if known:
                per_check[check["name"]] = known
        clean.append(check)
    params: dict[str, Any] = {"checks": per_check} if per_check else {}
    if any(c.get("kind") == "pitr" and "marker_query" in c for c in clean) and target:
        params["target_time"] = isoformat(target)
    if sandbox.get("backend") == "kubernetes" and any(
        c.get("kind") in POSTGRES_KINDS for c in clean
    ):
        return _smoke_kubernetes(clean, manifest, params=params, guard=guard, sandbox=sandbox)
    return _smoke_checks(clean, manifest, params=params, guard=guard, sandbox=sandbox)


def _smoke_checks(
    checks: list[dict[str, Any]],
    manifest: Mapping[str, Any],
    *,
    params: dict[str, Any],
    guard: Any,
    sandbox: Mapping[str, Any],
) -> dict[str, Any]:
    from drillkit.checks import run_checks

    routes = manifest.get("routes") or {}
    if routes.get("backend") in ("istio", "gateway_api") and routes.get("routes"):
        return _smoke_routed(checks, manifest, params=params, guard=guard, sandbox=sandbox)
    return run_checks(checks, manifest, params=params, sandbox=sandbox, guard=guard)


def _smoke_kubernetes(
    checks: list[dict[str, Any]],
    manifest: Mapping[str, Any],
    *,
    params: dict[str, Any],
    guard: Any,
    sandbox: Mapping[str, Any],
) -> dict[str, Any]:
    """Data checks on a CloudNativePG sandbox: open the way to its database (in-cluster TLS or a
    port-forward), seal it and create its check roles, then run the checks through them."""
    from drillkit.checks.spec import parse_checks
    from drillkit.checks.sql import is_sandbox
    from drillkit.k8s.access import open_database
    from drillkit.k8s.client import current

    parse_checks(checks)  # bad input is refused before anything is opened
    services = manifest.get("services") or {}
    with open_database(current(), sandbox) as access:
        # A kubernetes sandbox has one database (CloudNativePG's -rw Service): every postgres
        # service the manifest resolved to the sandbox is it, reached the way just opened.
        routed = {
            name: {**entry, "endpoint": access.endpoint}
            if isinstance(entry, Mapping) and entry.get("kind") == "postgres" and is_sandbox(entry)
            else entry
            for name, entry in services.items()
        }
        opened = {
            **sandbox,
            "endpoints": {**(sandbox.get("endpoints") or {}), "postgres": access.endpoint},
            "check_roles": access.check_roles,
        }
        validation = _smoke_checks(
            checks, {**manifest, "services": routed}, params=params, guard=guard, sandbox=opened
        )
    return {**validation, "sandbox_access": access.summary()}


def _smoke_routed(
    checks: list[dict[str, Any]],
    manifest: Mapping[str, Any],
    *,
    params: dict[str, Any],
    guard: Any,
    sandbox: Mapping[str, Any],
) -> dict[str, Any]:
    """Mesh routes: prove them in effect first, then send HTTP checks the production way."""
    from drillkit.checks import run_checks
    from drillkit.checks.spec import parse_checks
    from drillkit.routing.proof import (
        ROUTE_NOT_IN_EFFECT,
        not_in_effect,
        prove_routes,
        via_production_host,
    )

    parse_checks(checks)  # bad input is refused before any probe
    proof = prove_routes(manifest, guard=guard, sandbox_id=str(sandbox.get("id")))
    if not proof["proven"]:
        message, results = not_in_effect(proof, checks)
        return {
            "schema": "drillkit.validation/v1",
            "status": "error",
            "results": [r for r in results if not r["warmup"]],
            "warmup": [r for r in results if r["warmup"]],
            "findings": [{"code": ROUTE_NOT_IN_EFFECT, "message": message, "severity": "error"}],
            "route_proof": proof,
        }
    validation = run_checks(
        checks, via_production_host(manifest, proof), params=params, sandbox=sandbox, guard=guard
    )
    return {**validation, "route_proof": proof}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
