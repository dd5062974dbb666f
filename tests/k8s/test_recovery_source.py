"""The recovery Cluster reads the chosen Backup where its own status says it was written, with
its major's image; keeps what CloudNativePG needs on recovery; copies only what it must."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from k8s_scenario import BACKUP_TIMES, DRILL_ID, backup_object, sandbox_backend

from drillkit.exceptions import InvalidInputError, SandboxError
from drillkit.k8s import objects
from drillkit.k8s.catalog import select_from_backups
from drillkit.k8s.config import parse_sandbox

CNPG = "postgresql.cnpg.io/v1"
NS = "drill-orders-abc123"
CREDS = {
    "accessKeyId": {"name": "backup-creds", "key": "ACCESS_KEY_ID"},
    "secretAccessKey": {"name": "backup-creds", "key": "ACCESS_SECRET_KEY"},
}


def _backup(**status: Any) -> dict[str, Any]:
    """The scenario's middle Backup, with the status fields CloudNativePG records."""
    recorded = {
        "destinationPath": "s3://prod-backups/orders",
        "endpointURL": "https://s3.prod.example.com",
        "s3Credentials": CREDS,
        "majorVersion": 17,
        **status,
    }
    return backup_object("orders-db-1", stopped=BACKUP_TIMES[1], **recorded)


def _coordinate(backup: dict[str, Any]) -> dict[str, Any]:
    return select_from_backups(
        [backup],
        catalog={"cluster": "orders-db", "namespace": "orders"},
        target=None,
        now=datetime(2026, 11, 21, tzinfo=UTC),
    )


