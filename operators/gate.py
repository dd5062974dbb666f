"""The tier gate (a branch operator), the run's report, and manual escalation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseBranchOperator, BaseOperator
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    DownstreamTasksSkipped,
)
from drillkit.operators._common import as_bool
from drillkit.operators.report_store import write_report_files
from drillkit.operators.telemetry import event_key, record_transition, send_metrics

from drillkit.drill import requested_target
from drillkit.gate import gate_decision, judge_tier
from drillkit.report import build_report
from drillkit.sandbox.readiness import with_readiness


class TierTasks:
    """Task ids of one tier, as the DAG factory names them."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.select = f"{group}.pitr_select"
        self.provision = f"{group}.provision_sandbox"
        self.ready = f"{group}.sandbox_ready"
        self.route = f"{group}.apply_drill_route"
        self.smoke = f"{group}.smoke_test"
        self.gate = f"{group}.gate"
        self.teardown = f"{group}.teardown"

    def transitions(self) -> list[tuple[str, str]]:
        """``(task id, telemetry event)``: which task of the tier records which transition."""
        return [
            (self.select, "selected"),
            (self.provision, "provisioned"),
            (self.route, "routed"),
            (self.smoke, "checked"),
            (self.gate, "gate"),
            (self.gate, "fallback"),
            (self.teardown, "teardown"),
        ]


def tier_errors(ti: Any, tasks: TierTasks) -> list[dict[str, Any]]:
    """The DrillErrors the tier's tasks recorded before failing, in stage order."""
    pulled = (
        ti.xcom_pull(task_ids=task_id, key="error")
        for task_id in (tasks.select, tasks.provision, tasks.ready, tasks.route, tasks.smoke)
    )
    return [error for error in pulled if error]


def tier_sandbox(ti: Any, tasks: TierTasks) -> dict[str, Any] | None:
    """The tier's sandbox record, with the restore time the readiness sensor measured and the
    recovery point the checks read when provisioning could not (kubernetes: CloudNativePG
    restores after provisioning returns)."""
    return with_readiness(
        ti.xcom_pull(task_ids=tasks.provision),
        ti.xcom_pull(task_ids=tasks.ready),
        ti.xcom_pull(task_ids=tasks.smoke),
    )


