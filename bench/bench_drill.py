"""Drill DAG overhead, DAG-folder parse time and provider import time (issue 4 goals).

    python bench/bench_drill.py [--size-mb 1000] [--runs 3] [--keep]

(a) the whole drill DAG (dag.test(), one tier) against the bare core (select, restore, route,
    checks, teardown) on the same coordinate of a ~1 GB scenario, interleaved: goal <= 1.5x;
(b) parsing a DAG folder of 100 drill specs in a fresh process: goal < 1 s;
(c) the import time drillkit adds to an Airflow process: goal < 150 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def _env_for_airflow(home: Path) -> None:
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ.setdefault("DRILLKIT_SIGNING_KEY", os.urandom(32).hex())


def core_drill(spec_path: Path, target: str) -> tuple[float, str]:
    """The same stages as the DAG's primary tier, called directly."""
    from drillkit import drill
    from drillkit.spec import load_spec
    from drillkit.timeutil import parse_target_time

    started = time.perf_counter()
    spec = load_spec(spec_path)
    tier = spec.tiers[0]
    coordinate = drill.select(
        spec.catalog,
        policy=tier.select,
        target=parse_target_time(target),
        rpo=spec.rpo,
        exclude=[],
        pinned=None,
    )
    drill_id = drill.drill_id_for("bench", f"core-{time.time_ns()}")
    record = drill.provision(
        coordinate,
        sandbox=tier.sandbox,
        drill=spec.name,
        drill_id=drill_id,
        sandbox_id=drill.sandbox_id_for(spec.name, "bench", drill_id, tier.name),
        ttl=timedelta(hours=1),
        dry_run=False,
    )
    try:
        key = bytes.fromhex(os.environ["DRILLKIT_SIGNING_KEY"])
        manifest = drill.route(
            sandbox=record,
            services=spec.services,
            overrides=spec.overrides,
            production=spec.production,
            environment=spec.environment,
            drill_id=drill_id,
            key=key,
            ttl=timedelta(hours=1),
        )
        validation = drill.smoke(
            checks=spec.checks,
            manifest=manifest,
            production=spec.production,
            coordinate=coordinate,
            sandbox=record,
            key=key,
        )
    finally:
        drill.teardown(record, keep=False, keep_ttl=timedelta(0))
    return time.perf_counter() - started, validation["status"]


def dag_drill(dag, target: str) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    from drillkit.operators.runner import _report

    started = time.perf_counter()
    run = dag.test(logical_date=None, run_conf={"target_time": target, "tiers": ["primary"]})
    took = time.perf_counter() - started
    report = _report(run.run_id, dag.dag_id) or {}
    return took, str(report.get("verdict"))


def parse_100(spec_path: Path) -> float:
    """Fresh interpreter: DagBag over 100 drill specs (the dag-processor's view of the folder)."""
    from drillkit.spec import loader_name, loader_source

    folder = Path(tempfile.mkdtemp(prefix="drillkit-parse-"))
    (folder / "drills").mkdir()
    base = spec_path.read_text()
    for i in range(100):
        spec = folder / "drills" / f"bench-{i:03d}.yaml"
        spec.write_text(base.replace("drill: demo", f"drill: bench-{i:03d}"))
        (folder / loader_name(spec)).write_text(loader_source(f"drills/{spec.name}"))
    code = (
        "import time, airflow.sdk\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "t = time.perf_counter()\n"
        f"bag = DagBag({str(folder)!r})\n"
        "took = time.perf_counter() - t\n"
        "assert len(bag.dag_ids) == 100 and not bag.import_errors, bag.import_errors\n"
        "print(took)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    common.remove_tree(folder)
    return float(out.stdout.strip().splitlines()[-1])


def import_cost() -> float:
    code = (
        "import time, airflow.sdk, airflow.triggers.base\n"
        "from airflow.sdk import DAG, BaseOperator, BaseBranchOperator, BaseSensorOperator\n"
        "import airflow.providers.standard.operators.empty, airflow.plugins_manager\n"
        "import importlib.util\n"
        "importlib.util.find_spec('drillkit')  # the editable-install finder: a wheel has none\n"
        "t = time.perf_counter()\n"
        "import drillkit.operators.dag_factory, drillkit.sensors.sandbox\n"
        "import drillkit.plugins.drill_reports\n"
        "print(time.perf_counter() - t)\n"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    return common.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work, existed = common.work_dir(
        "drillkit-bench-", stable_name=f"{args.size_mb}mb" if args.keep else None
    )
    os.environ.setdefault("DRILLKIT_STATE_DIR", str(work / "state"))
    os.environ["DRILLKIT_SANDBOX_ROOT"] = str(work / "sandboxes")
    _env_for_airflow(work / "airflow")
    try:
        import bench_restore

        scenario, truth, how = bench_restore.ensure_scenario(
            work, args.size_mb, bench_restore.ROWS_PER_BATCH, existed
        )
        spec_path = scenario / "drill.yaml"
        target = truth["targets"][-1]["target"]
        from drillkit.spec import loader_name, loader_source

        dags = work / "airflow" / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        (dags / loader_name(spec_path)).write_text(loader_source(str(spec_path)))
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(str(dags)).get_dag("drill_demo")
        common.note("warming up: one core drill and one DAG run (caches, first-call costs)")
        cold_dag, _ = dag_drill(dag, target)
        core_drill(spec_path, target)
        core, dagt = [], []
        for i in range(max(3, args.runs)):
            for name in ("core", "dag") if i % 2 == 0 else ("dag", "core"):
                took, status = (
                    core_drill(spec_path, target) if name == "core" else dag_drill(dag, target)
                )
                (core if name == "core" else dagt).append(took)
                common.note(f"run {i + 1} {name}: {took:.2f} s ({status})")
        parse = common.median(parse_100(spec_path) for _ in range(3))
        imports = import_cost()
    finally:
        if not args.keep:
            common.remove_tree(work)
    c, d = common.median(core), common.median(dagt)
    print(f"scenario {how}; {len(core)} interleaved runs each, medians")
    print(
        f"drill DAG (dag.test, 1 tier) {d:.2f} s vs bare core restore+checks {c:.2f} s: "
        f"{common.ratio_text(d, c, 1.5)}   (first DAG run in a fresh process: {cold_dag:.2f} s)"
    )
    print(f"parse of a DAG folder with 100 drill specs (fresh process): {parse:.3f} s (goal < 1 s)")
    print(
        f"import time drillkit adds to an Airflow process: {imports * 1000:.0f} ms (goal < 150 ms; "
        "operators, sensor and plugin; the editable-install finder excluded)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
