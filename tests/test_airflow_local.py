"""`make airflow`'s launcher: the memory it reports covers every process it started, and its
port stays 8080 across a quick restart or the launcher says who holds it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def launcher():
    name = "drillkit_airflow_local_unit"
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "airflow_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_memory_covers_the_whole_process_tree(launcher, tmp_path):
    """Grandchildren without the Airflow home in their environment count too."""
    env = {"PATH": os.environ["PATH"]}  # no AIRFLOW_HOME: found by the tree walk alone
    tree = subprocess.Popen(
        ["sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait"], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            pids = launcher.processes_of(tmp_path / "home", [], tree_of=tree.pid)
            if len(pids) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert tree.pid in pids and len(pids) >= 4, pids  # sh, sleep, sh, sleep
        commands = {Path(f"/proc/{p}/comm").read_text().strip() for p in pids}
        assert commands == {"sh", "sleep"}
        rss, pss = launcher.memory_mib(pids)
        assert rss > 0 and 0 < pss <= rss
        alone = launcher.processes_of(tmp_path / "home", [])
        assert tree.pid not in alone  # without the tree walk this tree is invisible
    finally:
        os.killpg(tree.pid, 9)
        tree.wait()


def _time_wait_port() -> int:
    """A port whose server closed a connection first: it sits in TIME_WAIT, no listener.
    The server sets SO_REUSEADDR, as uvicorn (Airflow's api-server) does on its socket."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    time.sleep(0.1)
    client.close()
    server.close()
    return int(port)


def test_a_quick_restart_keeps_the_port(launcher):
    port = _time_wait_port()
    probe = socket.socket()
    with pytest.raises(OSError):  # what the old check did: a bind without SO_REUSEADDR
        probe.bind(("127.0.0.1", port))
    probe.close()
    assert launcher.choose_port(port, wait=0) == port


def test_a_port_held_by_a_listener_is_a_clear_failure_not_a_move(launcher):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(SystemExit) as stopped:
            launcher.choose_port(port, wait=0.5)
        message = str(stopped.value)
        assert f"port {port} is in use" in message
        assert f"{os.getpid()} " in message  # names the process holding it
        assert "AIRFLOW_PORT=" in message
    finally:
        holder.close()