class DrillGateOperator(BaseBranchOperator):
    """Judge the tier: passed -> ``report`` (every later tier is skipped at once), failed -> the
    next tier, exhausted (no tier left) -> ``exhausted`` (then report and escalation).

    Runs whatever happened upstream (trigger rule ALL_DONE) and decides from XCom alone.

    :param tier: tier (task group) name
    :param previous_gate: the gate before this one, if any: this tier runs only after it fell back
    :param next_branch: task id to follow on failure (next tier's pitr_select, or ``exhausted``)
    :param report_task_id: the task a passing (or never reached) tier goes on to
    :param rto_seconds: restore time budget
    :param dry_run: (templated)
    """

    template_fields: Sequence[str] = ("dry_run",)
    ui_color = "#fff0c2"

    def __init__(
        self,
        *,
        tier: str,
        previous_gate: str | None,
        next_branch: str,
        is_last: bool,
        report_task_id: str = "report",
        rto_seconds: float,
        dry_run: Any = "{{ params.dry_run }}",
        tiers: Any = "{{ params.tiers }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tier = tier
        self.previous_gate = previous_gate
        self.next_branch = next_branch
        self.report_task_id = report_task_id
        self.is_last = is_last
        self.rto_seconds = rto_seconds
        self.dry_run = dry_run
        self.tiers = tiers

    def choose_branch(self, context: Any) -> str | list[str]:
        ti = context["ti"]
        tasks = TierTasks(self.tier)
        if self.previous_gate is not None:
            before = ti.xcom_pull(task_ids=self.previous_gate, key="decision") or {}
            if before.get("decision") != "fallback":
                ti.xcom_push(key="decision", value={"decision": "not_reached", "tier": self.tier})
                return self.report_task_id
        tiers = self.tiers if isinstance(self.tiers, list) else []
        selected = not tiers or self.tier in tiers
        judgement = judge_tier(
            self.tier,
            selected=selected,
            coordinate=ti.xcom_pull(task_ids=tasks.select),
            sandbox=tier_sandbox(ti, tasks),
            validation=ti.xcom_pull(task_ids=tasks.smoke),
            errors=tier_errors(ti, tasks),
            rto_seconds=self.rto_seconds,
            dry_run=as_bool(self.dry_run),
        )
        decision = gate_decision(judgement, is_last=self.is_last)
        value = {"decision": decision, "selected": selected, **judgement.to_dict()}
        ti.xcom_push(key="decision", value=value)
        record_transition(context, "gate", value)
        if decision == "fallback":
            record_transition(context, "fallback", value)
        self.log.info(
            "tier %s: %s (%s) -> %s", self.tier, judgement.status, judgement.reason, decision
        )
        return self.report_task_id if decision == "pass" else self.next_branch

    def skip_all_except(self, ti: Any, branch_task_ids: Any) -> None:
        """Skip, in one go, every task the followed branch can no longer reach.

        The branch base skips only this gate's direct downstream; the tiers after a passing gate
        would then skip one level per scheduler pass (each pass that only skips costs the scheduler
        a loop, and ``dag.test`` a one-second sleep). Nothing is added when no branch is followed.
        """
        if branch_task_ids is not None and not isinstance(branch_task_ids, str):
            branch_task_ids = list(branch_task_ids)  # the branch base hands over a generator
        followed = (
            {branch_task_ids} if isinstance(branch_task_ids, str) else set(branch_task_ids or ())
        )
        unreachable: list[tuple[str, int]] = []
        if followed:
            reachable = set(followed)
            for task_id in followed:
                reachable |= self.dag.get_task(task_id).get_flat_relative_ids(upstream=False)
            downstream = self.get_flat_relative_ids(upstream=False)
            direct = set(self.downstream_task_ids)
            unreachable = [(t, ti.map_index) for t in sorted(downstream - reachable - direct)]
        try:
            super().skip_all_except(ti, branch_task_ids)
        except DownstreamTasksSkipped as skipped:
            skipped.tasks = [*skipped.tasks, *unreachable]
            raise
        if unreachable and ti.map_index == -1:
            raise DownstreamTasksSkipped(tasks=unreachable)


class DrillReportOperator(BaseOperator):
    """Write the run's one verdict (PASS, FAIL, COULD NOT VERIFY, or DRY RUN) and its report.

    :param drill: drill name
    :param tiers: tier names in order
    :param report_path: local directory, or an ObjectStoragePath URL (s3://, gs://, file://),
        for report files; None keeps the report in XCom only (templated)
    :param target_time: the run's requested target (templated), recorded in the report even when
        no tier selected a backup
    :param default_target: the spec's target rule (logical_date, latest, or a timestamp)
    """

    template_fields: Sequence[str] = ("report_path", "dry_run", "target_time")
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        drill: str,
        tiers: Sequence[str],
        rto_seconds: float,
        report_path: str | None = None,
        dry_run: Any = "{{ params.dry_run }}",
        target_time: Any = "{{ params.target_time }}",
        default_target: str = "logical_date",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_time = target_time
        self.default_target = default_target
        self.drill = drill
        self.tiers = list(tiers)
        self.rto_seconds = rto_seconds
        self.report_path = report_path
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        tiers, events = [], []
        for name in self.tiers:
            tasks = TierTasks(name)
            events += [
                ti.xcom_pull(task_ids=task_id, key=event_key(event))
                for task_id, event in tasks.transitions()
            ]
            tiers.append(
                {
                    "decision": ti.xcom_pull(task_ids=tasks.gate, key="decision") or {},
                    "coordinate": ti.xcom_pull(task_ids=tasks.select),
                    "sandbox": tier_sandbox(ti, tasks),
                    "manifest": ti.xcom_pull(task_ids=tasks.route),
                    "validation": ti.xcom_pull(task_ids=tasks.smoke),
                    "teardown": ti.xcom_pull(task_ids=tasks.teardown),
                }
            )
        dag_id = context["dag"].dag_id
        report = build_report(
            drill=self.drill,
            dag_id=dag_id,
            run_id=context["run_id"],
            tiers=tiers,
            dry_run=as_bool(self.dry_run),
            run_error=ti.xcom_pull(task_ids="check_conf", key="error"),
            events=events,
            rto_budget_seconds=self.rto_seconds,
            requested_target=requested_target(
                requested=self.target_time,
                spec_target=self.default_target,
                logical_date=context.get("logical_date"),
            ),
        )
        verdict_event = record_transition(context, "verdict", report)
        report["timeline"].append(verdict_event)
        report["finished_at"] = verdict_event["at"]
        if self.report_path:
            report["files"] = write_report_files(report, self.report_path)
        send_metrics(report)
        self.log.info("verdict %s: %s", report["verdict"], report["summary"])
        return report


class EscalateOperator(BaseOperator):
    """Manual triage: fail the run loudly, with everything a person needs, unless it passed.

    :param report_task_id: the DrillReportOperator
    """

    ui_color = "#f7c8c8"

    def __init__(self, *, report_task_id: str = "report", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Any) -> None:
        report = context["ti"].xcom_pull(task_ids=self.report_task_id)
        if not report:
            raise AirflowFailException(
                "ESCALATE: the drill produced no report; look at the report task's log"
            )
        if report["verdict"] in ("PASS", "DRY RUN"):
            raise AirflowSkipException(f"verdict {report['verdict']}: nothing to escalate")
        raise AirflowFailException(f"ESCALATE: {report['escalation']}")
