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
