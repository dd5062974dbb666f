"""Restore-to-ready of a Barman Cloud backup from a loopback S3 store (moto): drillkit's local
sandbox against a bare ``barman-cloud-restore`` + WAL replay with barman-cloud-wal-restore.

Usage: python bench/bench_barman.py [--size-mb 1000] [--runs 2]. Goal: at most 1.2x.
Both sides use the same tools, the same store and the same recovery target; runs alternate.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "barman"))

import common
import objectstore
import psycopg2

from drillkit import drill, pgbin
from drillkit.barman import tools
from drillkit.barman.scenario import BarmanScenarioOptions, create_barman_scenario
from drillkit.exceptions import DrillError
from drillkit.sandbox.local import recovery_settings, stop_server
from drillkit.timeutil import parse_iso

GOAL = 1.2
TIMEOUT = 1800.0
DEST, SERVER = "s3://bench-barman/pg", "bench"


def build(work: Path, store: objectstore.ObjectStore, size_mb: int) -> tuple[dict, dict]:
    store.create_bucket("bench-barman")
    # About 1 MiB of table data per initial_mb unit (3600 rows of ~290 bytes).
    options = BarmanScenarioOptions(
        endpoint_url=store.url,
        destination=DEST,
        server_name=SERVER,
        batches=4,
        rows_per_batch=20_000,
        backups_after=(0,),
        initial_mb=size_mb,
        wal_compression="none",
        pause=0.2,
    )
    truth = create_barman_scenario(work / "scenario", options, say=common.note)
    catalog = {
        "kind": "barman_cloud",
        "destination": DEST,
        "server_name": SERVER,
        "endpoint_url": store.url,
    }
    return truth, catalog


def run_baseline(work: Path, coordinate: dict, store_url: str, index: int) -> tuple[float, int]:
    """What a DBA would type: barman-cloud-restore, the recovery settings, pg_ctl start, wait."""
    directory = common.baseline_dir(work, index, mode=0o700)
    data = directory / "data"
    creds = {k: v for k, v in os.environ.items() if k in tools.AWS_ENV}
    try:
        started = time.perf_counter()
        restore = ["--endpoint-url", store_url, DEST, SERVER, coordinate["backup_id"], str(data)]
        tools.run_tool("barman-cloud-restore", restore, credentials=creds, timeout=TIMEOUT)
        wal_restore = [str(tools.tool("barman-cloud-wal-restore")), "--endpoint-url", store_url]
        settings = {
            "restore_command": " ".join(shlex.quote(a) for a in [*wal_restore, DEST, SERVER])
            + " %f %p",
            "recovery_target_time": recovery_settings(coordinate)["recovery_target_time"],
            "recovery_target_action": "promote",
            "listen_addresses": "",
            "unix_socket_directories": str(directory),
            "archive_mode": "off",
        }
        common.write_recovery(data, settings)
        log = str(directory / "server.log")
        start = ["-D", str(data), "-l", log, "-w", "-t", str(int(TIMEOUT)), "start"]
        pgbin.run("pg_ctl", start, timeout=TIMEOUT + 30, env=creds)
        common.wait_promoted(str(directory), TIMEOUT)
        took = time.perf_counter() - started
        return took, common.max_id(str(directory))
    finally:
        stop_server(data)
        common.remove_tree(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="table data before the backup")
    parser.add_argument("--runs", type=int, default=2, help="measured runs of each")
    args, _unknown = parser.parse_known_args()
    work, _ = common.work_dir("drillkit-bench-barman-")
    os.environ["DRILLKIT_STATE_DIR"] = str(work / "state")
    store = objectstore.start_object_store(work)
    os.environ.update(objectstore.CREDENTIALS)
    try:
        return bench(work, store, args.size_mb, max(1, args.runs))
    except (DrillError, OSError, subprocess.SubprocessError, psycopg2.Error) as exc:
        common.say(f"bench could not measure: {type(exc).__name__}: {exc}")
        log = work / "scenario" / "production.log"
        if log.exists():
            common.say(
                "production.log (last lines):\n" + "\n".join(log.read_text().splitlines()[-15:])
            )
        return 2
    finally:
        for leftover in (work / "sandboxes").glob("*/data"):
            stop_server(leftover)
        objectstore.stop_object_store(store)
        common.remove_tree(work)


def bench(work: Path, store: objectstore.ObjectStore, size_mb: int, runs: int) -> int:
    started = time.perf_counter()
    truth, catalog = build(work, store, size_mb)
    common.note(f"scenario built in {time.perf_counter() - started:.0f} s")
    expected = truth["targets"][-1]
    coordinate = drill.select(
        catalog,
        policy="latest",
        target=parse_iso(expected["target"]),
        rpo=timedelta(0),
        exclude=[],
        pinned=None,
    )
    stored = store.listing("bench-barman")
    data_bytes = sum(size for key, (_etag, size) in stored.items() if "/base/" in key)
    times: dict[str, list[float]] = {"drillkit": [], "baseline": []}
    for i, side in common.interleaved(runs):
        if side == "drillkit":
            took, found = common.time_sandbox(work, coordinate, i, start_timeout=TIMEOUT)
        else:
            took, found = run_baseline(work, coordinate, store.url, i)
        if found != expected["max_id"]:
            common.say(f"{side} restored max(id)={found}, truth says {expected['max_id']}")
            return 1
        times[side].append(took)
    ours, base = common.median(times["drillkit"]), common.median(times["baseline"])
    common.say(
        f"barman-cloud restore-to-ready of backup {coordinate['backup_id']} "
        f"({common.mb(data_bytes)} in the store, {coordinate['wal']['segments']} WAL segments to "
        f"replay), {runs} interleaved runs each, medians; load avg {os.getloadavg()[0]:.1f}"
    )
    common.say_runs(times["drillkit"], times["baseline"], "barman-cloud-restore + replay")
    common.say(
        f"  drillkit {ours:.2f} s vs bare {base:.2f} s: {common.ratio_text(ours, base, GOAL)}; "
        f"both restored max(id)={expected['max_id']} as the ground truth says"
    )
    return 0 if ours <= GOAL * base else 1


if __name__ == "__main__":
    sys.exit(main())
