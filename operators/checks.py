"""Smoke tests against the sandbox, through the routing manifest only."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from drillkit.operators._common import run_core, signing_key
from drillkit.operators.telemetry import record_transition

from drillkit import drill


class SmokeTestOperator(BaseOperator):
    """Run the drill's checks; returns ``drillkit.validation/v1``.

    The task succeeds when the checks ran, whatever they found: the gate judges the results.

    :param checks: the spec's checks
    :param manifest_task_id: the tier's ApplyDrillRouteOperator
    """

    ui_color = "#efe3f7"

    def __init__(
        self,
        *,
        checks: list[dict[str, Any]],
        manifest_task_id: str,
        coordinate_task_id: str,
        sandbox_task_id: str,
        production: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checks = checks
        self.manifest_task_id = manifest_task_id
        self.coordinate_task_id = coordinate_task_id
        self.sandbox_task_id = sandbox_task_id
        self.production = production or {}

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        validation = run_core(
            context,
            lambda: drill.smoke(
                checks=self.checks,
                manifest=ti.xcom_pull(task_ids=self.manifest_task_id),
                production=self.production,
                coordinate=ti.xcom_pull(task_ids=self.coordinate_task_id),
                sandbox=ti.xcom_pull(task_ids=self.sandbox_task_id),
                key=signing_key(),
            ),
            fall_back=True,
        )
        for result in validation["results"]:
            self.log.info(
                "check %s (%s): %s observed=%r expected %s",
                result["name"],
                result["kind"],
                result["status"],
                result.get("observed"),
                result.get("expectation"),
            )
        record_transition(context, "checked", validation)
        return validation
