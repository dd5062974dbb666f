"""Restore-to-ready time of drillkit's local sandbox against `cp -r` plus a bare WAL replay.

Usage: python bench/bench_restore.py [--size-mb 1000] [--runs 3] [--keep]. Goal: at most 1.2x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import psycopg2

from drillkit import pgbin
from drillkit.catalog import LocalCatalog
from drillkit.exceptions import DrillError
from drillkit.pitr import select_coordinate
from drillkit.sandbox import copy as sandbox_copy
from drillkit.sandbox.local import LocalSandboxBackend, recovery_settings, stop_server
from drillkit.scenario import ScenarioOptions, create_scenario
from drillkit.timeutil import parse_iso

GOAL = 1.2
BATCHES = 6  # backups after batches 0, 2, 4; the oldest backup replays batches 1-5
# Each orders row costs about 177 bytes of WAL here (heap insert + btree insert, measured with
# pg_waldump --stats), so 400k rows a batch replays about 5 x 71 MB of WAL.
ROWS_PER_BATCH = 400_000
ORDERS_ROW_BYTES = 105  # heap tuple + line pointer + primary-key entry, for sizing batch 0
TIMEOUT = 300.0


# -- scenario ------------------------------------------------------------------------------------
def _backup_bytes(directory: Path) -> int:
    return common.tree_bytes(next((directory / "repo" / "base").iterdir()))


def _bytes_per_initial_mb(work: Path) -> tuple[int, float]:
    """Empty-backup size and bytes per ``initial_mb`` unit, measured on two tiny scenarios.

    Measured, not assumed: the unit is meant to be 1 MiB, but a change in scenario.py must never
    turn a 1 GB bench into a much larger one.
    """
    units, sizes = 64, []
    for initial in (0, units):
        probe = work / f"calibrate-{initial}"
        common.remove_tree(probe)
        options = ScenarioOptions(
            batches=2, rows_per_batch=1, backups_after=(0,), initial_mb=initial, pause=0
        )
        create_scenario(probe, options, say=lambda _m: None)
        sizes.append(_backup_bytes(probe))
        common.remove_tree(probe)
    return sizes[0], max(1.0, (sizes[1] - sizes[0]) / units)


def ensure_scenario(work: Path, size_mb: int, rows: int, reuse: bool) -> tuple[Path, dict, str]:
    scenario, marker = work / "scenario", work / "bench.json"
    wanted = {"size_mb": size_mb, "rows_per_batch": rows, "batches": BATCHES}
    kept = reuse and (scenario / "truth.json").is_file() and marker.is_file()
    if kept and json.loads(marker.read_text()).get("params") == wanted:
        return scenario, json.loads((scenario / "truth.json").read_text()), "reused"
    common.remove_tree(scenario)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    common.note("calibrating the scenario's initial_mb unit")
    empty, per_unit = _bytes_per_initial_mb(work)
    filler = size_mb * 1e6 - empty - rows * ORDERS_ROW_BYTES
    initial_mb = max(0, round(filler / per_unit))
    common.note(f"building scenario: initial_mb={initial_mb} ({per_unit / 1024:.1f} KiB a unit)")
    options = ScenarioOptions(batches=BATCHES, rows_per_batch=rows, initial_mb=initial_mb)
    truth = create_scenario(scenario, options, say=common.note)
    params = {"params": wanted, "initial_mb": initial_mb, "bytes_per_unit": per_unit}
    marker.write_text(json.dumps(params))
    return scenario, truth, f"built in {time.perf_counter() - started:.0f} s"


# -- cache control -------------------------------------------------------------------------------
def cold_start(backup: Path, wal_files: list[Path]) -> str:
    """Same cache state before every measured run: dropped, else everything read once."""
    problem = common.drop_caches()
    if problem is None:
        return "page cache dropped before each run"
    common.read_all([backup, *wal_files])
    return f"page cache NOT dropped ({problem}); backup + WAL read once before each run"


# -- the two contenders --------------------------------------------------------------------------
class TimedBackend(LocalSandboxBackend):
    """drillkit's backend, unchanged, with its phases timed from outside."""

    watch: common.Stopwatch

    def _restore(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self.watch.phase("copy+start"):
            return super()._restore(*args, **kwargs)

    def _wait_promoted(self, *args: Any, **kwargs: Any) -> str | None:
        with self.watch.phase("promote"):
            return super()._wait_promoted(*args, **kwargs)


def run_drillkit(work: Path, coordinate: dict, index: int) -> tuple[dict, dict]:
    backend = TimedBackend(root=work / "sandboxes", start_timeout=TIMEOUT)
    watch = backend.watch = common.Stopwatch()
    original: Callable[..., int] = sandbox_copy.copy_backup

    def timed_copy(*args: Any, **kwargs: Any) -> int:
        with watch.phase("copy"):
            return original(*args, **kwargs)

    # The local catalog's materialise looks copy_backup up in drillkit.sandbox.copy at each call:
    # patch it there for this run only, to split the phase.
    sandbox_copy.copy_backup = timed_copy
    sandbox_id = common.sandbox_id(index)
    try:
        with watch.phase("total"):
            record = common.provision(backend, coordinate, sandbox_id)
        found = query_restored(record["endpoints"]["postgres"]["host"], coordinate)
    finally:
        sandbox_copy.copy_backup = original
        backend.teardown(sandbox_id)
    ph = watch.phases
    phases = {
        "total": ph["total"],
        "copy": ph["copy"],
        "config+pg_ctl start": ph["copy+start"] - ph["copy"],
        "wait promoted": ph["promote"],
        "other": ph["total"] - ph["copy+start"] - ph["promote"],
    }
    return phases, found


def run_baseline(work: Path, coordinate: dict, target_time: str, index: int) -> tuple[dict, dict]:
    """What a DBA would type: cp -r, chown -R, the recovery settings, pg_ctl start, wait."""
    user = pgbin.os_user()
    directory = common.baseline_dir(work, index, mode=0o700)
    data = directory / "data"
    watch = common.Stopwatch()
    try:
        with watch.phase("cp -r"):
            subprocess.run(["cp", "-r", coordinate["backup_path"], str(data)], check=True)
        if user:
            with watch.phase("chown -R"):
                subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(data)], check=True)
        with watch.phase("config"):
            settings = {
                "restore_command": f'cp "{coordinate["archive"]}/%f" "%p"',
                "recovery_target_time": target_time,
                "recovery_target_action": "promote",
                "listen_addresses": "",
                "unix_socket_directories": str(directory),
                "archive_mode": "off",
            }
            common.write_recovery(data, settings)
        with watch.phase("pg_ctl start"):
            log = str(directory / "server.log")
            start = ["-D", str(data), "-l", log, "-w", "-t", str(int(TIMEOUT)), "start"]
            pgbin.run("pg_ctl", start, timeout=TIMEOUT + 30)
        with watch.phase("wait promoted"):
            # One open session: pg_is_in_recovery() sees the promotion without reconnecting.
            common.wait_promoted(str(directory), TIMEOUT)
        found = query_restored(str(directory), coordinate)
    finally:
        stop_server(data)
        common.remove_tree(directory)
    ph = watch.phases
    ph["total"] = ph["cp -r"] + ph["config"] + ph["pg_ctl start"] + ph["wait promoted"]
    return ph, found


