"""run_core: core errors and timeouts become the gate's findings, a lost timeout included."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout
from drillkit.operators._common import run_core

from drillkit.exceptions import SandboxError

pytestmark = pytest.mark.unit


class FakeTI:
    task_id = "primary.provision_sandbox"

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(timeout: timedelta | None) -> dict[str, Any]:
    return {"ti": FakeTI(), "task": SimpleNamespace(execution_timeout=timeout)}


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
