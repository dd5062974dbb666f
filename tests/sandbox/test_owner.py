"""Who owns a provisioning sandbox: a live process, a dead one, a zombie, a recycled pid."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from drillkit.sandbox.owner import current_owner, owner_gone, start_time

pytestmark = pytest.mark.unit


def test_this_process_is_a_live_owner() -> None:
    owner = current_owner()
    assert owner["start_time"] is not None and owner["boot_id"]
    assert owner_gone(owner) is False


def test_a_reaped_process_is_gone_and_a_zombie_is_gone_too() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = {**current_owner(), "pid": child.pid, "start_time": start_time(child.pid)}
    assert owner_gone(owner) is False
    child.kill()
    deadline = time.monotonic() + 10
    while start_time(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # killed, not yet reaped: a zombie
    assert owner_gone(owner) is True
    child.wait()
    assert owner_gone(owner) is True


def test_a_recycled_pid_is_not_the_owner() -> None:
    owner = {**current_owner(), "start_time": current_owner()["start_time"] - 1}
    assert owner_gone(owner) is True


@pytest.mark.parametrize(
    "change", [{"boot_id": "another-boot"}, {"pid_namespace": "pid:[1]"}, {"pid": "12"}, None]
)
def test_an_owner_it_cannot_judge_is_left_to_the_ttl(change: dict | None) -> None:
    owner = None if change is None else {**current_owner(), **change}
    assert owner_gone(owner) is None
