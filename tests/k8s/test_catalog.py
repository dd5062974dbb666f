"""Catalog kind cnpg: Backup objects as PITR candidates, with what could not be verified said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from k8s_scenario import BACKUP_TIMES, backup_object

from drillkit.exceptions import InvalidInputError, NoRestorableBackupError
from drillkit.k8s.catalog import WAL_CONTINUITY_UNVERIFIED, select_cnpg, select_from_backups
from drillkit.k8s.client import Kube

CATALOG = {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"}
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BACKUPS = [backup_object(f"b{i}", stopped=t) for i, t in enumerate(BACKUP_TIMES)]


def select(backups=BACKUPS, **kwargs):
    kwargs.setdefault("target", None)
    return select_from_backups(backups, catalog=CATALOG, now=NOW, **kwargs)


def test_latest_previous_oldest_pinned():
    assert select()["backup_id"] == "b2"
    assert select(policy="previous")["backup_id"] == "b1"
    assert select(policy="oldest")["backup_id"] == "b0"
    assert select(pinned="b0")["backup_id"] == "b0"
    with pytest.raises(InvalidInputError, match="not a Backup"):
        select(pinned="nope")


def test_target_excludes_backups_that_ended_after_it():
    target = BACKUP_TIMES[1] + timedelta(hours=1)
    coordinate = select(target=target)
    assert coordinate["backup_id"] == "b1"
    assert coordinate["target"]["mode"] == "time"
    decisions = {c["backup_id"]: c["code"] for c in coordinate["candidates"]}
    assert decisions == {"b2": "TOO_NEW", "b1": "CHOSEN", "b0": "NOT_NEEDED"}
    assert coordinate["backup"]["barman_id"] == BACKUP_TIMES[1].strftime("%Y%m%dT%H%M%S")


def test_continuity_is_said_to_be_unverified_never_assumed():
    coordinate = select(target=BACKUP_TIMES[2] + timedelta(minutes=5))
    codes = {f["code"]: f for f in coordinate["findings"]}
    finding = codes[WAL_CONTINUITY_UNVERIFIED]
    assert finding["severity"] == "warning"
    assert "NOT verified" in finding["message"]
    assert coordinate["expected_data_loss_seconds"] is None
    assert coordinate["recovery_point"] is None
    assert coordinate["backup"]["verification"] == "not_verified"


def test_failed_running_and_excluded_backups_are_not_chosen():
    backups = [
        *BACKUPS[:2],
        backup_object("b2", stopped=BACKUP_TIMES[2], phase="failed", error="upload refused"),
        backup_object("b3", stopped=BACKUP_TIMES[2] + timedelta(hours=1), phase="running"),
    ]
    coordinate = select(backups, exclude=["b1"])
    assert coordinate["backup_id"] == "b0"
    codes = {c["backup_id"]: c["code"] for c in coordinate["candidates"]}
    assert codes["b2"] == "BACKUP_FAILED" and codes["b3"] == "BACKUP_INCOMPLETE"
    assert codes["b1"] == "EXCLUDED"


def test_target_before_every_backup_says_so():
    with pytest.raises(NoRestorableBackupError) as refused:
        select(target=BACKUP_TIMES[0] - timedelta(days=1))
    assert refused.value.code == "TARGET_BEFORE_OLDEST_RESTORABLE"
    with pytest.raises(InvalidInputError, match="future"):
        select(target=NOW + timedelta(days=1))


def test_backups_listed_from_the_api_server(production):
    # Another cluster's backup in the same namespace is not a candidate.
    other = backup_object("other-0", stopped=BACKUP_TIMES[2] + timedelta(hours=1))
    other["spec"]["cluster"]["name"] = "billing-db"
    other.pop("status")
    production.seed({"_plural": "backups", **other})
    coordinate = select_cnpg(
        Kube(production.api),
        CATALOG,
        target=None,
        policy="latest",
        rpo=timedelta(0),
        exclude=[],
        pinned=None,
    )
    assert coordinate["backup_id"] == "orders-db-2"
    assert {c["backup_id"] for c in coordinate["candidates"]} == {
        "orders-db-0",
        "orders-db-1",
        "orders-db-2",
    }
    with pytest.raises(InvalidInputError, match="not found"):
        select_cnpg(
            Kube(production.api),
            {**CATALOG, "cluster": "ghost"},
            target=None,
            policy="latest",
            rpo=timedelta(0),
            exclude=[],
            pinned=None,
        )


def test_a_plugin_backup_is_read_from_its_object_store_for_a_local_tier(production):
    """Issue 15 item 3: for a local tier, a barman-cloud plugin Backup's store comes from the
    ObjectStore the source Cluster's plugin entry names; Secret references only."""
    from drillkit.k8s.local_store import store_config

    creds = {
        "accessKeyId": {"name": "backup-creds", "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": "backup-creds", "key": "ACCESS_SECRET_KEY"},
    }
    production.seed(
        {
            "_plural": "objectstores",
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": {"name": "orders-store", "namespace": "orders"},
            "spec": {
                "configuration": {
                    "destinationPath": "s3://new-bucket/orders",
                    "endpointURL": "https://s3.example.com",
                    "s3Credentials": creds,
                }
            },
        }
    )
    code, body = production.request(
        "PATCH",
        production.path("postgresql.cnpg.io/v1", "clusters", "orders-db", "orders"),
        {
            "spec": {
                "plugins": [
                    {
                        "name": "barman-cloud.cloudnative-pg.io",
                        "isWALArchiver": True,
                        "parameters": {"barmanObjectName": "orders-store"},
                    }
                ]
            }
        },
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    origin = {
        "method": "plugin",
        "server_name": "orders-db",
        "plugin": {"name": "barman-cloud.cloudnative-pg.io", "parameters": {}},
    }
    config = store_config(Kube(production.api), origin, namespace="orders", cluster="orders-db")
    assert config == {
        "kind": "cnpg_store",
        "namespace": "orders",
        "destination": "s3://new-bucket/orders",
        "server_name": "orders-db",
        "endpoint_url": "https://s3.example.com",
        "s3_credentials": creds,
    }
    # Another plugin's backup names no ObjectStore drillkit can find: a clear refusal.
    other = {**origin, "plugin": {"name": "other.example.com", "parameters": {}}}
    with pytest.raises(InvalidInputError, match="barmanObjectName"):
        store_config(Kube(production.api), other, namespace="orders", cluster="orders-db")
