"""Garbage collection removes expired drill objects, and only those; from the CLI and Airflow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.gc import collect

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PAST, FUTURE = "2026-11-21T11:00:00Z", "2026-11-21T13:00:00Z"
VS = "networking.istio.io/v1"


def _namespace(cluster, name, *, expires, owned=True):
    meta = {"name": name, "annotations": {objects.EXPIRES_ANNOTATION: expires}}
    if owned:
        meta["labels"] = objects.labels(drill_id="d-" + name, sandbox_id=name)
    cluster.seed(
        {"_plural": "namespaces", "apiVersion": "v1", "kind": "Namespace", "metadata": meta}
    )


def _route(cluster, name, *, expires):
    cluster.seed(
        {
            "_plural": "virtualservices",
            "apiVersion": VS,
            "kind": "VirtualService",
            "metadata": {
                "name": name,
                "namespace": "orders",
                "labels": objects.labels(drill_id="d", sandbox_id=name),
                "annotations": {objects.EXPIRES_ANNOTATION: expires},
            },
            "spec": {
                "hosts": [f"{name}.orders.svc"],
                "http": [{"route": [{"destination": {"host": "x"}}]}],
            },
        }
    )


@pytest.fixture
def leftovers(cluster):
    cluster.ensure_namespace("orders")
    _namespace(cluster, "drill-old", expires=PAST)
    _namespace(cluster, "drill-new", expires=FUTURE)
    _namespace(cluster, "drill-unlabelled", expires=PAST, owned=False)  # not ours: never touched
    _namespace(cluster, "drill-garbled", expires="tomorrow")  # no provable expiry: kept
    _route(cluster, "old-route", expires=PAST)
    _route(cluster, "new-route", expires=FUTURE)
    return cluster


def _names(cluster) -> set[str]:
    namespaces = {n["metadata"]["name"] for n in cluster.listed("v1", "namespaces")}
    routes = {r["metadata"]["name"] for r in cluster.listed(VS, "virtualservices")}
    return namespaces | routes


def test_only_expired_drill_objects_are_removed(leftovers):
    before = _names(leftovers)
    due = collect(Kube(leftovers.api), now=NOW, dry_run=True)
    assert {d["id"] for d in due} == {"drill-old", "old-route"}
    assert _names(leftovers) == before  # a dry run deletes nothing
    removed = collect(Kube(leftovers.api), now=NOW)
    assert [(r["kind"], r["id"], r["removed"]) for r in removed] == [
        ("VirtualService", "old-route", True),
        ("Namespace", "drill-old", True),
    ]
    assert _names(leftovers) == before - {"drill-old", "old-route"}
    assert collect(Kube(leftovers.api), now=NOW) == []


def test_cli_gc_collects_the_cluster_given_a_kubeconfig(leftovers, work_root, capsys):
    from drillkit.cli import main

    kubeconfig = leftovers.emulator.write_kubeconfig(work_root / "gc-kubeconfig.json")
    assert main(["gc", "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    # The real clock is past PAST (2026-11-21T11:00Z) only if the machine's date is; compare
    # against what the server still holds rather than assume the date.
    if datetime.now(UTC) > datetime(2026, 11, 21, 13, 0, tzinfo=UTC):
        assert "removed Namespace drill-new" in out
    assert "removed Namespace drill-old" in out
    assert "drill-unlabelled" not in out
    assert leftovers.stored("v1", "namespaces", "drill-unlabelled") is not None


def test_gc_dag_runs_the_operator(leftovers, airflow_db, monkeypatch):
    """The shipped hourly DAG, run by dag.test() with the cluster named by its Variable."""
    import os
    import shutil
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_VAR_DRILLKIT_KUBERNETES_CONN_ID", leftovers.conn_id)
    # dag.test() runs the DAG from the configured dags folder: put the shipped file there.
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    shutil.copy(Path(__file__).resolve().parents[2] / "dags" / "drillkit_gc.py", dags)
    bag = DagBag(str(dags / "drillkit_gc.py"))
    dag = bag.get_dag("drillkit_gc")
    assert dag is not None, bag.import_errors
    run = dag.test()
    assert str(run.state) == "success"
    assert leftovers.stored("v1", "namespaces", "drill-old") is None
    assert leftovers.stored("v1", "namespaces", "drill-unlabelled") is not None