def _patch_source(cluster, spec: dict[str, Any]) -> None:
    code, body = cluster.request(
        "PATCH",
        cluster.path(CNPG, "clusters", "orders-db", "orders"),
        {"spec": spec},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body


def _provision(cluster, coordinate: dict[str, Any], **config: Any) -> dict[str, Any]:
    sandbox_backend(cluster, **config).provision(
        coordinate,
        drill_id=DRILL_ID,
        name="orders",
        ttl=timedelta(hours=2),
        sandbox_id="orders-abc123",
    )
    return cluster.stored(CNPG, "clusters", "sandbox", NS)


def _secret(cluster, name: str, namespace: str = "orders") -> None:
    cluster.seed(
        {
            "_plural": "secrets",
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {"ACCESS_KEY_ID": "AKIA-ro", "ACCESS_SECRET_KEY": "ro"},
        }
    )


def test_a_changed_server_name_still_reads_the_backups_folder(production):
    store = {"serverName": "orders-db-v2"}
    _patch_source(production, {"backup": {"barmanObjectStore": store}})
    stored = _provision(production, _coordinate(_backup(serverName="orders-db")))
    origin = stored["spec"]["externalClusters"][0]["barmanObjectStore"]
    assert origin["serverName"] == "orders-db"


def test_a_moved_bucket_reads_where_the_backup_was_written(production):
    _secret(production, "new-creds")
    moved = {
        "destinationPath": "s3://new-bucket/orders",
        "endpointURL": "https://s3.new.example.com",
        "s3Credentials": {
            "accessKeyId": {"name": "new-creds", "key": "ACCESS_KEY_ID"},
            "secretAccessKey": {"name": "new-creds", "key": "ACCESS_SECRET_KEY"},
        },
    }
    _patch_source(production, {"backup": {"barmanObjectStore": moved}})
    stored = _provision(production, _coordinate(_backup()))
    origin = stored["spec"]["externalClusters"][0]["barmanObjectStore"]
    assert origin["destinationPath"] == "s3://prod-backups/orders"
    assert origin["endpointURL"] == "https://s3.prod.example.com"
    assert origin["s3Credentials"] == CREDS
    assert production.stored("v1", "secrets", "backup-creds", NS) is not None


def test_after_a_migration_to_the_plugin_an_old_backup_is_read_in_place(production):
    _patch_source(
        production,
        {
            "backup": None,
            "plugins": [
                {
                    "name": objects.BARMAN_PLUGIN,
                    "isWALArchiver": True,
                    "parameters": {"barmanObjectName": "orders-store"},
                }
            ],
        },
    )
    stored = _provision(production, _coordinate(_backup()))
    (origin,) = stored["spec"]["externalClusters"]
    assert "plugin" not in origin
    assert origin["barmanObjectStore"]["destinationPath"] == "s3://prod-backups/orders"
    assert origin["barmanObjectStore"]["serverName"] == "orders-db"


def test_a_plugin_backup_names_its_plugin_and_server(production):
    production.seed(
        {
            "_plural": "objectstores",
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": {"name": "orders-store", "namespace": "orders"},
            "spec": {
                "configuration": {
                    "destinationPath": "s3://new-bucket/orders",
                    "s3Credentials": CREDS,
                }
            },
        }
    )
    _patch_source(
        production,
        {
            "backup": None,
            "plugins": [
                {
                    "name": objects.BARMAN_PLUGIN,
                    "isWALArchiver": True,
                    "parameters": {"barmanObjectName": "orders-store", "serverName": "now"},
                }
            ],
        },
    )
    backup = _backup(method="plugin", serverName="orders-db")
    backup["spec"] = {
        "cluster": {"name": "orders-db"},
        "method": "plugin",
        "pluginConfiguration": {"name": objects.BARMAN_PLUGIN},
    }
    stored = _provision(production, _coordinate(backup))
    plugin = stored["spec"]["externalClusters"][0]["plugin"]
    assert plugin["parameters"] == {"barmanObjectName": "orders-store", "serverName": "orders-db"}
    store = production.stored("barmancloud.cnpg.io/v1", "objectstores", "orders-store", NS)
    assert store["spec"]["configuration"]["destinationPath"] == "s3://prod-backups/orders"


def test_a_backup_from_before_a_major_upgrade_is_not_restored_with_the_new_image(production):
    with pytest.raises(InvalidInputError) as refused:
        _provision(production, _coordinate(_backup(majorVersion=16)))
    assert refused.value.code == "SANDBOX_IMAGE_MAJOR_MISMATCH"
    assert "image_name" in str(refused.value)
    stored = _provision(
        production,
        _coordinate(_backup(majorVersion=16)),
        image_name="ghcr.io/cloudnative-pg/postgresql:16.6",
    )
    assert stored["spec"]["imageName"] == "ghcr.io/cloudnative-pg/postgresql:16.6"


def test_a_namespaced_image_catalog_is_resolved_for_the_backups_major(production):
    production.seed(
        {
            "_plural": "imagecatalogs",
            "apiVersion": CNPG,
            "kind": "ImageCatalog",
            "metadata": {"name": "pg", "namespace": "orders"},
            "spec": {
                "images": [
                    {"major": 16, "image": "ghcr.io/cloudnative-pg/postgresql:16.6"},
                    {"major": 17, "image": "ghcr.io/cloudnative-pg/postgresql:17.2"},
                ]
            },
        }
    )
    ref = {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "pg", "major": 17}
    _patch_source(production, {"imageName": None, "imageCatalogRef": ref})
    stored = _provision(production, _coordinate(_backup(majorVersion=16)))
    assert stored["spec"]["imageName"] == "ghcr.io/cloudnative-pg/postgresql:16.6"
    assert "imageCatalogRef" not in stored["spec"]


def test_a_cluster_image_catalog_ref_is_kept_with_the_backups_major(production):
    ref = {
        "apiGroup": "postgresql.cnpg.io",
        "kind": "ClusterImageCatalog",
        "name": "pg",
        "major": 17,
    }
    _patch_source(production, {"imageName": None, "imageCatalogRef": ref})
    stored = _provision(production, _coordinate(_backup(majorVersion=16)))
    assert stored["spec"]["imageCatalogRef"] == {**ref, "major": 16}


def test_tablespaces_and_workload_identity_are_kept(production):
    tablespaces = [{"name": "archive", "storage": {"size": "5Gi"}, "owner": {"name": "app"}}]
    account = {"metadata": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:r"}}}
    _patch_source(production, {"tablespaces": tablespaces, "serviceAccountTemplate": account})
    stored = _provision(production, _coordinate(_backup()))
    source = production.stored(CNPG, "clusters", "orders-db", "orders")  # with CRD defaults
    assert stored["spec"]["tablespaces"] == source["spec"]["tablespaces"]
    assert stored["spec"]["tablespaces"][0]["name"] == "archive"
    assert stored["spec"]["serviceAccountTemplate"] == account


def test_a_secret_reference_with_optional_is_copied():
    refs = {"accessKeyId": {"name": "a", "key": "K", "optional": False}, "region": {"name": "b"}}
    assert objects.secret_refs(refs) == {"a"}


def test_recovery_credentials_keep_production_keys_out_of_the_drill(production):
    _secret(production, "orders-backup-readonly")
    stored = _provision(
        production, _coordinate(_backup()), recovery_credentials="orders-backup-readonly"
    )
    creds = stored["spec"]["externalClusters"][0]["barmanObjectStore"]["s3Credentials"]
    assert {ref["name"] for ref in creds.values()} == {"orders-backup-readonly"}
    assert production.stored("v1", "secrets", "backup-creds", NS) is None
    assert production.stored("v1", "secrets", "orders-backup-readonly", NS) is not None


def test_recovery_credentials_must_be_a_secret_name():
    with pytest.raises(InvalidInputError, match="recovery_credentials"):
        parse_sandbox({"worker_namespace": "airflow", "recovery_credentials": "Not A Name"})


def test_a_missing_namespaced_image_catalog_is_named(production):
    ref = {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "gone", "major": 17}
    _patch_source(production, {"imageName": None, "imageCatalogRef": ref})
    with pytest.raises(SandboxError, match="ImageCatalog gone"):
        _provision(production, _coordinate(_backup()))


def test_the_coordinate_carries_the_backups_origin():
    coordinate = _coordinate(_backup(serverName="orders-db"))
    origin = copy.deepcopy(coordinate["backup"]["origin"])
    assert origin["server_name"] == "orders-db"
    assert origin["destination_path"] == "s3://prod-backups/orders"
    assert origin["major_version"] == 17 and origin["method"] == "barmanObjectStore"


def test_recovery_credentials_replace_the_object_stores_keys_too(production):
    _secret(production, "orders-backup-readonly")
    production.seed(
        {
            "_plural": "objectstores",
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": {"name": "orders-store", "namespace": "orders"},
            "spec": {
                "configuration": {
                    "destinationPath": "s3://prod-backups/orders",
                    "s3Credentials": CREDS,
                }
            },
        }
    )
    _patch_source(
        production,
        {
            "backup": None,
            "plugins": [
                {
                    "name": objects.BARMAN_PLUGIN,
                    "isWALArchiver": True,
                    "parameters": {"barmanObjectName": "orders-store"},
                }
            ],
        },
    )
    backup = _backup(method="plugin")
    backup["spec"] = {
        "cluster": {"name": "orders-db"},
        "method": "plugin",
        "pluginConfiguration": {"name": objects.BARMAN_PLUGIN},
    }
    _provision(production, _coordinate(backup), recovery_credentials="orders-backup-readonly")
    store = production.stored("barmancloud.cnpg.io/v1", "objectstores", "orders-store", NS)
    creds = store["spec"]["configuration"]["s3Credentials"]
    assert {ref["name"] for ref in creds.values()} == {"orders-backup-readonly"}
    assert production.stored("v1", "secrets", "backup-creds", NS) is None
