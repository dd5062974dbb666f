"""The routing-chain DAG for real: parsed from the shipped example, and run with dag.test()
against the API emulator and the loopback chain (the spec written into the test dags folder)."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from chainkit import chain_spec

pytestmark = [pytest.mark.integration, pytest.mark.k8s]
DAGS = Path(__file__).resolve().parents[2] / "dags"
REMEDIATION = {
    "shift_to_static_cache": True,
    "min_severity": "P1",
    "weights": {"primary": 0, "secondary": 20, "static-cache": 80},
}


def test_example_dag_shape(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import TriggerRule

    bag = DagBag(str(DAGS / "drill_checkout_routing.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("drill_checkout_routing")
    assert dag.max_active_runs == 1 and "routing-chain-drill" in dag.tags
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {
        "apply_fallback_chain",
        "chaos_drill",
        "remove_fault_injection",
        "escalation_gate",
        "chain_healthy",
        "notify_escalation",
    }  # no shift_to_static_cache: the example leaves remediation off
    teardown = tasks["remove_fault_injection"]
    assert teardown.is_teardown and teardown.on_failure_fail_dagrun
    assert tasks["apply_fallback_chain"].is_setup
    assert tasks["escalation_gate"].trigger_rule == TriggerRule.ALL_DONE
    assert tasks["escalation_gate"].upstream_task_ids == {"chaos_drill", "remove_fault_injection"}


def _xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


@pytest.fixture
def run_chain(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from drillkit.operators.runner import _task_lines

    from drillkit.spec import loader_source

    def run(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        (dags / "drills").mkdir(exist_ok=True)
        path = dags / "drills" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "drill": name}, sort_keys=False))
        loader = dags / f"drill_{name.replace('-', '_')}.py"
        loader.write_text(loader_source(f"drills/{path.name}"))
        dag_id = f"drill_{name.replace('-', '_')}"
        bag = DagBag(str(loader))
        dag = bag.get_dag(dag_id)
        assert dag is not None, bag.import_errors
        dag_run = dag.test(logical_date=None)
        return {
            "state": str(dag_run.state),
            "tasks": {t: s for t, s, _ in _task_lines(dag_run.run_id, dag_id)},
            "escalation": _xcom(dag_id, dag_run.run_id, "escalation_gate", "escalation"),
            "chaos": _xcom(dag_id, dag_run.run_id, "chaos_drill"),
            "notification": _xcom(dag_id, dag_run.run_id, "notify_escalation", "notification"),
        }

    return run


def _vs(cluster, name: str) -> dict[str, Any]:
    return cluster.stored("virtualservices", f"{name}-chain")


def test_healthy_chain_run_is_green_and_leaves_production_untouched(cluster, front, run_chain):
    spec = chain_spec(
        chaos={
            "url": front.url,
            "requests": 40,
            "replays": 5,
            "phases": [{"name": "abort-10", "abort": {"percent": 10}}],
        }
    )
    run = run_chain("chain-ok", spec)
    assert run["tasks"]["chaos_drill"] == "success", run["tasks"]
    assert run["chaos"]["phases"][0]["fallback_rate"]["count"] == 4  # exactly 10% of 40
    assert run["escalation"]["decision"] == "healthy"
    assert run["tasks"]["chain_healthy"] == "success"
    assert run["tasks"]["notify_escalation"] == "skipped"
    assert run["tasks"]["remove_fault_injection"] == "success"
    assert run["state"] == "success"
    from drillkit.chain.routes import production_rule
    from drillkit.chain.spec import parse_chain_spec

    config = parse_chain_spec({**spec, "drill": "chain-ok"}).route
    [rule] = _vs(cluster, "chain-ok")["spec"]["http"]  # the drill rule is gone
    assert json.dumps(rule, sort_keys=True) == json.dumps(production_rule(config), sort_keys=True)
    assert cluster.objects("envoyfilters") == []  # fault and fallback filters deleted
    assert run["chaos"]["phases"][0]["fallback_rate"]["by_tier"] == {"secondary": 4}


def test_p1_run_pages_shifts_to_static_cache_and_fails(cluster, front, tiers, run_chain):
    tiers["primary"].fail_ratio = Fraction(3, 10)
    spec = chain_spec(
        chaos={"url": front.url, "requests": 40, "replays": 0, "phases": [{"name": "baseline"}]},
        escalation={"remediation": REMEDIATION, "runbook": ["Page #checkout-oncall."]},
    )
    run = run_chain("chain-p1", spec)
    assert run["escalation"]["severity"] == "P1" and run["escalation"]["remediate"] is True
    assert run["tasks"]["shift_to_static_cache"] == "success"
    assert run["tasks"]["notify_escalation"] == "failed"
    assert run["tasks"]["chain_healthy"] == "skipped"
    assert run["tasks"]["remove_fault_injection"] == "success"
    assert run["state"] == "failed"
    text = run["notification"]["text"]
    assert text.startswith("P1: routing chain chain-p1 escalate")
    assert "fallback_rate 12/40 (30.0%)" in text and "Page #checkout-oncall." in text
    assert "Remediated: weights" in text
    vs = _vs(cluster, "chain-p1")
    [rule] = vs["spec"]["http"]
    assert [r["weight"] for r in rule["route"]] == [0, 20, 80]
    assert "drillkit.io/remediated-at" in vs["metadata"]["annotations"]


def test_remediated_chain_blocks_the_drill_and_pages_p3(cluster, front, run_chain):
    spec = chain_spec(chaos={"url": front.url, "requests": 10, "replays": 0})
    from drillkit.chain import apply
    from drillkit.chain.spec import parse_chain_spec
    from drillkit.routing.guard import ProductionGuard

    config = parse_chain_spec({**spec, "drill": "chain-held"}).route
    kube = cluster.kube()
    apply.apply_chain(
        kube,
        config,
        guard=ProductionGuard(),
        context_value="v1.earlier-run",
        drill_id="earlier",
        expires_at="2026-11-21T12:00:00Z",
    )
    apply.remove_drill_rule(kube, config)
    weights = REMEDIATION["weights"]
    apply.shift_weights(kube, config, guard=ProductionGuard(), weights=weights, reason="P1 x")
    run = run_chain("chain-held", spec)
    assert run["tasks"]["apply_fallback_chain"] == "failed"
    assert run["tasks"]["chaos_drill"] == "upstream_failed"
    assert run["escalation"]["severity"] == "P3"
    codes = [r["code"] for r in run["escalation"]["reasons"]]
    assert codes[0] == "CHAIN_REMEDIATION_IN_EFFECT" and "CHAOS_NOT_MEASURED" in codes
    assert run["tasks"]["notify_escalation"] == "failed" and run["state"] == "failed"
    assert "drillkit.io/remediated-at-" in run["notification"]["text"]  # how to clear it
    [rule] = _vs(cluster, "chain-held")["spec"]["http"]  # the remediation stands
    assert [r["weight"] for r in rule["route"]] == [0, 20, 80]
