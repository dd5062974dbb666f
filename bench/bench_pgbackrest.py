"""Restore-to-ready of a pgBackRest backup by drillkit against a bare `pgbackrest restore` + replay.

Usage: python bench/bench_pgbackrest.py [--size-mb 1000] [--runs 3] [--keep]. Goal: at most 1.2x.
Both sides restore the same full backup of a PostgreSQL 15 stanza with the same pgBackRest, and
replay the same WAL to the same target; drillkit's side is its sandbox backend, unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import psycopg2

from drillkit import pgbin
from drillkit.catalog.registry import open_repository
from drillkit.exceptions import DrillError
from drillkit.pitr import select_coordinate
from drillkit.sandbox.local import recovery_settings
from drillkit.scenario import ScenarioOptions, create_scenario
from drillkit.timeutil import parse_iso

GOAL = 1.2
TIMEOUT = 900.0


def ensure_scenario(work: Path, size_mb: int, rows: int, reuse: bool) -> tuple[Path, dict, str]:
    scenario, marker = work / "scenario", work / "bench.json"
    wanted = {"size_mb": size_mb, "rows": rows}
    if reuse and marker.is_file() and json.loads(marker.read_text()) == wanted:
        return scenario, json.loads((scenario / "truth.json").read_text()), "reused"
    common.remove_tree(scenario)
    started = time.perf_counter()
    # initial_mb is about 1 MiB of table a unit (scenario.py); a full backup after batch 0,
    # then two batches of WAL to replay.
    options = ScenarioOptions(
        tool="pgbackrest", batches=3, rows_per_batch=rows, backups_after=(0,), initial_mb=size_mb
    )
    truth = create_scenario(scenario, options, say=common.note)
    marker.write_text(json.dumps(wanted))
    return scenario, truth, f"built in {time.perf_counter() - started:.0f} s"


def run_baseline(work: Path, truth: dict, coordinate: dict, index: int) -> tuple[float, int]:
    """What a DBA would type: pgbackrest restore --type=time, pg_ctl start, wait for promotion."""
    directory = common.baseline_dir(work, index, mode=0o755)
    data = directory / "data"
    target = recovery_settings(coordinate)["recovery_target_time"]
    pgbackrest = shutil.which("pgbackrest") or "pgbackrest"
    pg = pgbin.for_major(int(coordinate["postgres"]["major"]))
    # archive-get refuses --spool-path without archive-async, and restore needs a writable one:
    # a DBA sets the restore_command explicitly, as here.
    common_args = [
        f"--config={truth['config']}",
        f"--stanza={truth['stanza']}",
        f"--pg1-path={data}",
        f"--lock-path={directory}",
        f"--log-path={directory}",
    ]
    archive_get = " ".join([pgbackrest, *common_args, "archive-get", "%f", '"%p"'])
    started = time.perf_counter()
    try:
        run_as_server_user(
            [
                pgbackrest,
                *common_args,
                f"--spool-path={directory}",
                f"--recovery-option=restore_command={archive_get}",
                f"--set={coordinate['backup_id']}",
                "--type=time",
                f"--target={target}",
                "--target-action=promote",
                "--archive-mode=off",
                "restore",
            ],
            timeout=TIMEOUT,
        )
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{directory}'\n")
        log = str(directory / "server.log")
        pg.run(
            "pg_ctl",
            ["-D", str(data), "-l", log, "-w", "-t", str(int(TIMEOUT)), "start"],
            timeout=TIMEOUT + 30,
        )
        common.wait_promoted(str(directory), TIMEOUT)
        took = time.perf_counter() - started
        max_id = common.max_id(str(directory))
    finally:
        pg.run("pg_ctl", ["-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
        common.remove_tree(directory)
    return took, max_id


def run_as_server_user(argv: list[str], *, timeout: float) -> None:
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        timeout=timeout,
        env=pgbin.server_env(),
        cwd="/",
        **pgbin.server_user_ids(),  # type: ignore[arg-type]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="table data before the backup")
    parser.add_argument("--rows-per-batch", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each (>= 3)")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the scenario")
    args, _unknown = parser.parse_known_args()
    if shutil.which("pgbackrest") is None:
        common.say("bench could not measure: pgbackrest is not installed")
        return 2
    stable = f"pgbr-{args.size_mb}mb" if args.keep else None
    work, existed = common.work_dir("drillkit-bench-", stable_name=stable)
    os.environ.setdefault("DRILLKIT_STATE_DIR", str(work / "state"))
    try:
        return bench(work, args.size_mb, args.rows_per_batch, max(3, args.runs), existed)
    except (DrillError, OSError, subprocess.SubprocessError, psycopg2.Error) as exc:
        common.say(f"bench could not measure: {type(exc).__name__}: {exc}")
        return 2
    finally:
        if not args.keep:
            common.remove_tree(work)


def bench(work: Path, size_mb: int, rows: int, runs: int, reuse: bool) -> int:
    scenario, truth, how = ensure_scenario(work, size_mb, rows, reuse)
    expected = truth["targets"][-1]
    catalog = {"kind": "pgbackrest", "stanza": truth["stanza"], "config": truth["config"]}
    common.note("catalog snapshot (pgbackrest info + verify, WAL view + index), not timed")
    snapshot = open_repository(catalog).snapshot(progress=common.note)
    coordinate = select_coordinate(snapshot, target=parse_iso(expected["target"]), policy="oldest")
    backup = next(b for b in snapshot.backups if b.backup_id == coordinate["backup_id"])
    load = os.getloadavg()[0]
    results: dict[str, list[tuple[float, int]]] = {"drillkit": [], "baseline": []}
    for i, side in common.interleaved(runs):
        problem = common.drop_caches()
        if side == "drillkit":
            results[side].append(common.time_sandbox(work, coordinate, i, start_timeout=TIMEOUT))
        else:
            results[side].append(run_baseline(work, truth, coordinate, i))
    say = common.say
    say(
        f"scenario {scenario} ({how}); pgBackRest full backup {coordinate['backup_id']} "
        f"({common.mb(backup.size_bytes)} of data, {coordinate['wal']['segments']} WAL segments "
        f"to the target {expected['target']}); {runs} interleaved runs each, medians; page cache "
        f"{'dropped' if problem is None else 'NOT dropped (' + problem + ')'}; load avg "
        f"{load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    seconds = {side: [t for t, _ in runs] for side, runs in results.items()}
    common.say_runs(seconds["drillkit"], seconds["baseline"], "pgbackrest restore + replay")
    wrong = [m for _, m in results["drillkit"] + results["baseline"] if m != expected["max_id"]]
    if wrong:
        say(f"  WRONG DATA: max(id) {wrong} where the ground truth says {expected['max_id']}")
        return 1
    ours = common.median(t for t, _ in results["drillkit"])
    bare = common.median(t for t, _ in results["baseline"])
    say(
        f"  restore-to-ready: drillkit {ours:.2f} s, bare {bare:.2f} s: "
        f"{common.ratio_text(ours, bare, GOAL)}; both restored max(id) = {expected['max_id']}"
    )
    return 0 if ours / bare <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
