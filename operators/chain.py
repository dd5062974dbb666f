"""Airflow adapters of the routing-chain drill: apply the chain, run the chaos phases, remove the
fault (teardown), judge (branch), page, and optionally shift weight to the static cache.

Each operator gets the spec's raw mapping and validates it again (the same rules as at parse
time), takes its cluster from the cncf-kubernetes ``KubernetesHook`` and calls the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseBranchOperator, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from drillkit.operators._common import run_core, run_identity, signing_key

if TYPE_CHECKING:
    from drillkit.chain.model import ChainSpec
    from drillkit.k8s.client import Kube
    from drillkit.routing.guard import ProductionGuard

APPLY, CHAOS, TEARDOWN = "apply_fallback_chain", "chaos_drill", "remove_fault_injection"
GATE, NOTIFY, SHIFT, HEALTHY = (
    "escalation_gate",
    "notify_escalation",
    "shift_to_static_cache",
    "chain_healthy",
)


class _ChainOperator(BaseOperator):
    """The spec, its production guard and the cluster, for every chain operator.

    :param chain: the spec's YAML mapping (validated again at run time)
    :param source: the spec's file name, for error messages
    :param kubernetes_conn_id: Airflow connection of the cluster (templated)
    """

    template_fields: Sequence[str] = ("kubernetes_conn_id",)

    def __init__(
        self,
        *,
        chain: dict[str, Any],
        source: str = "<spec>",
        kubernetes_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.chain = chain
        self.source = source
        self.kubernetes_conn_id = kubernetes_conn_id or chain.get(
            "kubernetes_conn_id", "kubernetes_default"
        )

    @cached_property
    def spec(self) -> ChainSpec:
        from drillkit.chain.spec import parse_chain_spec

        return parse_chain_spec(self.chain, source=self.source)

    @cached_property
    def guard(self) -> ProductionGuard:
        from drillkit.routing.guard import ProductionGuard

        return ProductionGuard.from_spec(self.spec.production)

    def kube(self) -> Kube:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from drillkit.k8s.client import Kube

        return Kube(KubernetesHook(conn_id=self.kubernetes_conn_id).api_client)


class ApplyFallbackChainOperator(_ChainOperator):
    """Sign this run's drill context and apply the chain: the drill rule matching it exactly and
    the fallback EnvoyFilter (create, or patch with the resourceVersion read; a stored production
    rule is kept). The setup task: the teardown removes the drill rule and the EnvoyFilters."""

    ui_color = "#dfe9f7"

    def execute(self, context: Any) -> dict[str, Any]:
        from drillkit.chain.apply import apply_chain
        from drillkit.routing.context import issue_context

        _, _, drill_id = run_identity(context)

        def apply() -> dict[str, Any]:
            signed = issue_context(
                drill_id=drill_id,
                environment=self.spec.environment,
                key=signing_key(),
                ttl_seconds=self.spec.context_ttl,
            )
            manifest = signed.to_manifest()
            result = apply_chain(
                self.kube(),
                self.spec.route,
                guard=self.guard,
                context_value=signed.value,
                drill_id=drill_id,
                expires_at=manifest["expires_at"],
            )
            return {**result, "drill_id": drill_id, "context": manifest}

        result = run_core(context, apply)
        for ref in result["applied"]:
            self.log.info("%s %s/%s: %s", ref["kind"], ref["namespace"], ref["name"], ref["action"])
        return result


class ChaosDrillOperator(_ChainOperator):
    """Per fault phase: set the fault filter at the primary's inbound side (this run's context
    only), send the synthetic requests, measure.

    :param apply_task_id: the ApplyFallbackChainOperator (its XCom has the signed context)
    """

    ui_color = "#f7e3d3"

    def __init__(self, *, apply_task_id: str = APPLY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.apply_task_id = apply_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        from drillkit.chain.apply import set_fault
        from drillkit.chain.chaos import run_chaos
        from drillkit.chain.prometheus import query_fallback_rate

        applied = context["ti"].xcom_pull(task_ids=self.apply_task_id) or {}
        spec = self.spec
        value = (applied.get("context") or {}).get("value")
        if not value:
            raise AirflowFailException(
                f"no drill context in the XCom of {self.apply_task_id}: it did not apply the chain"
            )
        istio = spec.route.mesh == "istio"

        def run() -> dict[str, Any]:
            kube = self.kube() if istio else None

            def fault(phase: Any) -> None:
                if kube is not None:
                    set_fault(kube, spec.route, guard=self.guard, context_value=value, phase=phase)
                    self.log.info("fault at the primary: %s", phase.to_dict() if phase else None)

            def read_prometheus() -> dict[str, Any]:
                assert spec.chaos.prometheus is not None
                return query_fallback_rate(spec.chaos.prometheus, window=spec.escalation.window)

            return run_chaos(
                spec.chaos,
                budget=spec.route.timeout,
                context_value=value,
                drill_id=applied["drill_id"],
                set_fault=fault,
                settle=spec.chaos.settle if istio else 0.0,
                attempt=int(context["ti"].try_number or 1),
                prometheus=read_prometheus if spec.chaos.prometheus else None,
            )

        result = run_core(context, run)
        for phase in result["phases"]:
            if "fallback_rate" in phase:
                self.log.info(
                    "phase %s: fallback %s%%, errors %s%%, p95 %s ms",
                    phase["name"],
                    phase["fallback_rate"]["percent"],
                    phase["error_rate"]["percent"],
                    phase["latency_ms"]["p95"],
                )
        return result


class RemoveFaultInjectionOperator(_ChainOperator):
    """Teardown: delete the drill's EnvoyFilters (fault and fallback) and remove the drill rule.
    The chain itself stays: it is the routing API's production route."""

    ui_color = "#e2f0d9"

    def execute(self, context: Any) -> dict[str, Any]:
        from drillkit.chain.apply import remove_drill_rule

        result = run_core(context, lambda: remove_drill_rule(self.kube(), self.spec.route))
        self.log.info("drill rule: %s", result)
        return result


