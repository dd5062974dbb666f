"""Hourly garbage collection of drill leftovers: expired local sandboxes, drill namespaces and
drill routes (found by label, removed only once their expiry annotation has passed).

The cluster is the Airflow connection named by the Variable ``drillkit_kubernetes_conn_id``;
without it only local sandboxes are collected.
"""

from datetime import UTC, datetime

from airflow.sdk import DAG
from drillkit.operators.kubernetes import DrillGarbageCollectOperator

with DAG(
    dag_id="drillkit_gc",
    description="Remove expired drill sandboxes, namespaces and routes",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["drillkit", "maintenance"],
):
    DrillGarbageCollectOperator(
        task_id="collect",
        kubernetes_conn_id="{{ var.value.get('drillkit_kubernetes_conn_id', '') }}",
    )
