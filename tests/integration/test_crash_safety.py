"""A worker killed (SIGKILL) in the middle of provisioning: the retried task gets one good
sandbox, or ``drillkit gc`` removes the orphan; nothing is left running.

The ProvisionSandbox stage (``drillkit.drill.provision``) runs in a child process, as in a task
runner. A hook parks the child at a known step (mid-copy, server started but not yet promoted,
sandbox ready) and tells the test, which checks the sandbox really is half-built there and then
SIGKILLs the child. The stage then runs again with the same deterministic sandbox id, as a
cleared or retried task would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from restorekit import tree_digest

from drillkit import drill
from drillkit.sandbox.base import LABEL
from drillkit.sandbox.gc import collect_local
from drillkit.state import read_json
from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.integration

TTL = timedelta(hours=2)
# The child: park at the step named by "hook", after telling the test it got there.
CHILD = r"""
import json, os, sys, threading, time
from datetime import timedelta
from pathlib import Path

from drillkit import drill
from drillkit.sandbox import copy as copy_module, local

args = json.loads(sys.argv[1])


def park(step):
    Path(args["reached"]).write_text(step)
    threading.Event().wait()  # until SIGKILL


if args["hook"] == "copy":
    real_cp = copy_module._cp

    def copy_part_then_park(source, target, **kwargs):
        (target / "global").mkdir()  # one directory copied, the rest never is
        if kwargs["owner"]:
            os.chown(target / "global", *kwargs["owner"])
        real_cp(source / "global", target / "global", **kwargs)
        park("copy")

    copy_module._cp = copy_part_then_park
elif args["hook"] == "start":
    def park_before_promotion(self, directory, socket_dir, port):
        park("start")

    local.LocalSandboxBackend._wait_promoted = park_before_promotion
elif args["hook"] == "ready":
    real_provision = local.LocalSandboxBackend.provision

    def provision_then_park(self, *a, **kw):
        real_provision(self, *a, **kw)
        park("ready")  # killed before the task could record its result

    local.LocalSandboxBackend.provision = provision_then_park

drill.provision(
    args["coordinate"], sandbox={"kind": "local"}, drill="crash", drill_id=args["drill_id"],
    sandbox_id=args["sandbox_id"], ttl=timedelta(hours=2), dry_run=False,
)
"""


@pytest.fixture
def sandboxes(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private sandbox root, for the child and for the retry in this process."""
    root = workdir / "sandboxes"
    root.mkdir(mode=0o755)
    monkeypatch.setenv("DRILLKIT_SANDBOX_ROOT", str(root))
    yield root
    collect_local(root=root, now=datetime.now(UTC) + timedelta(days=3650))


@pytest.fixture(scope="module")
def coordinates(clean_scenario) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """(coordinate, truth target) for targets 1 and 3 (restored from different backups)."""
    repo, truth = clean_scenario
    chosen = {}
    for index in (1, 3):
        target = truth["targets"][index]
        coordinate = drill.select(
            {"kind": "local", "path": str(repo)},
            policy="latest",
            target=parse_iso(target["target"]),
            rpo=timedelta(0),
            exclude=[],
            pinned=None,
        )
        chosen[index] = (coordinate, target)
    assert chosen[1][0]["backup_id"] != chosen[3][0]["backup_id"]
    return chosen


