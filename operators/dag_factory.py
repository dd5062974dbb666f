"""Turn a drill spec into its fallback-chain DAG.

Each spec gets a two-line loader in dags/ (``drillkit dags sync`` writes them): Airflow records
import errors per file, so a bad spec then fails only its own DAG and the others still load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, chain
from airflow.sdk.definitions.param import ParamsDict
from drillkit.operators._common import scheduled_dag
from drillkit.operators.checks import SmokeTestOperator
from drillkit.operators.conf import ValidateDrillConfOperator
from drillkit.operators.gate import (
    DrillGateOperator,
    DrillReportOperator,
    EscalateOperator,
    TierTasks,
)
from drillkit.operators.restore import (
    PITRSelectOperator,
    ProvisionSandboxOperator,
    TeardownOperator,
)
from drillkit.operators.routing import ApplyDrillRouteOperator
from drillkit.plugins.links import DrillReportLink
from drillkit.sensors.sandbox import SandboxReadySensor

from drillkit.catalog.registry import for_sandbox
from drillkit.spec import (
    DrillSpec,
    SpecError,
    is_chain_spec,
    loader_name,
    loader_source,
    parse_spec,
    read_spec_file,
    spec_beside,
)

DEFAULT_REPORT_DIR = "/tmp/drillkit-reports"
# What drillkit.timeutil.parse_target_time accepts, as a JSON-schema pattern: Airflow checks it
# when a run is created, so an impossible date (Feb 30, Feb 29 of a common year, 24:00) is
# refused there and then, not by the run.
_DAY = (
    r"(\d{4}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)"
    r"|02-(0[1-9]|1\d|2[0-8]))|(\d{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)"
    r"-02-29)"
)
_TIME = r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?"
_ZONE = r"\s?(Z|UTC|[+-](0\d|1[0-5])(:?[0-5]\d)?)"
TARGET_PATTERN = f"^{_DAY}[T ]{_TIME}{_ZONE}$"


PARAM_NAMES = ("target_time", "tiers", "pinned_backup", "keep_sandbox", "dry_run")


def drill_params(spec: DrillSpec) -> dict[str, Param]:
    """The manual trigger form: validated by JSON schema when a run is created."""
    names = [t.name for t in spec.tiers]
    return {
        "target_time": Param(
            None,
            # A text field, not "format": "date-time": the form's date picker takes minutes only
            # and turns typed seconds into midnight. The pattern refuses what the drill would.
            type=["null", "string"],
            pattern=TARGET_PATTERN,
            title="Recovery target",
            description="Restore to this moment: YYYY-MM-DD HH:MM[:SS[.ffffff]] with a zone "
            "(Z, UTC or +HH:MM), e.g. 2026-11-21T08:00:00Z, 2026-11-21 08:00:30.25+02:00, "
            "2026-11-21T08:00 UTC. Empty: the run's logical date, or for manual runs the "
            "newest restorable point.",
        ),
        "tiers": Param(
            names,
            type="array",
            items={"type": "string", "enum": names},
            minItems=1,
            uniqueItems=True,
            title="Tiers to run",
            description="Fallback tiers this run may use, in the spec's order.",
        ),
        "pinned_backup": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9._-]{1,128}$",
            title="Pinned backup id",
            description="Restore exactly this backup (overrides each tier's policy).",
        ),
        "keep_sandbox": Param(
            False,
            type="boolean",
            title="Keep sandbox",
            description=f"Leave the sandbox running for investigation for {spec.sandbox_ttl} "
            "(then `drillkit gc` removes it).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Selection, manifest and planned routes only; nothing is restored.",
        ),
    }


def build_drill_dag(spec: DrillSpec, *, fileloc: str | None = None) -> DAG:
    tier_names = [t.name for t in spec.tiers]
    rto = spec.rto.total_seconds()
    ttl = spec.sandbox_ttl.total_seconds()
    report_dir = spec.report.get("path") or DEFAULT_REPORT_DIR
    classes = (PITRSelectOperator, ProvisionSandboxOperator, ApplyDrillRouteOperator)
    select_cls, provision_cls, route_cls = classes
    teardown_cls, smoke_cls, k8s_args, sensor_args = TeardownOperator, SmokeTestOperator, {}, {}
    if spec.catalog.get("kind") == "cnpg":  # kubernetes sandboxes: the spec enforces the pairing
        from drillkit.operators import kubernetes as k8s_ops

        select_cls = k8s_ops.KubernetesPITRSelectOperator
        provision_cls = k8s_ops.KubernetesProvisionSandboxOperator
        route_cls = k8s_ops.KubernetesApplyDrillRouteOperator
        teardown_cls = k8s_ops.KubernetesTeardownOperator
        smoke_cls = k8s_ops.KubernetesSmokeTestOperator
        k8s_args = {"kubernetes_conn_id": spec.kubernetes_conn_id}
        # A CloudNativePG restore takes minutes: wait in the triggerer, not on a worker slot.
        sensor_args = {**k8s_args, "deferrable": True}
    dag = scheduled_dag(
        spec,
        what="Restore drill",
        tag="restore-drill",
        doc_md=f"Restore drill **{spec.name}** from `{spec.source}`: tiers "
        + " -> ".join(tier_names)
        + " -> escalate.",
        fileloc=fileloc,
        render_template_as_native_obj=True,
    )
    with dag:
        check_conf = ValidateDrillConfOperator(task_id="check_conf", allowed=list(PARAM_NAMES))
        exhausted = EmptyOperator(task_id="exhausted")
        report = DrillReportOperator(
            task_id="report",
            drill=spec.name,
            tiers=tier_names,
            rto_seconds=rto,
            report_path=report_dir,
            default_target=spec.target,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        escalate = EscalateOperator(task_id="escalate", trigger_rule=TriggerRule.ALL_DONE)
        previous_gate: Any = None
        previous_gate_id: str | None = None
        gate_ids: list[str] = []
        for index, tier in enumerate(spec.tiers):
            tasks = TierTasks(tier.name)
            is_last = index == len(spec.tiers) - 1
            next_branch = "exhausted" if is_last else TierTasks(spec.tiers[index + 1].name).select
            with TaskGroup(tier.name, tooltip=f"tier {tier.name}: {tier.select}"):
                select = select_cls(
                    **k8s_args,
                    task_id="pitr_select",
                    catalog=for_sandbox(spec.catalog, tier.sandbox),
                    tier=tier.name,
                    policy=tier.select,
                    default_target=spec.target,
                    tier_backup=tier.backup,
                    exclude_from=list(gate_ids),
                    rpo_seconds=spec.rpo.total_seconds(),
                    postgres_bin_dirs=spec.postgres_bin_dirs,
                )
                provision = provision_cls(
                    **k8s_args,
                    task_id="provision_sandbox",
                    coordinate_task_id=tasks.select,
                    sandbox=tier.sandbox,
                    drill=spec.name,
                    tier=tier.name,
                    ttl_seconds=ttl,
                    execution_timeout=tier.timeout,
                    postgres_bin_dirs=spec.postgres_bin_dirs,
                )
                ready = SandboxReadySensor(
                    task_id="sandbox_ready",
                    sandbox_task_id=tasks.provision,
                    poke_interval=2,
                    timeout=max(rto, 60),
                    rto_seconds=rto,
                    mode="poke",
                    **sensor_args,
                )
                route = route_cls(
                    **k8s_args,
                    task_id="apply_drill_route",
                    sandbox_task_id=tasks.provision,
                    services=spec.services,
                    overrides=spec.overrides,
                    production=spec.production,
                    environment=spec.environment,
                    ttl_seconds=ttl,
                    routes=spec.routes,
                )
                smoke = smoke_cls(
                    **k8s_args,
                    task_id="smoke_test",
                    checks=spec.checks,
                    manifest_task_id=tasks.route,
                    coordinate_task_id=tasks.select,
                    sandbox_task_id=tasks.provision,
                    production=spec.production,
                )
                teardown = teardown_cls(
                    **k8s_args,
                    task_id="teardown",
                    sandbox_task_id=tasks.provision,
                    keep_ttl_seconds=ttl,
                )
                gate = DrillGateOperator(
                    task_id="gate",
                    tier=tier.name,
                    previous_gate=previous_gate_id,
                    next_branch=next_branch,
                    is_last=is_last,
                    rto_seconds=rto,
                    trigger_rule=TriggerRule.ALL_DONE,
                )
                stages = [select, provision, ready, route, smoke]
                chain(*stages, teardown, gate)
                # Each stage also feeds every later one: a skipped or failed stage then skips
                # (or upstream-fails) the rest of its tier in one scheduler pass, not one per
                # level; a long tier otherwise costs a scheduling loop per task it never runs.
                for index, stage in enumerate(stages):
                    stage >> stages[index + 2 :]
                # A task whose only downstream is a teardown counts as a leaf for the run's
                # state: without this edge a failed tier would fail a drill that fell back fine.
                smoke >> gate
                teardown.as_teardown(setups=provision)
            check_conf >> select
            if previous_gate is not None:
                previous_gate >> select
            gate >> report  # the branch a passing tier follows
            teardown >> report
            previous_gate, previous_gate_id = gate, tasks.gate
            gate_ids.append(tasks.gate)
        previous_gate >> exhausted >> report >> escalate
    for task in dag.tasks:
        # "Drill report" on every task that runs (an EmptyOperator never executes to record it).
        if not isinstance(task, EmptyOperator):
            task.operator_extra_links = (*task.operator_extra_links, DrillReportLink())
    # Params are attached once the tasks exist: a task created inside a DAG deep-copies the
    # DAG's params (and serializes its copy), once per task. At run time Airflow merges
    # dag.params into every task's context, so templates and validation are unchanged.
    dag.params = ParamsDict(drill_params(spec))
    return dag


def dag_from_spec_file(spec_path: str | Path, *, loader: str | None = None) -> DAG:
    """Load ``spec_path`` (relative to the loader file's directory) and build its DAG: a
    restore drill, or a routing-chain drill when the spec says ``kind: routing_chain``.

    A spec whose DAG id another spec beside it also has is refused (an import error naming
    both files): Airflow would silently keep one of the two DAGs, and both would share its runs.
    """
    path = spec_beside(spec_path, loader)
    data = read_spec_file(path)
    if is_chain_spec(data):
        from drillkit.operators.chain_factory import build_chain_dag

        from drillkit.chain.spec import parse_chain_spec

        chain_spec = parse_chain_spec(data, source=str(path))
        refuse_duplicate_dag_id(path, chain_spec.dag_id)
        return build_chain_dag(chain_spec, fileloc=loader)
    spec = parse_spec(data, source=str(path))
    refuse_duplicate_dag_id(path, spec.dag_id)
    return build_drill_dag(spec, fileloc=loader)


def spec_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def declared_dag_id(path: Path) -> str | None:
    """The DAG id ``path``'s spec declares (``drill_<drill>``), without validating the rest;
    None when it declares none (that spec's own loader reports why)."""
    try:
        data = read_spec_file(path)
    except SpecError:
        return None
    name = data.get("drill") if isinstance(data, dict) else None
    return f"drill_{name.replace('-', '_')}" if isinstance(name, str) and name else None


# Spec texts this process has read, by path, with the (mtime_ns, size) they were read at: a
# DAG folder parsed in one process (DagBag, `drillkit dags check`) reads each sibling once, not
# once per spec; a changed file is read again.
_TEXTS: dict[Path, tuple[tuple[int, int], str]] = {}


def _spec_text(path: Path) -> str | None:
    try:
        info = path.stat()
        signature = (info.st_mtime_ns, info.st_size)
        cached = _TEXTS.get(path)
        if cached is None or cached[0] != signature:
            cached = (signature, path.read_text(errors="replace"))
            _TEXTS[path] = cached
    except OSError:
        return None
    return cached[1]


def refuse_duplicate_dag_id(path: Path, dag_id: str) -> None:
    """SpecError naming both files when another spec in ``path``'s directory has ``dag_id``."""
    # Only a file whose text holds the name (either spelling) is parsed: loaders run at every
    # DAG-processor pass, one per spec, and YAML parsing costs milliseconds a file.
    named = re.compile(re.escape(dag_id.removeprefix("drill_")).replace("_", "[-_]"))
    others = []
    for other in spec_files(path.parent):
        if other.name == path.name:  # the listing is of path's own directory
            continue
        text = _spec_text(other)
        if text is not None and named.search(text) and declared_dag_id(other) == dag_id:
            others.append(other)
    if others:
        raise SpecError(
            f"{path}: DAG id {dag_id} is also the DAG id of {', '.join(map(str, others))}: "
            "Airflow would keep only one of these DAGs and both would share its run history. "
            "Give each drill its own `drill:` name (drill-a and drill_a are the same id)."
        )


def sync_loaders(dags_dir: Path, *, specs_subdir: str = "drills") -> list[Path]:
    """Write a loader next to the specs for each spec that has none; return the files written.

    Refuses (SpecError, nothing written) when a spec file name is outside ``[A-Za-z0-9._-]``,
    two specs would share one loader (``a-b.yaml`` and ``a_b.yml``), or two specs declare the
    same DAG id.
    """
    specs = [p for p in spec_files(dags_dir / specs_subdir) if p.is_file()]
    problems: list[str] = []
    owners: dict[str, Path] = {}
    for spec_path in specs:
        try:
            name = loader_name(spec_path)
        except SpecError as exc:
            problems.append(str(exc))
            continue
        if name in owners:
            problems.append(
                f"{spec_path}: its loader {name} would also load {owners[name].name}; "
                "rename one of the two spec files"
            )
        owners.setdefault(name, spec_path)
    if problems:
        raise SpecError(
            "; ".join(problems), code="SPEC_FILE_NAME_INVALID", source=str(dags_dir / specs_subdir)
        )
    by_id: dict[str, list[Path]] = {}
    for spec_path in owners.values():
        dag_id = declared_dag_id(spec_path)
        if dag_id:
            by_id.setdefault(dag_id, []).append(spec_path)
    clashes = {dag_id: paths for dag_id, paths in by_id.items() if len(paths) > 1}
    if clashes:
        raise SpecError(
            "; ".join(
                f"DAG id {dag_id} is declared by {' and '.join(map(str, paths))}"
                for dag_id, paths in sorted(clashes.items())
            )
            + ": Airflow would keep only one DAG per id and both would share its run history. "
            "Give each drill its own `drill:` name; no loader was written."
        )
    written = []
    for name, spec_path in owners.items():
        target = dags_dir / name
        if not target.exists():
            target.write_text(loader_source(f"{specs_subdir}/{spec_path.name}"))
            written.append(target)
    return written
