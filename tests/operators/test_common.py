"""run_core: core errors and timeouts become the gate's findings, a lost timeout included."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
)
from drillkit.operators._common import run_core

from drillkit.exceptions import SandboxError, TransientDrillError

pytestmark = pytest.mark.unit


class FakeTI:
    task_id = "primary.provision_sandbox"

    def __init__(self, try_number: int = 1) -> None:
        self.pushed: dict[str, Any] = {}
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(timeout: timedelta | None, *, retries: int = 0, try_number: int = 1) -> dict[str, Any]:
    return {
        "ti": FakeTI(try_number),
        "task": SimpleNamespace(execution_timeout=timeout, retries=retries),
    }


def test_a_result_in_time_is_returned():
    context = _context(timedelta(seconds=30))
    assert run_core(context, lambda: {"id": "s1"}) == {"id": "s1"}
    assert context["ti"].pushed == {}


def test_a_drill_error_is_recorded_for_the_gate():
    context = _context(None)

    def fail() -> None:
        raise SandboxError("no space left", code="SANDBOX_DISK_FULL")

    with pytest.raises(AirflowFailException, match="SANDBOX_DISK_FULL"):
        run_core(context, fail)
    assert context["ti"].pushed["error"]["code"] == "SANDBOX_DISK_FULL"


def test_the_timeout_signal_is_recorded_with_the_tasks_code():
    context = _context(timedelta(seconds=1))

    def alarm() -> None:
        raise AirflowTaskTimeout("Timeout")

    with pytest.raises(AirflowFailException, match="PROVISION_TIMEOUT"):
        run_core(context, alarm, timeout_code="PROVISION_TIMEOUT")
    assert context["ti"].pushed["error"]["code"] == "PROVISION_TIMEOUT"


def test_a_late_result_is_a_timeout_even_when_the_signal_was_lost():
    """Airflow's SIGALRM can land in a finalizer and vanish: the late result must not pass."""
    context = _context(timedelta(milliseconds=20))
    undone: list[dict[str, str]] = []

    def slow() -> dict[str, str]:
        time.sleep(0.1)  # no alarm here: run_core is called without Airflow's timeout wrapper
        return {"id": "late-sandbox"}

    with pytest.raises(AirflowFailException, match=r"PROVISION_TIMEOUT: .*past its execution"):
        run_core(context, slow, timeout_code="PROVISION_TIMEOUT", undo=undone.append)
    assert undone == [{"id": "late-sandbox"}]  # removed before the task fails
    error = context["ti"].pushed["error"]
    assert error["code"] == "PROVISION_TIMEOUT"
    assert "timeout signal was lost" in error["message"]


def _disk_full() -> None:
    raise SandboxError("no space left", code="SANDBOX_DISK_FULL")


def test_a_tier_stage_records_a_drill_error_and_is_skipped_not_failed():
    """A tier that fails its gate is data for the gate: no failed task instance."""
    context = _context(None, retries=3)
    with pytest.raises(AirflowSkipException, match="SANDBOX_DISK_FULL: no space left"):
        run_core(context, _disk_full, fall_back=True)  # deterministic: no retry either
    assert context["ti"].pushed["error"]["code"] == "SANDBOX_DISK_FULL"


def test_a_tier_stage_timeout_is_recorded_and_skipped():
    context = _context(timedelta(seconds=1))

    def alarm() -> None:
        raise AirflowTaskTimeout("Timeout")

    with pytest.raises(AirflowSkipException, match="PROVISION_TIMEOUT"):
        run_core(context, alarm, timeout_code="PROVISION_TIMEOUT", fall_back=True)
    assert context["ti"].pushed["error"]["code"] == "PROVISION_TIMEOUT"


def test_a_late_result_of_a_tier_stage_is_undone_recorded_and_skipped():
    context = _context(timedelta(milliseconds=20))
    undone: list[dict[str, str]] = []

    def slow() -> dict[str, str]:
        time.sleep(0.1)
        return {"id": "late-sandbox"}

    with pytest.raises(AirflowSkipException, match="PROVISION_TIMEOUT"):
        run_core(
            context, slow, timeout_code="PROVISION_TIMEOUT", undo=undone.append, fall_back=True
        )
    assert undone == [{"id": "late-sandbox"}]


@pytest.mark.parametrize("fall_back", [False, True])
def test_a_transient_error_is_raised_while_retries_remain(fall_back):
    def busy() -> None:
        raise TransientDrillError("port busy")

    context = _context(None, retries=2, try_number=2)
    with pytest.raises(TransientDrillError):
        run_core(context, busy, fall_back=fall_back)


def test_a_transient_error_on_the_last_try_becomes_the_gates_data():
    def busy() -> None:
        raise TransientDrillError("port busy")

    context = _context(None, retries=2, try_number=3)
    with pytest.raises(AirflowSkipException, match="TRANSIENT: port busy"):
        run_core(context, busy, fall_back=True)
    assert context["ti"].pushed["error"]["code"] == "TRANSIENT"
    plain = _context(None, retries=2, try_number=3)
    with pytest.raises(AirflowFailException, match="TRANSIENT"):
        run_core(plain, busy)


def test_a_crash_retries_then_is_recorded_as_an_error_of_the_stage():
    def crash() -> None:
        raise KeyError("backup")

    early = _context(None, retries=1, try_number=1)
    with pytest.raises(KeyError):
        run_core(early, crash, fall_back=True)
    assert early["ti"].pushed == {}
    last = _context(None, retries=1, try_number=2)
    with pytest.raises(AirflowSkipException, match="STAGE_CRASHED"):
        run_core(last, crash, fall_back=True)
    error = last["ti"].pushed["error"]
    assert error["code"] == "STAGE_CRASHED" and "KeyError" in error["message"]
    # Outside a fallback tier a crash stays an Airflow failure, as before.
    with pytest.raises(KeyError):
        run_core(_context(None), crash)