def _ids(run: str) -> dict[str, str]:
    return {
        "sandbox_id": drill.sandbox_id_for("crash", "drill_crash", run, "primary"),
        "drill_id": drill.drill_id_for("drill_crash", run),
    }


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned server is reaped by init, or not, here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _postmaster(directory: Path) -> int | None:
    pid_file = directory / "data" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _servers_under(root: Path) -> list[int]:
    """Running PostgreSQL servers whose data directory is under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            mine = b"postgres" in cmdline and str(root).encode() in cmdline
            if mine and _running(int(entry.name)):
                found.append(int(entry.name))
    return found


def crash_at(hook: str, coordinate: dict[str, Any], ids: dict[str, str], work: Path) -> Path:
    """Run the stage in a child, wait until it parks at ``hook``, SIGKILL it; the sandbox dir."""
    reached = work / f"reached-{hook}"
    args = {**ids, "coordinate": coordinate, "hook": hook, "reached": str(reached)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args, default=str)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not reached.exists():
        if child.poll() is not None:
            pytest.fail(f"the child ended before {hook}: {child.stdout.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"the child never reached {hook}"
        time.sleep(0.05)
    directory = Path(os.environ["DRILLKIT_SANDBOX_ROOT"]) / ids["sandbox_id"]
    label = read_json(directory / LABEL)
    expected_state = "ready" if hook == "ready" else "provisioning"
    assert label is not None and label["state"] == expected_state, label
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    child.stdout.close()
    return directory


def _retry(coordinate: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    return drill.provision(
        coordinate,
        sandbox={"kind": "local"},
        drill="crash",
        ttl=TTL,
        dry_run=False,
        **ids,
    )


def _assert_restored_to(record: dict[str, Any], target: dict[str, Any]) -> None:
    """The retried sandbox holds exactly the data as of the target (both sides)."""
    endpoint = record["endpoints"]["postgres"]
    conn = psycopg2.connect(
        host=endpoint["host"], port=endpoint["port"], user=endpoint["user"], dbname="app"
    )
    try:
        with conn.cursor() as cur:
            cur.execute("select max(id), bool_or(id = %s) from orders", (target["absent_id"],))
            assert cur.fetchone() == (target["max_id"], False)
    finally:
        conn.close()


@pytest.mark.parametrize("hook", ["copy", "start"])
def test_a_retry_after_a_crash_mid_provisioning_rebuilds_one_sandbox(
    hook, coordinates, sandboxes, workdir
):
    coordinate, target = coordinates[1]
    ids = _ids(f"manual__crash-{hook}")
    directory = crash_at(hook, coordinate, ids, workdir)
    orphan = _postmaster(directory)
    data = directory / "data"
    if hook == "copy":  # mid-copy: some files there, no server
        copied = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        backup = Path(coordinate["backup_path"])
        assert 0 < copied < sum(p.stat().st_size for p in backup.rglob("*") if p.is_file())
        assert orphan is None
    else:  # the worker died, its server lives on, still provisioning
        assert orphan is not None and _running(orphan)

    record = _retry(coordinate, ids)

    assert not record.get("resumed")  # a half-built sandbox is never trusted
    assert [p.name for p in sandboxes.iterdir()] == [ids["sandbox_id"]]
    assert read_json(directory / LABEL)["state"] == "ready"
    assert record["backup_id"] == coordinate["backup_id"]
    if orphan is not None:
        assert not _running(orphan), "the crashed try's server is still running"
        assert _postmaster(directory) != orphan
    _assert_restored_to(record, target)
    drill.teardown(record, keep=False, keep_ttl=TTL)
    assert _servers_under(sandboxes) == []
    assert list(sandboxes.iterdir()) == []


def test_a_retry_after_a_crash_once_ready_resumes_the_same_sandbox(coordinates, sandboxes, workdir):
    coordinate, target = coordinates[1]
    ids = _ids("manual__crash-ready")
    directory = crash_at("ready", coordinate, ids, workdir)
    server = _postmaster(directory)
    assert server is not None and _running(server)

    record = _retry(coordinate, ids)

    assert record["resumed"] is True  # the last completed step is kept, not redone
    assert _postmaster(directory) == server and _running(server)
    assert [p.name for p in sandboxes.iterdir()] == [ids["sandbox_id"]]
    _assert_restored_to(record, target)
    drill.teardown(record, keep=False, keep_ttl=TTL)
    assert not _running(server)
    assert _servers_under(sandboxes) == []


def test_gc_removes_the_orphan_of_a_killed_provisioning_at_once(
    clean_scenario, coordinates, sandboxes, workdir
):
    """Its provisioning process is gone: nobody will finish it, so `drillkit gc` does not wait
    for its expiry; it stops the orphaned server first. (A retry rebuilds it from scratch
    anyway: a half-built sandbox is never trusted.)"""
    repo, _ = clean_scenario
    before = tree_digest(repo)
    coordinate, _ = coordinates[1]
    ids = _ids("manual__crash-never-retried")
    directory = crash_at("start", coordinate, ids, workdir)
    orphan = _postmaster(directory)
    assert orphan is not None and _running(orphan)
    label = read_json(directory / LABEL)
    assert parse_iso(label["expires_at"]) > datetime.now(UTC) + timedelta(hours=1)

    gc = subprocess.run(
        [str(Path(sys.executable).parent / "drillkit"), "gc", "--root", str(sandboxes)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert gc.returncode == 0, gc.stderr
    assert f"removed local-sandbox {ids['sandbox_id']}" in gc.stdout
    assert f"its provisioning process (pid {label['owner']['pid']}) is gone" in gc.stdout
    assert not directory.exists()
    assert not _running(orphan)
    assert _servers_under(sandboxes) == []
    assert tree_digest(repo) == before


def test_gc_leaves_a_live_provisioning_and_a_handed_over_sandbox_alone(
    clean_scenario, coordinates, sandboxes, workdir
):
    """Airflow provisions in one task process and checks in later ones: once ready, a sandbox
    whose provisioning process has exited belongs to the run and lives until its TTL."""
    repo, _ = clean_scenario
    before = tree_digest(repo)
    coordinate, _ = coordinates[1]
    ids = _ids("manual__handed-over")
    reached = workdir / "reached-start"
    args = {**ids, "coordinate": coordinate, "hook": "start", "reached": str(reached)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args, default=str)], env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 60
        while not reached.exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never started"
            time.sleep(0.05)
        assert collect_local(root=sandboxes) == []  # its owner lives: still provisioning
    finally:
        child.kill()
        child.wait(timeout=10)
    handed = _ids("manual__handed-over-ready")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({**handed, "coordinate": coordinate, "hook": ""})],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]  # the provisioning task ended normally
    directory = sandboxes / handed["sandbox_id"]
    label = read_json(directory / LABEL)
    assert label["state"] == "ready" and "owner" not in label
    removed = collect_local(root=sandboxes)
    assert [r["id"] for r in removed] == [ids["sandbox_id"]]  # only the killed one
    assert directory.exists() and _running(_postmaster(directory))
    assert tree_digest(repo) == before


def test_a_retry_with_a_new_coordinate_does_not_resume_the_old_sandbox(
    coordinates, sandboxes, workdir
):
    old, _ = coordinates[1]
    new, new_target = coordinates[3]
    ids = _ids("manual__crash-new-coordinate")
    crash_at("ready", old, ids, workdir)

    record = _retry(new, ids)
    try:
        assert record["backup_id"] == new["backup_id"], (
            f"resumed={record.get('resumed')}: sandbox of {record['backup_id']} returned for a "
            f"coordinate that chose {new['backup_id']}"
        )
        _assert_restored_to(record, new_target)
    finally:
        drill.teardown(record, keep=False, keep_ttl=TTL)
