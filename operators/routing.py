"""Route smoke traffic to the sandbox only: the routing manifest with its signed drill context."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from drillkit.operators._common import run_core, run_identity, signing_key
from drillkit.operators.telemetry import record_transition

from drillkit import drill


class ApplyDrillRouteOperator(BaseOperator):
    """Build (and for mesh backends, apply) the tier's routes; returns the routing manifest.

    :param sandbox_task_id: the tier's ProvisionSandboxOperator
    :param services: the spec's logical services
    :param overrides: explicit endpoints per service
    :param production: endpoints the drill must never reach (hosts, cidrs, dsns)
    :param environment: environment tag signed into ``X-Drill-Context``
    :param ttl_seconds: lifetime of the signed context
    :param routes: the spec's ``routes`` block; istio and gateway_api routes are applied to the
        cluster (use KubernetesApplyDrillRouteOperator, which supplies the connection)
    """

    ui_color = "#e3f4e1"

    def __init__(
        self,
        *,
        sandbox_task_id: str,
        services: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        production: dict[str, Any] | None = None,
        environment: str = "drill",
        ttl_seconds: float = 7200.0,
        routes: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.routes = routes or {}
        self.sandbox_task_id = sandbox_task_id
        self.services = services
        self.overrides = overrides or {}
        self.production = production or {}
        self.environment = environment
        self.ttl_seconds = ttl_seconds

    def execute(self, context: Any) -> dict[str, Any]:
        _, _, drill_id = run_identity(context)
        sandbox = context["ti"].xcom_pull(task_ids=self.sandbox_task_id)
        manifest = run_core(
            context,
            lambda: drill.route(
                sandbox=sandbox,
                services=self.services,
                overrides=self.overrides,
                production=self.production,
                environment=self.environment,
                drill_id=drill_id,
                key=signing_key(),
                ttl=timedelta(seconds=self.ttl_seconds),
                routes=self.routes,
            ),
            fall_back=True,
        )
        for name, entry in manifest["services"].items():
            self.log.info("route %s -> %s (%s)", name, entry["endpoint"], entry["resolved_by"])
        record_transition(context, "routed", manifest)
        return manifest
