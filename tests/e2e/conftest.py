"""Airflow's real services for the e2e tier: what ``make airflow`` starts, on loopback.

``services`` (session) starts api-server, scheduler, dag-processor and triggerer over an embedded
PostgreSQL with a fresh Airflow home, reusing ``scripts/airflow_local.py`` (imported by path).
Its drills restore a scenario whose production clock was moved through three days, so a daily
schedule's logical dates are real recovery targets inside its WAL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# Debian's libfaketime, wherever the architecture puts it.
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
FAKETIME_MISSING = (
    "the backfill scenario moves production's clock through three days with libfaketime: "
    "`apt-get install -y libfaketime` (`make test` installs it)"
)
# The production clock of the scenario: Monday to Wednesday, a batch either side of 06:00.
DAYS = [datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=d) for d in range(3)]
DAILY_AT = timedelta(hours=6)
TERMINAL = {"success", "failed"}


def load_launcher() -> Any:
    """``scripts/airflow_local.py`` as a module (scripts/ is not a package)."""
    name = "drillkit_airflow_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "airflow_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def build_three_day_scenario(directory: Path) -> dict[str, Any]:
    """A real scenario whose production PostgreSQL ran under libfaketime, the clock jumping
    after each batch: batch 0 Monday 04:00, backup + batch 1 at 05:00, batch 2 at 07:00,
    backup + batch 3 Tuesday 05:00, batch 4 at 07:00, and so on. Commit timestamps, backup
    stop times and WAL are genuine PostgreSQL output; only the clock they read was moved.
    """
    from drillkit import pgbin
    from drillkit.scenario import ScenarioOptions, create_scenario

    if LIBFAKETIME is None:
        pytest.fail(FAKETIME_MISSING)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    clock = directory.parent / f"{directory.name}.clock"

    def set_clock(moment: datetime) -> None:
        offset = int((moment - datetime.now(UTC)).total_seconds())
        clock.write_text(f"{offset:+d}\n")
        clock.chmod(0o644)  # the server runs as the PostgreSQL OS user

    jumps = []
    for day in DAYS:
        jumps += [day + timedelta(hours=5), day + timedelta(hours=7)]
    set_clock(DAYS[0] + timedelta(hours=4))
    faked = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",  # timeouts and latches keep real time
    }
    real_run = pgbin.Installation.run  # every binary runs through an Installation

    def run(self: pgbin.Installation, name: str, args: list[str], **kwargs: Any) -> Any:
        # initdb too: WAL timestamps must never go backwards, or the first backup's
        # restorable window would start at initdb's real time. pg_ctl passes its
        # environment on to the server it starts.
        if name in ("initdb", "pg_ctl"):
            kwargs["env"] = {**(kwargs.get("env") or {}), **faked}
        return real_run(self, name, args, **kwargs)

    done: list[int] = []

    def after_batch(message: str) -> None:
        # create_scenario reports each committed batch before it sleeps and backs up: the
        # moment to move the clock to the next batch's (and that backup's) time.
        match = re.match(r"production: batch (\d+) ", message)
        if match and int(match.group(1)) < len(jumps):
            set_clock(jumps[int(match.group(1))])
            done.append(int(match.group(1)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pgbin.Installation, "run", run)
        truth = create_scenario(
            directory,
            ScenarioOptions(
                batches=7, backups_after=(0, 2, 4), initial_mb=1, pause=0.05, drill_name="e2e"
            ),
            say=after_batch,
        )
    assert done == list(range(len(jumps))), "the clock did not move after every batch"
    committed = [b["committed_at"] for b in truth["batches"]]
    assert committed[1].startswith("2026-01-05T05:") and committed[6].startswith("2026-01-07T07:")
    return truth


def drill_spec(scenario: Path, name: str, **changes: Any) -> dict[str, Any]:
    """The scenario's own spec, one tier unless ``changes`` say otherwise, unpaused."""
    spec = yaml.safe_load((scenario / "drill.yaml").read_text())
    spec.update({"drill": name, "paused": False, "tiers": spec["tiers"][:1], **changes})
    return spec


def fallback_and_fail_specs(scenario: Path) -> list[dict[str, Any]]:
    """A drill whose primary tier always times out provisioning (it falls back and passes),
    and one whose check can never hold (FAIL)."""
    base = yaml.safe_load((scenario / "drill.yaml").read_text())
    primary, secondary = base["tiers"][:2]
    impossible = {
        "name": "impossible",
        "kind": "sql",
        "target": "app-db",
        "query": "select count(*) from orders",
        "expect": {"lt": 0},
    }
    return [
        # Restoring takes longer than 100 ms on any machine: PROVISION_TIMEOUT, then fall back.
        drill_spec(scenario, "e2e-fallback", tiers=[{**primary, "timeout": "100ms"}, secondary]),
        drill_spec(scenario, "e2e-fail", checks=[*base["checks"], impossible]),
    ]


