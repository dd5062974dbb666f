"""Two specs, one DAG id: refused by the loaders and by `dags sync`, naming both files; and a
scenario's drill is named after its directory, so two scenarios never collide by default."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from drillkit.scenario import drill_name_for

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def _spec(name: str) -> dict:
    return {
        "drill": name,
        "catalog": {"kind": "local", "path": "/tmp/nowhere"},
        "tiers": [{"name": "primary", "select": "latest", "sandbox": {"kind": "local"}}],
        "services": {"app-db": {"kind": "postgres", "database": "app"}},
        "checks": [
            {
                "name": "q",
                "kind": "sql",
                "target": "app-db",
                "query": "select 1",
                "expect": {"eq": 1},
            }
        ],
    }


def _write(dags: Path, file: str, name: str) -> Path:
    from drillkit.spec import loader_name, loader_source

    (dags / "drills").mkdir(parents=True, exist_ok=True)
    path = dags / "drills" / file
    path.write_text(yaml.safe_dump(_spec(name)))
    (dags / loader_name(path)).write_text(loader_source(f"drills/{file}"))
    return path


def test_two_specs_with_one_dag_id_are_both_import_errors_naming_both_files(tmp_path, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    first = _write(dags, "orders.yaml", "demo")
    second = _write(dags, "billing.yaml", "demo")
    _write(dags, "other.yaml", "other")
    bag = DagBag(str(dags))
    assert "drill_demo" not in bag.dag_ids  # neither wins silently
    assert "drill_other" in bag.dag_ids
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert set(errors) == {"drill_orders.py", "drill_billing.py"}
    for message in errors.values():
        assert "drill_demo" in message and first.name in message and second.name in message


def test_hyphen_and_underscore_names_are_the_same_dag_id(tmp_path):
    from drillkit.operators.dag_factory import dag_from_spec_file

    from drillkit.spec import SpecError

    dags = tmp_path / "dags"
    _write(dags, "a.yaml", "pay-roll")
    _write(dags, "b.yaml", "pay_roll")
    with pytest.raises(SpecError, match=r"drill_pay_roll is also the DAG id of .*a\.yaml"):
        dag_from_spec_file("drills/b.yaml", loader=str(dags / "drill_b.py"))


def test_dags_sync_refuses_a_duplicate_dag_id_and_writes_nothing(tmp_path):
    dags = tmp_path / "dags"
    (dags / "drills").mkdir(parents=True)
    for file in ("one.yaml", "two.yaml"):
        (dags / "drills" / file).write_text(yaml.safe_dump(_spec("same")))
    result = subprocess.run([DRILLKIT, "dags", "sync", str(dags)], capture_output=True, text=True)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "drill_same" in result.stderr and "one.yaml" in result.stderr
    assert "two.yaml" in result.stderr
    assert sorted(p.name for p in dags.glob("*.py")) == []
    (dags / "drills" / "two.yaml").write_text(yaml.safe_dump(_spec("different")))
    result = subprocess.run([DRILLKIT, "dags", "sync", str(dags)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dags.glob("*.py")) == ["drill_one.py", "drill_two.py"]


@pytest.mark.parametrize(
    ("directory", "name"),
    [
        ("demo", "demo"),
        ("orders-restore", "orders-restore"),
        ("My Scenario.v2", "my-scenario-v2"),
        ("___", "scenario"),
        ("x" * 80, "x" * 63),
    ],
)
def test_a_scenarios_drill_is_named_after_its_directory(directory, name):
    assert drill_name_for(Path("/tmp") / directory) == name


def test_scenario_create_names_the_drill_after_the_directory(work_root):
    # A short path: the scenario's unix socket path must stay under 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="sc-", dir=work_root))
    workdir.chmod(0o755)
    target = workdir / "billing-scenario"
    args = ["--batches", "2", "--backups-after", "0", "--initial-mb", "0"]
    result = subprocess.run(
        [DRILLKIT, "scenario", "create", str(target), *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load((target / "drill.yaml").read_text())["drill"] == "billing-scenario"
    named = workdir / "named"
    result = subprocess.run(
        [DRILLKIT, "scenario", "create", str(named), *args, "--drill-name", "Bad Name"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'Bad Name' is not a drill name" in result.stderr


def test_a_spec_edited_into_a_clash_is_refused_at_the_next_parse(tmp_path, airflow_db):
    """Sibling specs are read once per process and again when they change (mtime, size): an
    edit that makes two drills share a DAG id is caught by the next parse in the same process."""
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    _write(dags, "orders.yaml", "orders")
    billing = _write(dags, "billing.yaml", "billing")
    assert {"drill_orders", "drill_billing"} <= set(DagBag(str(dags)).dag_ids)
    billing.write_text(yaml.safe_dump(_spec("orders-x")).replace("orders-x", "orders"))
    bag = DagBag(str(dags))
    assert "drill_orders" not in bag.dag_ids
    assert {Path(k).name for k in bag.import_errors} == {"drill_orders.py", "drill_billing.py"}
