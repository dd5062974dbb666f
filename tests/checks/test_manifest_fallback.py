"""Without drillkit.routing the runner reads the manifest itself, still refusing unknown targets."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from drillkit.exceptions import RoutingError

pytestmark = pytest.mark.unit


@pytest.fixture
def engine_without_routing(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    from drillkit.checks import engine

    # None in sys.modules makes `import drillkit.routing.manifest` raise ImportError.
    monkeypatch.setitem(sys.modules, "drillkit.routing.manifest", None)  # type: ignore[arg-type]
    importlib.reload(engine)
    try:
        yield engine
    finally:
        monkeypatch.undo()
        importlib.reload(engine)


def manifest() -> dict[str, Any]:
    return {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": "d",
        "context": {"header": "X-Drill-Context", "value": "v"},
        "services": {"db": {"kind": "postgres", "resolved_by": "provisioned", "endpoint": {}}},
    }


def test_fallback_resolves_known_and_refuses_unknown(engine_without_routing: ModuleType) -> None:
    assert engine_without_routing.resolve_target.__module__ == "drillkit.checks.engine"
    assert engine_without_routing.resolve_target(manifest(), "db")["resolved_by"] == "provisioned"
    with pytest.raises(RoutingError) as info:
        engine_without_routing.resolve_target(manifest(), "orders-db")
    assert info.value.code == "TARGET_NOT_IN_MANIFEST"


def test_fallback_run_refuses_a_target_not_in_the_manifest(
    engine_without_routing: ModuleType,
) -> None:
    check = {"name": "c", "kind": "tcp", "target": "cache"}
    document = engine_without_routing.run_checks([check], manifest())
    assert document["results"][0]["status"] == "error"
    assert [f["code"] for f in document["findings"]] == ["TARGET_NOT_IN_MANIFEST"]
    assert document["status"] == "error"


def test_the_real_routing_module_is_used_when_present() -> None:
    from drillkit.checks import engine

    assert engine.resolve_target.__module__ == "drillkit.routing.manifest"
