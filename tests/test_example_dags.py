"""Every DAG shipped in dags/ parses with no import error, and every spec has its loader."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DAGS = Path(__file__).resolve().parent.parent / "dags"


def test_every_shipped_dag_parses(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    assert bag.import_errors == {}
    specs = sorted(p.stem for p in (DAGS / "drills").glob("*.yaml"))
    assert specs, "no example drill specs shipped"
    for name in specs:
        assert f"drill_{name.replace('-', '_')}" in bag.dag_ids


def test_every_spec_has_a_loader():
    from drillkit.spec import loader_name

    missing = [
        p.name for p in (DAGS / "drills").glob("*.yaml") if not (DAGS / loader_name(p)).exists()
    ]
    assert missing == [], "run `drillkit dags sync dags` to write their loaders"


def test_dags_sync_writes_loaders_that_build_both_spec_kinds(airflow_db, tmp_path: Path):
    """A restore drill and a routing-chain drill side by side: `drillkit dags sync` writes one
    loader each, and each builds its own kind of DAG (the chain spec is not read as a drill)."""
    import shutil

    from airflow.dag_processing.dagbag import DagBag
    from drillkit.operators.dag_factory import sync_loaders

    (tmp_path / "drills").mkdir()
    for name in ("orders.yaml", "checkout-routing.yaml"):
        shutil.copy(DAGS / "drills" / name, tmp_path / "drills" / name)
    written = sync_loaders(tmp_path)
    assert sorted(p.name for p in written) == ["drill_checkout_routing.py", "drill_orders.py"]
    assert sync_loaders(tmp_path) == []  # existing loaders are left alone
    bag = DagBag(str(tmp_path))
    assert bag.import_errors == {}
    assert "chaos_drill" in bag.get_dag("drill_checkout_routing").task_ids
    assert "primary.gate" in bag.get_dag("drill_orders").task_ids
