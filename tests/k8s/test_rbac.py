"""The README's RBAC table is what the emulator enforces for drillkit's identity (the whole k8s
tier runs that way): a request outside it is 403, and the table names what the code calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from rbac_table import readme_rules

from drillkit.exceptions import SandboxError
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import CONFIG_MAP

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_table_grants_what_the_kubernetes_sandbox_calls():
    rules = readme_rules(README)
    for rule in [
        ("", "namespaces", "get"),
        ("", "namespaces", "delete"),
        ("", "secrets", "get"),
        ("", "secrets", "create"),
        ("batch", "jobs", "list"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("postgresql.cnpg.io", "imagecatalogs", "get"),
        ("postgresql.cnpg.io", "backups", "list"),
    ]:
        assert rule in rules, rule
    assert ("", "configmaps", "list") not in rules
    assert ("postgresql.cnpg.io", "clusters", "delete") not in rules


def test_a_request_outside_the_table_is_forbidden(production):
    assert production.emulator.rbac is not None
    with pytest.raises(SandboxError) as refused:
        Kube(production.api).list(CONFIG_MAP, namespace="orders")
    assert refused.value.code == "K8S_FORBIDDEN"
    assert 'cannot list resource "configmaps"' in str(refused.value)
    assert production.emulator.denied[-1] == ("", "configmaps", "list")