def query_restored(host: str, coordinate: dict) -> dict:
    conn = psycopg2.connect(host=host, user="postgres", dbname="app")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select (select max(id) from orders), "
                "pg_last_wal_replay_lsn()::text, "
                "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn)",
                (coordinate["backup"]["start_lsn"],),
            )
            max_id, end_lsn, replayed = cur.fetchone()
    finally:
        conn.close()
    return {"max_id": max_id, "end_lsn": end_lsn, "wal_lsn_distance": float(replayed or 0)}


def wal_record_bytes(coordinate: dict, end_lsn: str) -> int | None:
    """Bytes of WAL records replayed (the LSN distance also counts segment-switch padding)."""
    args = ["--stats", "-p", coordinate["archive"], "-s", coordinate["backup"]["start_lsn"]]
    result = pgbin.run("pg_waldump", [*args, "-e", end_lsn], check=False, timeout=TIMEOUT)
    totals = [line.split() for line in result.stdout.splitlines() if line.startswith("Total ")]
    return int(totals[-1][-2]) if totals and totals[-1][-1] == "[100%]" else None


# -- main ----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="base backup size (MB)")
    parser.add_argument("--rows-per-batch", type=int, default=ROWS_PER_BATCH)
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each (>= 3)")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the scenario")
    args = parser.parse_args()
    runs = max(3, args.runs)
    stable = f"{args.size_mb}mb" if args.keep else None
    work, existed = common.work_dir("drillkit-bench-", stable_name=stable)
    # Verification and WAL-index caches stay with the scenario they describe.
    os.environ.setdefault("DRILLKIT_STATE_DIR", str(work / "state"))
    try:
        return bench(work, args.size_mb, args.rows_per_batch, runs, reuse=existed)
    except (DrillError, OSError, subprocess.SubprocessError, psycopg2.Error, TimeoutError) as exc:
        common.say(f"bench could not measure: {type(exc).__name__}: {exc}")
        return 2
    finally:
        if not args.keep:
            for leftover in (work / "sandboxes").glob("*/data"):
                stop_server(leftover)
            common.remove_tree(work)