def write_drill(dags: Path, spec: dict[str, Any]) -> str:
    from drillkit.spec import loader_name, loader_source

    (dags / "drills").mkdir(parents=True, exist_ok=True)
    path = dags / "drills" / f"{spec['drill']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (dags / loader_name(path)).write_text(loader_source(f"drills/{path.name}"))
    return f"drill_{spec['drill'].replace('-', '_')}"


class MemorySampler(threading.Thread):
    """Peak RSS and PSS of every process of the deployment, sampled twice a second."""

    def __init__(self, launcher: Any, home: Path, roots: list[Path]) -> None:
        super().__init__(daemon=True)
        self.launcher, self.home, self.roots = launcher, home, roots
        self.peak = (0.0, 0.0, 0)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            pids = self.launcher.processes_of(self.home, self.roots)
            rss, pss = self.launcher.memory_mib(pids)
            if rss > self.peak[0]:
                self.peak = (rss, pss, len(pids))


@dataclass
class Services:
    """The running deployment and a small REST client for it."""

    launcher: Any  # scripts/airflow_local.py
    stack: Any
    root: Path
    scenario: Path
    truth: dict[str, Any]
    dag_ids: dict[str, str]
    token: str = ""
    stopped: float | None = None  # when the last test stopped the services

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.stack.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> tuple[int, Any]:
        return self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.stack.check_alive()
            status, run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            assert status == 200, run
            if run["state"] in TERMINAL:
                return dict(run)
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} still {run['state']} after {timeout} s")
            time.sleep(1)

    def report(self, dag_id: str, run_id: str) -> dict[str, Any]:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value"
        )
        status, entry = self.api("GET", path)
        assert status == 200, entry
        value = entry["value"]
        return dict(json.loads(value) if isinstance(value, str) else value)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.launcher.airflow(list(args), self.stack.env, capture_output=True, text=True)


@pytest.fixture(scope="session")
def services(work_root: Path) -> Iterator[Services]:
    launcher = load_launcher()
    root = work_root / "e2e"
    root.mkdir()
    root.chmod(0o755)
    dags = root / "dags"
    dags.mkdir()
    started = time.monotonic()
    stack = launcher.LocalAirflow(
        state=root / "airflow-local",
        port=launcher.free_port(),
        bundles={"e2e": dags, "drillkit-examples": REPO / "dags"},
        durable=False,
        extra_env={
            "DRILLKIT_STATE_DIR": str(root / "drillkit-state"),
            "DRILLKIT_SANDBOX_ROOT": str(root / "sandboxes"),
        },
    )
    sampler = MemorySampler(launcher, stack.home, [root])
    deployed: Services | None = None
    try:
        # The metadata database starts before the scenario moves any clock.
        stack.prepare(say=lambda _m: None)
        stack.spawn()
        sampler.start()
        scenario = root / "scenario"
        truth = build_three_day_scenario(scenario)
        dag_ids = {
            "manual": write_drill(dags, drill_spec(scenario, "e2e")),
            "daily": write_drill(
                dags,
                drill_spec(
                    scenario,
                    "e2e-daily",
                    schedule="0 6 * * *",
                    target="logical_date",
                    # Only the backfill runs it: no scheduled run of "today" by surprise.
                    start_date="2100-01-01T00:00:00Z",
                ),
            ),
        }
        for spec in fallback_and_fail_specs(scenario):
            dag_ids[spec["drill"].removeprefix("e2e-")] = write_drill(dags, spec)
        stack.wait_healthy(timeout=240)
        deployed = Services(launcher, stack, root, scenario, truth, dag_ids, token=stack.token())
        deadline = time.monotonic() + 120
        for dag_id in dag_ids.values():
            while deployed.api("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
                assert time.monotonic() < deadline, f"{dag_id} was not loaded by the dag-processor"
                time.sleep(1)
        print(f"\ne2e: Airflow services ready after {time.monotonic() - started:.0f} s")
        yield deployed
    finally:
        stack.stop()
        sampler.halt.set()
        with contextlib.suppress(RuntimeError):
            sampler.join(timeout=5)
        rss, pss, count = sampler.peak
        ran = (deployed.stopped if deployed and deployed.stopped else time.monotonic()) - started
        print(
            f"\ne2e: services up {ran:.0f} s from start to stop; peak memory of the deployment "
            f"RSS {rss:.0f} MiB, PSS {pss:.0f} MiB ({count} processes)"
        )
        from drillkit.sandbox.gc import collect_local

        collect_local(root=root / "sandboxes", now=datetime.now(UTC) + timedelta(days=3650))
