"""The CRDs' CEL rules (x-kubernetes-validations) are enforced by the emulator, as by a real API
server; drillkit's recovery Cluster satisfies them (every provisioning test creates one)."""

from __future__ import annotations

import copy

import pytest
from k8s_scenario import SOURCE_CLUSTER, provision_sandbox

CNPG = "postgresql.cnpg.io/v1"


@pytest.fixture
def schemas(require_schemas, cluster):
    cluster.ensure_namespace("orders")
    return cluster


def _create(cluster, obj):
    return cluster.request("POST", cluster.path(CNPG, "clusters", None, "orders"), obj)


def test_image_name_and_catalog_together_are_rejected(schemas):
    obj = copy.deepcopy(SOURCE_CLUSTER)
    obj["spec"]["imageCatalogRef"] = {
        "apiGroup": "postgresql.cnpg.io",
        "kind": "ImageCatalog",
        "name": "pg",
        "major": 17,
    }
    code, body = _create(schemas, obj)
    assert code == 422, body
    assert "imageCatalogRef" in body["message"] or "imageName" in body["message"]


def test_a_catalog_ref_of_another_kind_is_rejected(schemas):
    obj = copy.deepcopy(SOURCE_CLUSTER)
    del obj["spec"]["imageName"]
    obj["spec"]["imageCatalogRef"] = {
        "apiGroup": "postgresql.cnpg.io",
        "kind": "ConfigMap",
        "name": "pg",
        "major": 17,
    }
    code, body = _create(schemas, obj)
    assert code == 422 and "spec.imageCatalogRef" in body["message"], body


def test_a_transition_rule_sees_the_old_object(schemas):
    obj = copy.deepcopy(SOURCE_CLUSTER)
    obj["spec"]["serviceAccountName"] = "orders"
    code, body = _create(schemas, obj)
    assert code == 201, body
    path = schemas.path(CNPG, "clusters", "orders-db", "orders")
    code, body = schemas.request(
        "PATCH",
        path,
        {"spec": {"serviceAccountName": "other"}},
        content_type="application/merge-patch+json",
    )
    assert code == 422 and "spec.serviceAccountName" in body["message"], body


def test_the_recovery_cluster_satisfies_the_rules(production, require_schemas):
    provision_sandbox(production)
    assert production.stored(CNPG, "clusters", "sandbox", "drill-orders-abc123") is not None