class EscalationGateOperator(BaseBranchOperator):
    """Judge the measured figures: healthy -> ``chain_healthy``; P1/P2/P3 -> the notification
    (and the static-cache shift when the spec enables it and the severity reaches it).

    Runs whatever happened upstream (trigger rule ALL_DONE) and decides from XCom alone.

    :param chain: the spec's YAML mapping
    :param source: the spec's file name
    """

    ui_color = "#fff0c2"

    def __init__(self, *, chain: dict[str, Any], source: str = "<spec>", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chain = chain
        self.source = source

    def choose_branch(self, context: Any) -> str | list[str]:
        from drillkit.chain.escalation import evaluate
        from drillkit.chain.spec import parse_chain_spec

        ti = context["ti"]
        spec = parse_chain_spec(self.chain, source=self.source)
        errors = [e for e in (ti.xcom_pull(task_ids=t, key="error") for t in (APPLY, CHAOS)) if e]
        decision = evaluate(
            ti.xcom_pull(task_ids=CHAOS), spec.escalation, spec.route, errors=errors
        )
        ti.xcom_push(key="escalation", value=decision)
        self.log.info(
            "routing chain %s: %s %s", spec.name, decision["decision"], decision["severity"]
        )
        if decision["severity"] is None:
            return HEALTHY
        return [NOTIFY, SHIFT] if decision["remediate"] else NOTIFY


class ShiftToStaticCacheOperator(_ChainOperator):
    """Remediation: patch the production rule's weights towards the static cache (with the
    resourceVersion read), and mark the route so drills wait until a person says so."""

    ui_color = "#f7c8c8"

    def execute(self, context: Any) -> dict[str, Any]:
        from drillkit.chain.apply import shift_weights

        decision = context["ti"].xcom_pull(task_ids=GATE, key="escalation") or {}
        if not decision.get("remediate"):
            raise AirflowSkipException("the gate did not ask for remediation")
        reason = f"{decision['severity']} {decision['reasons'][0]['code']}"
        result = run_core(
            context,
            lambda: shift_weights(
                self.kube(),
                self.spec.route,
                guard=self.guard,
                weights=self.spec.escalation.remediation.weights,
                reason=reason,
            ),
        )
        self.log.warning(
            "shifted %s: %s -> %s",
            self.spec.route.host,
            result["weights_before"],
            result["weights_after"],
        )
        return result


class NotifyEscalationOperator(BaseOperator):
    """Page: log the severity, the figures and the runbook, then FAIL the task (no retry).

    A drill exists to get a human to look when the fallback chain misbehaves, so an escalation
    is never a green run: the failed task is what Airflow's alerting (on_failure_callback, the
    deployment's failure notifications) pages on; the decision stays in XCom for the report.
    """

    ui_color = "#f7c8c8"

    def execute(self, context: Any) -> None:
        from drillkit.chain.escalation import summary

        ti = context["ti"]
        decision = ti.xcom_pull(task_ids=GATE, key="escalation")
        if not decision:
            raise AirflowFailException(
                "ESCALATE P3: the escalation gate recorded no decision; read its log"
            )
        text = summary(decision)
        if decision.get("remediate"):
            done = ti.xcom_pull(task_ids=SHIFT)
            failed = ti.xcom_pull(task_ids=SHIFT, key="error")
            if done:
                text += (
                    f"\nRemediated: weights {done['weights_before']} -> "
                    f"{done['weights_after']} at {done['remediated_at']}"
                )
            else:
                why = failed["message"] if failed else "see the shift_to_static_cache log"
                text += f"\nRemediation FAILED: {why}; shift the weights by hand"
        ti.xcom_push(key="notification", value={"severity": decision["severity"], "text": text})
        self.log.error("%s", text)
        raise AirflowFailException(f"ESCALATE {text}")
