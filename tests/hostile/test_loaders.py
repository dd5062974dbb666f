"""DAG loaders carry the spec path as data: a crafted spec file name never becomes code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drillkit.exceptions import InvalidInputError
from drillkit.spec import loader_name, loader_source

pytestmark = pytest.mark.unit

HOSTILE_NAMES = [
    'a"+__import__("os").system("touch pwned")+".yaml',
    "a'+__import__('os').system('touch pwned')+'.yaml",
    'a""");import os;os.system("touch pwned");("""x.yaml',
    "a\nimport os\n.yaml",
    "a b.yaml",
    "a\\x.yaml",
    "-rf.yaml",
    ".hidden.yaml",
    "naïve.yaml",
]


def _spec_constant(source: str) -> object:
    """The loader must be: docstring, one import, SPEC = <str literal>, dag = call(SPEC, ...)."""
    module = ast.parse(source)
    kinds = [type(node).__name__ for node in module.body]
    assert kinds == ["Expr", "ImportFrom", "Assign", "Assign"], kinds
    spec_assign = module.body[2]
    assert isinstance(spec_assign.value, ast.Constant)
    call = module.body[3].value
    assert isinstance(call, ast.Call) and [type(a).__name__ for a in call.args] == ["Name"]
    return spec_assign.value.value


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_loader_source_holds_any_path_as_a_literal(rel: str):
    assert _spec_constant(loader_source(rel)) == rel


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_loader_source_of_a_hostile_name_is_data(name: str):
    assert _spec_constant(loader_source(f"drills/{name}")) == f"drills/{name}"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_dags_sync_refuses_a_hostile_file_name_and_names_it(tmp_path: Path, name: str):
    from drillkit.operators.dag_factory import sync_loaders

    drills = tmp_path / "drills"
    drills.mkdir()
    (drills / name).write_text("drill: x\n")
    (drills / "good.yaml").write_text("drill: good\n")
    with pytest.raises(InvalidInputError) as err:
        sync_loaders(tmp_path)
    assert err.value.code == "SPEC_FILE_NAME_INVALID"
    assert name in str(err.value) and "rename" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drills"]  # nothing written


def test_dags_sync_refuses_two_specs_sharing_one_loader(tmp_path: Path):
    from drillkit.operators.dag_factory import sync_loaders

    drills = tmp_path / "drills"
    drills.mkdir()
    for name in ("a-b.yaml", "a_b.yml"):
        (drills / name).write_text("drill: x\n")
    with pytest.raises(InvalidInputError, match=r"drill_a_b\.py would also load a-b\.yaml"):
        sync_loaders(tmp_path)


def test_dags_sync_writes_safe_names(tmp_path: Path):
    from drillkit.operators.dag_factory import sync_loaders

    drills = tmp_path / "drills"
    drills.mkdir()
    (drills / "orders.v2.yaml").write_text("drill: x\n")
    (drills / "notes.txt").write_text("not a spec\n")
    written = sync_loaders(tmp_path)
    assert [p.name for p in written] == ["drill_orders_v2.py"]
    assert _spec_constant(written[0].read_text()) == "drills/orders.v2.yaml"


def test_loader_name_refuses_what_it_cannot_name():
    with pytest.raises(InvalidInputError, match="rename the file"):
        loader_name(Path("drills") / HOSTILE_NAMES[0])
