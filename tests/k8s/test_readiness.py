"""The restore time of a kubernetes sandbox, measured when its Cluster turns ready, and carried
by the readiness sensor's XCom on both its paths (poke, and deferred to the trigger)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from k8s_scenario import CNPG, FakeCnpgOperator, provision_sandbox, ready_condition

from drillkit.k8s.client import Kube
from drillkit.k8s.sandbox import cluster_readiness
from drillkit.timeutil import parse_iso


def wait_ready(kube: Kube, record: dict[str, Any]) -> dict[str, Any]:
    for _ in range(50):
        readiness = cluster_readiness(kube, record)
        if readiness["ready"]:
            return readiness
        time.sleep(0.1)
    raise AssertionError(f"the Cluster never turned ready: {readiness}")


class TaskInstance:
    """Just what the sensor asks of its task instance: the provision task's XCom."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, *, task_ids: str) -> dict[str, Any]:
        assert task_ids == "primary.provision_sandbox"
        return self.record


def sensor(conn_id: str, *, deferrable: bool, timeout: float = 30, rto: float = 30) -> Any:
    from drillkit.sensors.sandbox import SandboxReadySensor

    return SandboxReadySensor(
        task_id="sandbox_ready",
        sandbox_task_id="primary.provision_sandbox",
        kubernetes_conn_id=conn_id,
        deferrable=deferrable,
        poke_interval=0.1,
        timeout=timeout,
        rto_seconds=rto,
    )


def test_restore_seconds_come_from_the_clusters_own_timestamps(production):
    record = provision_sandbox(production)
    kube = Kube(production.api)
    before = cluster_readiness(kube, record)
    assert before["ready"] is False
    assert (before["restore_seconds"], before["restore_seconds_source"]) == (None, None)
    with FakeCnpgOperator(production, port=6543, delay=0, restore_seconds=[754]):
        readiness = wait_ready(kube, record)
    stored = production.stored(CNPG, "clusters", "sandbox", record["namespace"])
    created = parse_iso(stored["metadata"]["creationTimestamp"])
    (condition,) = stored["status"]["conditions"]
    assert parse_iso(condition["lastTransitionTime"]) - created == timedelta(seconds=754)
    assert readiness == {
        "ready": True,
        "detail": "Cluster sandbox: Cluster in healthy state, 1/1 instances ready",
        "restore_seconds": 754.0,
        "restore_seconds_source": "cluster_conditions",
    }


@pytest.mark.parametrize("conditions", ["missing", "not_true"])
def test_without_a_true_ready_condition_the_observed_time_is_used(production, conditions):
    record = provision_sandbox(production)
    kube = Kube(production.api)
    with FakeCnpgOperator(production, port=6543, delay=0, conditions=False):
        wait_ready(kube, record)
    if conditions == "not_true":  # healthy phase, but the condition lags behind (or is stale)
        path = production.path(CNPG, "clusters", "sandbox", record["namespace"])
        stale = ready_condition(parse_iso(record["created_at"]), status="False")
        code, body = production.request(
            "PATCH",
            path + "/status",
            {"status": {"conditions": [stale]}},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body
    observed = parse_iso(record["created_at"]) + timedelta(seconds=42.5)
    readiness = cluster_readiness(kube, record, observed_at=observed)
    assert readiness["ready"] is True
    assert readiness["restore_seconds"] == 42.5
    assert readiness["restore_seconds_source"] == "observed"
    # A worker clock behind the one that stamped created_at measures nothing rather than 0 s.
    skewed = cluster_readiness(kube, record, observed_at=observed - timedelta(seconds=60))
    assert skewed["ready"] is True
    assert (skewed["restore_seconds"], skewed["restore_seconds_source"]) == (None, None)


def test_the_sensor_returns_the_measurement_when_it_pokes(production):
    record = provision_sandbox(production)
    with FakeCnpgOperator(production, port=6543, delay=0.5, restore_seconds=[95]):
        readiness = sensor(production.conn_id, deferrable=False).execute(
            {"ti": TaskInstance(record)}
        )
    assert readiness["schema"] == "drillkit.readiness/v1"
    assert readiness["sandbox_id"] == "orders-abc123"
    assert readiness["ready"] is True
    assert readiness["restore_seconds"] == 95.0
    assert readiness["restore_seconds_source"] == "cluster_conditions"


def test_the_deferred_sensor_gets_the_measurement_from_the_trigger_event(production):
    from airflow.sdk.exceptions import TaskDeferred

    record = provision_sandbox(production)
    context = {"ti": TaskInstance(record)}
    waiting = sensor(production.conn_id, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(context)  # nothing marks the Cluster ready yet
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"

    async def first_event() -> Any:
        async for event in trigger.run():
            return event

    with FakeCnpgOperator(production, port=6543, delay=0, restore_seconds=[130]):
        event = asyncio.run(asyncio.wait_for(first_event(), timeout=20))
    assert event.payload["restore_seconds"] == 130.0
    readiness = waiting.execute_complete(context, event.payload)
    assert readiness["ready"] is True
    assert readiness["restore_seconds"] == 130.0
    assert readiness["restore_seconds_source"] == "cluster_conditions"
    # Ready at once: the first poke answers, and the sensor never defers.
    again = sensor(production.conn_id, deferrable=True).execute(context)
    assert again["ready"] is True and again["restore_seconds"] == 130.0


def test_a_sandbox_not_ready_when_the_wait_ends_is_over_the_rto(production):
    """No operator marks the Cluster ready: the poking sensor gives the gate RTO_EXCEEDED, with
    the Cluster's last status, instead of leaving the tier without a result. The sensor is
    skipped, not failed: a tier over its RTO falls back, and only `escalate` fails a run."""
    from airflow.sdk.exceptions import AirflowSkipException

    record = provision_sandbox(production)
    context = {"ti": TaskInstance(record)}
    with pytest.raises(AirflowSkipException, match="RTO_EXCEEDED"):
        sensor(production.conn_id, deferrable=False, timeout=0.5, rto=0.5).execute(context)
    error = context["ti"].pushed["error"]
    assert error["code"] == "RTO_EXCEEDED"
    assert "not ready after" in error["message"] and "over the RTO" in error["message"]
    assert "Cluster" in error["message"]  # the last status the sensor saw


def test_a_deferred_wait_ends_at_its_deadline_in_the_trigger(production):
    from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

    record = provision_sandbox(production)
    context = {"ti": TaskInstance(record)}
    waiting = sensor(production.conn_id, deferrable=True, timeout=0.3, rto=0.3)
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(context)
    # The backstop deferral timeout is later than the trigger's own deadline.
    assert deferred.value.timeout > timedelta(seconds=0.3)

    async def first_event() -> Any:
        async for event in deferred.value.trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=20))
    assert event.payload["ready"] is False and event.payload["timed_out"] is True
    with pytest.raises(AirflowSkipException, match="RTO_EXCEEDED"):
        waiting.execute_complete(context, event.payload)
    assert context["ti"].pushed["error"]["code"] == "RTO_EXCEEDED"
