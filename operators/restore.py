"""Restore operators: choose the coordinate, provision the sandbox, tear it down."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException
from drillkit.operators._common import (
    as_bool,
    catalog_credentials,
    pg_settings,
    run_core,
    run_identity,
)
from drillkit.operators.telemetry import record_transition

from drillkit import drill


class PITRSelectOperator(BaseOperator):
    """Choose a backup and recovery target for one tier; returns ``drillkit.restore_coordinate/v1``.

    :param catalog: the spec's catalog, e.g. ``{"kind": "local", "path": "/backups/orders"}``
    :param tier: tier name
    :param policy: latest, previous, oldest or pinned
    :param target_time: recovery target, ISO 8601 with zone; empty uses ``default_target``
        (templated)
    :param default_target: logical_date, latest, or a timestamp (from the spec)
    :param pinned_backup: backup id to restore (templated)
    :param tiers: the tiers this run may use; empty means all (templated)
    :param exclude_from: gate task ids of earlier tiers: their failed backups are not retried
    :param rpo_seconds: accepted data loss
    :param tier_backup: the backup a ``pinned`` tier restores (the run's pinned_backup wins)
    :param postgres_bin_dirs: the spec's ``{major: bin dir}`` (over the ``drillkit_postgres``
        connection and the ``[drillkit] postgres_bin_dirs`` config)
    """

    template_fields: Sequence[str] = ("target_time", "pinned_backup", "tiers")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        catalog: dict[str, Any],
        tier: str,
        policy: str = "latest",
        target_time: str | None = "{{ params.target_time }}",
        default_target: str = "logical_date",
        pinned_backup: str | None = "{{ params.pinned_backup }}",
        tiers: Any = "{{ params.tiers }}",
        exclude_from: Sequence[str] = (),
        rpo_seconds: float = 0.0,
        tier_backup: str | None = None,
        postgres_bin_dirs: dict[Any, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tier_backup = tier_backup
        self.postgres_bin_dirs = dict(postgres_bin_dirs or {})
        self.catalog = catalog
        self.tier = tier
        self.policy = policy
        self.target_time = target_time
        self.default_target = default_target
        self.pinned_backup = pinned_backup
        self.tiers = tiers
        self.exclude_from = list(exclude_from)
        self.rpo_seconds = rpo_seconds

    def _selected(self) -> bool:
        tiers = self.tiers
        if isinstance(tiers, str):
            tiers = [t.strip() for t in tiers.strip("[]").replace("'", "").split(",") if t.strip()]
        return not tiers or self.tier in tiers

    def execute(self, context: Any) -> dict[str, Any]:
        if not self._selected():
            raise AirflowSkipException(f"tier {self.tier} is not among this run's tiers")
        ti = context["ti"]
        exclude = []
        for task_id in self.exclude_from:
            decision = ti.xcom_pull(task_ids=task_id, key="decision") or {}
            if decision.get("decision") != "pass" and decision.get("backup_id"):
                exclude.append(decision["backup_id"])
        pinned = self.pinned_backup if self.pinned_backup not in (None, "", "None") else None
        pinned = pinned or (self.tier_backup if self.policy == "pinned" else None)

        def select() -> dict[str, Any]:
            target = drill.resolve_target(
                requested=self.target_time,
                spec_target=self.default_target,
                logical_date=context.get("logical_date"),
            )
            with catalog_credentials(self.catalog):
                coordinate = drill.select(
                    self.catalog,
                    policy="pinned" if pinned else self.policy,
                    target=target,
                    rpo=timedelta(seconds=self.rpo_seconds),
                    exclude=exclude,
                    pinned=pinned,
                    say=self.log.info,
                    postgres=pg_settings(self.postgres_bin_dirs),
                )
            return {**coordinate, "tier": self.tier}

        coordinate = run_core(context, select, fall_back=True)
        self.log.info(
            "tier %s: backup %s, target %s (%s)",
            self.tier,
            coordinate["backup_id"],
            coordinate["target"]["requested"] or "newest",
            coordinate["reason"],
        )
        record_transition(context, "selected", coordinate)
        return coordinate


class ProvisionSandboxOperator(BaseOperator):
    """Restore the tier's coordinate into a sandbox (a setup task); returns ``drillkit.sandbox/v1``.

    The checksum gate comes first: a backup that failed verification is never restored.

    :param coordinate_task_id: the tier's PITRSelectOperator
    :param sandbox: the tier's sandbox spec, e.g. ``{"kind": "local"}``
    :param drill: drill name
    :param ttl_seconds: lifetime of the sandbox label (for `drillkit gc` after a crash)
    :param dry_run: plan only, restore nothing (templated)
    :param postgres_bin_dirs: the spec's ``{major: bin dir}`` (see PITRSelectOperator)
    """

    template_fields: Sequence[str] = ("dry_run",)
    ui_color = "#fdf2d0"

    def __init__(
        self,
        *,
        coordinate_task_id: str,
        sandbox: dict[str, Any],
        drill: str,
        tier: str,
        ttl_seconds: float = 7200.0,
        dry_run: Any = "{{ params.dry_run }}",
        postgres_bin_dirs: dict[Any, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_bin_dirs = dict(postgres_bin_dirs or {})
        self.coordinate_task_id = coordinate_task_id
        self.sandbox = sandbox
        self.drill = drill
        self.tier = tier
        self.ttl_seconds = ttl_seconds
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        dag_id, run_id, drill_id = run_identity(context)

        def provision() -> dict[str, Any]:
            # Everything inside run_core: the execution timeout may fire at any line.
            coordinate = context["ti"].xcom_pull(task_ids=self.coordinate_task_id)
            with catalog_credentials((coordinate or {}).get("catalog")):
                return drill.provision(
                    coordinate,
                    sandbox=self.sandbox,
                    drill=self.drill,
                    drill_id=drill_id,
                    sandbox_id=drill.sandbox_id_for(self.drill, dag_id, run_id, self.tier),
                    ttl=timedelta(seconds=self.ttl_seconds),
                    dry_run=as_bool(self.dry_run),
                    say=self.log.info,
                    postgres=pg_settings(self.postgres_bin_dirs),
                )

        record = run_core(
            context,
            provision,
            timeout_code="PROVISION_TIMEOUT",
            undo=_remove_late_sandbox,
            fall_back=True,
        )
        self.log.info(
            "sandbox %s ready in %s s, recovery point %s",
            record["id"],
            record.get("restore_seconds"),
            record.get("achieved_recovery_point"),
        )
        record_transition(context, "provisioned", record)
        return record


def _remove_late_sandbox(record: dict[str, Any]) -> None:
    """A sandbox that came up after the provisioning timeout: the tier failed, remove it."""
    if not record.get("dry_run"):
        drill.teardown(record, keep=False, keep_ttl=timedelta(0))


class TeardownOperator(BaseOperator):
    """Tear down the tier's sandbox whatever happened between setup and here.

    :param sandbox_task_id: the tier's ProvisionSandboxOperator
    :param keep_sandbox: keep it for investigation until ``keep_ttl_seconds`` (templated)
    """

    template_fields: Sequence[str] = ("keep_sandbox",)
    ui_color = "#f4dede"

    def __init__(
        self,
        *,
        sandbox_task_id: str,
        keep_sandbox: Any = "{{ params.keep_sandbox }}",
        keep_ttl_seconds: float = 7200.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sandbox_task_id = sandbox_task_id
        self.keep_sandbox = keep_sandbox
        self.keep_ttl_seconds = keep_ttl_seconds

    def execute(self, context: Any) -> dict[str, Any]:
        record = context["ti"].xcom_pull(task_ids=self.sandbox_task_id)
        if not record:
            raise AirflowSkipException("no sandbox was provisioned")
        result = run_core(
            context,
            lambda: drill.teardown(
                record,
                keep=as_bool(self.keep_sandbox),
                keep_ttl=timedelta(seconds=self.keep_ttl_seconds),
            ),
        )
        self.log.info("teardown of %s: %s", record.get("id"), result)
        record_transition(context, "teardown", result)
        return result
