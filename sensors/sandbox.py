"""Wait until a sandbox serves; long waits defer to the triggerer instead of holding a worker.
The XCom is the readiness result, which carries a kubernetes sandbox's measured restore time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from drillkit.sandbox.readiness import sandbox_readiness


def _readiness(record: dict[str, Any], *, kubernetes_conn_id: str | None) -> dict[str, Any]:
    """Readiness of any backend (``drillkit.readiness/v1``); a kubernetes sandbox is asked
    through KubernetesHook (polled with GET: the Cluster's status is small and the wait is bounded
    by the sensor's timeout)."""
    if record.get("backend") != "kubernetes":
        return sandbox_readiness(record)
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from drillkit.k8s.client import cluster

    with cluster(KubernetesHook(conn_id=kubernetes_conn_id).api_client):
        return sandbox_readiness(record)


class SandboxReadyTrigger(BaseTrigger):
    """Polls the sandbox record's endpoints from the triggerer until they are ready; the event is
    the readiness result (so the restore time is measured where readiness was observed)."""

    def __init__(
        self,
        *,
        record: dict[str, Any],
        poke_interval: float = 5.0,
        kubernetes_conn_id: str | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.record = record
        self.poke_interval = poke_interval
        self.kubernetes_conn_id = kubernetes_conn_id
        self.deadline = deadline  # epoch seconds: past it, one "not ready" event ends the wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "drillkit.sensors.sandbox.SandboxReadyTrigger",
            {
                "record": self.record,
                "poke_interval": self.poke_interval,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            readiness = await asyncio.to_thread(
                _readiness, self.record, kubernetes_conn_id=self.kubernetes_conn_id
            )
            if readiness["ready"] or readiness.get("failed"):
                yield TriggerEvent(readiness)
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent({**readiness, "timed_out": True})
                return
            await asyncio.sleep(self.poke_interval)


class SandboxReadySensor(BaseSensorOperator):
    """Succeeds when the tier's sandbox answers and is promoted; returns the readiness result
    (``drillkit.readiness/v1``, with a kubernetes sandbox's restore time) as its XCom.

    :param sandbox_task_id: the tier's ProvisionSandboxOperator
    :param deferrable: wait in the triggerer (for sandboxes that take long, e.g. on Kubernetes)
    :param kubernetes_conn_id: connection of the cluster of a kubernetes sandbox
    :param rto_seconds: the drill's RTO; the wait (``timeout``) is at least this long, so a
        sandbox still not ready when it ends is an ``RTO_EXCEEDED`` finding for the gate
    """

    ui_color = "#fdf2d0"

    def __init__(
        self,
        *,
        sandbox_task_id: str,
        deferrable: bool = False,
        kubernetes_conn_id: str | None = None,
        rto_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sandbox_task_id = sandbox_task_id
        self.deferrable = deferrable
        self.kubernetes_conn_id = kubernetes_conn_id
        self.rto_seconds = rto_seconds
        self._last_detail = "not polled yet"

    def _record(self, context: Any) -> dict[str, Any]:
        record = context["ti"].xcom_pull(task_ids=self.sandbox_task_id)
        if not record:
            message = "no sandbox record in XCom: provisioning did not finish"
            context["ti"].xcom_push(
                key="error", value={"code": "SANDBOX_RECORD_MISSING", "message": message}
            )
            raise AirflowSkipException(f"SANDBOX_RECORD_MISSING: {message}")
        return record

    def poke(self, context: Any) -> PokeReturnValue:
        readiness = _readiness(self._record(context), kubernetes_conn_id=self.kubernetes_conn_id)
        self.log.info("sandbox: %s", readiness["detail"])
        if readiness.get("failed"):
            self._failed(context, readiness["failed"])
        self._last_detail = str(readiness["detail"])
        return PokeReturnValue(is_done=bool(readiness["ready"]), xcom_value=readiness)

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                self._not_ready(context, self._last_detail)
        deadline = time.time() + float(self.timeout)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self.defer(
            trigger=SandboxReadyTrigger(
                record=self._record(context),
                poke_interval=float(self.poke_interval),
                kubernetes_conn_id=self.kubernetes_conn_id,
                deadline=deadline,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger ends the wait itself at the deadline, with the reason.
            timeout=timedelta(seconds=float(self.timeout) + 2 * float(self.poke_interval) + 60),
        )
        return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event and event.get("failed"):
            self._failed(context, event["failed"])
        if not event or not event.get("ready"):
            self._not_ready(context, str((event or {}).get("detail", event)))
        self.log.info("sandbox ready: %s", event.get("detail"))
        return event

    def _failed(self, context: Any, failed: dict[str, Any]) -> NoReturn:
        """The restore itself failed (e.g. CloudNativePG's recovery Job): no point waiting on.
        Recorded for the gate, and the rest of the tier skipped, as when the wait runs out."""
        context["ti"].xcom_push(key="error", value=dict(failed))
        raise AirflowSkipException(
            f"{failed.get('code')}: {failed.get('message')} (recorded for the tier's gate)"
        )

    def _not_ready(self, context: Any, detail: str) -> NoReturn:
        """The wait ran out: record why for the gate, then skip the rest of the tier (a tier that
        fails its gate is not an Airflow failure: only ``escalate`` fails a drill run)."""
        waited = float(self.timeout)
        if self.rto_seconds is not None and waited >= self.rto_seconds:
            code = "RTO_EXCEEDED"
            message = (
                f"the sandbox was not ready after {waited:.0f} s, over the RTO of "
                f"{self.rto_seconds:.0f} s (last seen: {detail}): restore from a newer backup, "
                "add resources, or revise the RTO"
            )
        else:
            code = "SANDBOX_NOT_READY"
            message = f"the sandbox was not ready after {waited:.0f} s (last seen: {detail})"
        context["ti"].xcom_push(key="error", value={"code": code, "message": message})
        raise AirflowSkipException(f"{code}: {message} (recorded for the tier's gate)")
