"""A cnpg catalog drilled on a local tier (issue 15, item 3): the Backup objects live in the
Kubernetes API emulator (RBAC from the README's table), their status names a Barman Cloud store on
the loopback moto server and a credentials Secret; drillkit reads both through its Kubernetes
client and restores the store into a local sandbox."""

from __future__ import annotations

import copy
import json
import sys
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from objectstore import CREDENTIALS

from drillkit import drill
from drillkit.catalog.registry import for_sandbox, open_catalog
from drillkit.exceptions import InvalidInputError
from drillkit.k8s.client import api_from_kubeconfig, cluster
from drillkit.restore import restore_and_prove

pytestmark = pytest.mark.integration
K8S_TESTS = Path(__file__).resolve().parents[1] / "k8s"
sys.path.insert(0, str(K8S_TESTS))
from emulator import Emulator  # noqa: E402
from k8s_scenario import SOURCE_CLUSTER  # noqa: E402
from rbac_table import readme_rules  # noqa: E402

CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
README = Path(__file__).resolve().parents[2] / "README.md"
CATALOG = {"kind": "cnpg", "cluster": "orders-db", "namespace": "orders"}
SECRET = "store-creds"


def _iso(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seed(server: Emulator, obj: dict, plural: str, status: dict | None = None) -> None:
    api_version, ns, name = obj["apiVersion"], obj["metadata"].get("namespace"), None
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    base += f"/namespaces/{ns}/{plural}" if ns else f"/{plural}"
    code, body = server.request("POST", base, obj)
    assert code == 201, body
    if status is not None:
        name = obj["metadata"]["name"]
        code, body = server.request(
            "PATCH",
            f"{base}/{name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body


@pytest.fixture
def cnpg_store(barman_clean, object_store, work_root: Path):
    """The emulator holding orders-db's Backups of the clean barman store, as CloudNativePG
    records them (status through the /status subresource), and its credentials Secret."""
    _directory, _truth, barman_catalog = barman_clean
    # What each backup.info says (CloudNativePG copies it into the Backup's status).
    stored = open_catalog(barman_catalog).snapshot().backups
    server = Emulator(crd_dir=CRD_DIR if CRD_DIR.is_dir() else None).start()
    server.rbac = None
    try:
        _seed(
            server,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "orders"}},
            "namespaces",
        )
        _seed(server, copy.deepcopy(SOURCE_CLUSTER), "clusters")
        _seed(
            server,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": "orders"},
                "stringData": {
                    "ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    "ACCESS_SECRET_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                },
            },
            "secrets",
        )
        for index, backup in enumerate(stored):
            obj = {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Backup",
                "metadata": {"name": f"orders-db-{index}", "namespace": "orders"},
                "spec": {"cluster": {"name": "orders-db"}, "method": "barmanObjectStore"},
            }
            status = {
                "phase": "completed",
                "method": "barmanObjectStore",
                "backupId": backup.backup_id,
                "startedAt": _iso(backup.start_time),
                "stoppedAt": _iso(backup.stop_time),
                "serverName": barman_catalog["server_name"],
                "destinationPath": barman_catalog["destination"],
                "endpointURL": barman_catalog["endpoint_url"],
                "s3Credentials": {
                    "accessKeyId": {"name": SECRET, "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": SECRET, "key": "ACCESS_SECRET_KEY"},
                },
            }
            _seed(server, obj, "backups", status)
        # From here on drillkit runs under the README's ClusterRole: a verb outside it is 403.
        server.rbac = readme_rules(README)
        api = api_from_kubeconfig(str(server.write_kubeconfig(work_root / "cnpg-local.json")))
        yield server, api
    finally:
        server.stop()


@pytest.mark.parametrize("which", [0, -1])
def test_cnpg_catalog_local_tier_restores_the_backups_store(
    barman_clean, cnpg_store, monkeypatch, which
):
    directory, truth, _catalog = barman_clean
    # The worker has no store credentials of its own: only the Backup's Secret can supply them.
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    target = truth["targets"][which]
    with cluster(cnpg_store[1]):
        result = restore_and_prove(
            catalog=dict(CATALOG),
            target=target["target"],
            policy="latest",
            rpo="0s",
            truth_path=directory / "truth.json",
            keep=False,
            say=lambda _m: None,
        )
    assert result["verdict"] == "PASS", result["summary"]
    assert f"id={target['max_id']} present; id={target['absent_id']} absent" in result["summary"]
    coordinate = result["coordinate"]
    expected = [b["backup_id"] for b in truth["backups"] if b["after_batch"] <= target["batch"]][-1]
    assert coordinate["backup_id"] == expected
    names = [b["backup_id"] for b in truth["backups"]]
    assert coordinate["cnpg_backup"] == f"orders-db-{names.index(expected)}"
    assert coordinate["catalog"]["kind"] == "cnpg_store"
    assert coordinate["catalog"]["destination"] == _catalog["destination"]
    # Secret references travel, never the values.
    text = json.dumps(coordinate)
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in text
    assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in text
    assert coordinate["catalog"]["s3_credentials"]["secretAccessKey"]["name"] == SECRET


def test_cnpg_local_tier_with_an_incomplete_secret_is_a_clear_error(cnpg_store, monkeypatch):
    server, api = cnpg_store
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    # Someone removed the secret key from the Secret the Backup names (JSON merge patch: null
    # deletes the key, RFC 7386).
    rules, server.rbac = server.rbac, None
    code, body = server.request(
        "PATCH",
        f"/api/v1/namespaces/orders/secrets/{SECRET}",
        {"data": {"ACCESS_SECRET_KEY": None}},
        content_type="application/merge-patch+json",
    )
    server.rbac = rules
    assert code == 200, body
    with cluster(api), pytest.raises(InvalidInputError) as caught:
        drill.select(
            for_sandbox(CATALOG, {"kind": "local"}),
            policy="latest",
            target=None,
            rpo=timedelta(0),
            exclude=[],
            pinned=None,
        )
    assert caught.value.code == "STORE_CREDENTIALS_MISSING"
    assert "secret access key" in str(caught.value)
