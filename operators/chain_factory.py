"""Turn a routing-chain drill spec (``kind: routing_chain``) into its DAG.

apply_fallback_chain (setup) -> chaos_drill -> remove_fault_injection (teardown)
[chaos_drill, remove_fault_injection] -> escalation_gate (ALL_DONE, branch)
    -> chain_healthy | notify_escalation (fails the run) [+ shift_to_static_cache]
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TriggerRule
from drillkit.operators._common import scheduled_dag
from drillkit.operators.chain import (
    APPLY,
    CHAOS,
    GATE,
    HEALTHY,
    NOTIFY,
    SHIFT,
    TEARDOWN,
    ApplyFallbackChainOperator,
    ChaosDrillOperator,
    EscalationGateOperator,
    NotifyEscalationOperator,
    RemoveFaultInjectionOperator,
    ShiftToStaticCacheOperator,
)

from drillkit.chain.model import ChainSpec


def chaos_timeout(spec: ChainSpec) -> timedelta:
    """The chaos task's execution timeout: the drill's deadline plus its fixed overheads."""
    chaos = spec.chaos
    prometheus = chaos.prometheus.timeout if chaos.prometheus else 0.0
    return timedelta(seconds=chaos.deadline + chaos.settle * len(chaos.phases) + prometheus + 60)


def build_chain_dag(spec: ChainSpec, *, fileloc: str | None = None) -> DAG:
    remediation = spec.escalation.remediation
    dag = scheduled_dag(
        spec,
        what="Routing-chain drill",
        tag="routing-chain-drill",
        doc_md=f"Routing-chain drill **{spec.name}** from `{spec.source}`: faults on drill "
        f"traffic to `{spec.route.host}` only, phases "
        + ", ".join(p.name for p in spec.chaos.phases)
        + (", remediation: shift to static cache" if remediation.shift_to_static_cache else ""),
        fileloc=fileloc,
        # One drill rule per chain at a time: two runs would overwrite each other's faults.
        max_active_runs=1,
    )
    common = {
        "chain": spec.raw,
        "source": spec.source,
        "kubernetes_conn_id": spec.kubernetes_conn_id,
    }
    with dag:
        apply = ApplyFallbackChainOperator(task_id=APPLY, **common)
        chaos = ChaosDrillOperator(
            task_id=CHAOS, apply_task_id=APPLY, execution_timeout=chaos_timeout(spec), **common
        )
        teardown = RemoveFaultInjectionOperator(task_id=TEARDOWN, **common)
        gate = EscalationGateOperator(
            task_id=GATE,
            chain=spec.raw,
            source=spec.source,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        healthy = EmptyOperator(task_id=HEALTHY)
        notify = NotifyEscalationOperator(task_id=NOTIFY, trigger_rule=TriggerRule.ALL_DONE)
        apply >> chaos >> teardown
        # A fault left on the drill rule must fail the run, even if everything else passed.
        teardown.as_teardown(setups=apply, on_failure_fail_dagrun=True)
        # The gate after the teardown: any remediation patch lands after the fault is gone.
        chaos >> gate
        teardown >> gate
        gate >> [healthy, notify]
        if remediation.shift_to_static_cache:
            shift = ShiftToStaticCacheOperator(task_id=SHIFT, **common)
            gate >> shift >> notify
    return dag