def bench(work: Path, size_mb: int, rows: int, runs: int, *, reuse: bool) -> int:
    scenario, truth, how = ensure_scenario(work, size_mb, rows, reuse)
    expected = truth["targets"][-1]
    common.note("catalog snapshot (verification + WAL index, cached), not timed")
    snapshot = LocalCatalog(scenario / "repo").snapshot()
    coordinate = select_coordinate(snapshot, target=parse_iso(expected["target"]), policy="oldest")
    if coordinate["backup_id"] != truth["backups"][0]["backup_id"]:
        common.say(f"bench chose {coordinate['backup_id']}, not the oldest backup")
        return 2
    backup = Path(coordinate["backup_path"])
    first_segment = coordinate["wal"]["first_segment"]
    wal_files = sorted(p for p in Path(coordinate["archive"]).iterdir() if p.name >= first_segment)
    target_time = recovery_settings(coordinate)["recovery_target_time"]
    backup_bytes = common.tree_bytes(backup)

    results: dict[str, list[tuple[dict, dict]]] = {"drillkit": [], "baseline": []}
    cache_note = ""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load = os.getloadavg()[0]
    for i, side in common.interleaved(runs):
        cache_note = cold_start(backup, wal_files)
        if side == "drillkit":
            results[side].append(run_drillkit(work, coordinate, i))
        else:
            results[side].append(run_baseline(work, coordinate, target_time, i))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    end_lsn = results["drillkit"][0][1]["end_lsn"]
    return report(
        results=results,
        truth_max=expected["max_id"],
        backup_bytes=backup_bytes,
        coordinate=coordinate,
        wal_records=wal_record_bytes(coordinate, end_lsn),
        header=(
            f"scenario {scenario} ({how}); backup {coordinate['backup_id']}, target "
            f"{expected['target']}; {cache_note}; {runs} interleaved runs each, medians; "
            f"load avg {load:.1f} -> {os.getloadavg()[0]:.1f}"
        ),
        rss=(rss_before, rss_after),
    )


def _phase_line(label: str, runs: list[tuple[dict, dict]], names: list[str]) -> str:
    parts = [f"{n} {common.median(r[0][n] for r in runs):.2f}" for n in names if n in runs[0][0]]
    return f"  {label} phases (s): " + ", ".join(parts)


def report(
    *,
    results: dict[str, list[tuple[dict, dict]]],
    truth_max: int,
    backup_bytes: int,
    coordinate: dict,
    wal_records: int | None,
    header: str,
    rss: tuple[int, int],
) -> int:
    dk, base = results["drillkit"], results["baseline"]
    say = common.say
    say(header)
    for i, ((dp, _), (bp, _)) in enumerate(zip(dk, base, strict=True)):
        say(
            f"  run {i + 1}: drillkit {dp['total']:.2f} s (copy {dp['copy']:.2f}) | "
            f"cp -r {bp['cp -r']:.2f} + replay {bp['total'] - bp['cp -r']:.2f} = "
            f"{bp['total']:.2f} s (chown -R {bp.get('chown -R', 0):.2f} not counted)"
        )
    ours = common.median(p["total"] for p, _ in dk)
    cp = common.median(p["cp -r"] for p, _ in base)
    replay = common.median(p["total"] - p["cp -r"] for p, _ in base)
    distance = common.median(f["wal_lsn_distance"] for _, f in dk + base)
    wal = wal_records or distance
    segments = coordinate["wal"]["segments"]
    say(
        f"restore-to-ready ({common.gb(backup_bytes)} backup, {common.mb(wal)} WAL): drillkit "
        f"{ours:.1f} s | cp -r {cp:.1f} s + bare replay {replay:.1f} s = {cp + replay:.1f} s | "
        f"{common.ratio_text(ours, cp + replay, GOAL)}"
    )
    say(
        f"  WAL: {common.mb(wal)} of records, {common.mb(distance)} of LSN (segment switches "
        f"pad), {segments} archived segments restored by restore_command"
    )
    say(_phase_line("drillkit", dk, ["copy", "config+pg_ctl start", "wait promoted", "other"]))
    say(
        _phase_line(
            "baseline", base, ["cp -r", "chown -R", "config", "pg_ctl start", "wait promoted"]
        )
    )
    say(
        f"  copy: drillkit {common.gb(backup_bytes / common.median(p['copy'] for p, _ in dk))}/s,"
        f" cp -r {common.gb(backup_bytes / cp)}/s; replay (start + promote): drillkit "
        f"{common.mb(wal / common.median(p['total'] - p['copy'] for p, _ in dk))}/s, bare "
        f"{common.mb(wal / replay)}/s"
    )
    say(
        f"  peak RSS of this process (drillkit runs in it): {rss[1] / 1024:.0f} MB "
        f"({rss[0] / 1024:.0f} MB before the runs)"
    )
    found = {side: sorted({f["max_id"] for _, f in runs}) for side, runs in results.items()}
    ok = found["drillkit"] == found["baseline"] == [truth_max]
    say(
        f"  restored max(id): drillkit {found['drillkit']}, baseline {found['baseline']}, "
        f"truth {truth_max}: {'match' if ok else 'MISMATCH: the restores are wrong'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
