"""A kubernetes sandbox gets drill-owned credentials, read through the API at check time: the
record carries Secret names only; database and owner are the source's, not CloudNativePG's app."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from k8s_scenario import provision_sandbox

from drillkit.exceptions import SandboxError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.credentials import sandbox_login

CNPG = "postgresql.cnpg.io/v1"
NS = "drill-orders-abc123"


def _bootstrap(cluster, bootstrap):
    code, body = cluster.request(
        "PATCH",
        cluster.path(CNPG, "clusters", "orders-db", "orders"),
        {"spec": {"bootstrap": bootstrap}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body


def test_the_recovery_cluster_gets_drill_owned_credentials_and_a_superuser(production):
    record = provision_sandbox(production)
    spec = production.stored(CNPG, "clusters", "sandbox", NS)["spec"]
    assert spec["bootstrap"]["recovery"]["secret"] == {"name": objects.OWNER_SECRET}
    assert spec["enableSuperuserAccess"] is True
    assert spec["superuserSecret"] == {"name": objects.SUPERUSER_SECRET}
    owner = production.stored("v1", "secrets", objects.OWNER_SECRET, NS)
    assert owner["type"] == "kubernetes.io/basic-auth"
    assert base64.b64decode(owner["data"]["username"]).decode() == "app"
    password = base64.b64decode(owner["data"]["password"]).decode()
    assert len(password) >= 24
    assert password not in json.dumps(record)  # never through XCom
    # Production never gets a superuser from the drill: only the drill namespace has the Secret.
    assert production.stored("v1", "secrets", objects.SUPERUSER_SECRET, "orders") is None


def test_database_and_owner_come_from_the_sources_bootstrap(production):
    _bootstrap(production, {"initdb": {"database": "orders", "owner": "orders_owner"}})
    record = provision_sandbox(production)
    recovery = production.stored(CNPG, "clusters", "sandbox", NS)["spec"]["bootstrap"]["recovery"]
    assert (recovery["database"], recovery["owner"]) == ("orders", "orders_owner")
    assert record["endpoints"]["postgres"]["database"] == "orders"
    assert record["endpoints"]["postgres"]["user"] == "orders_owner"


def test_a_retried_provision_keeps_the_password_the_cluster_was_made_with(production):
    provision_sandbox(production)
    first = production.stored("v1", "secrets", objects.SUPERUSER_SECRET, NS)["data"]
    provision_sandbox(production)
    assert production.stored("v1", "secrets", objects.SUPERUSER_SECRET, NS)["data"] == first


def test_checks_read_the_login_through_the_api(production):
    _bootstrap(production, {"initdb": {"database": "orders", "owner": "orders_owner"}})
    record = provision_sandbox(production)
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    production.seed(
        {
            "_plural": "secrets",
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": objects.CA_SECRET, "namespace": NS},
            "data": {"ca.crt": ca},
        }
    )
    login = sandbox_login(Kube(production.api), copy.deepcopy(record))
    assert login["user"] == "orders_owner" and login["database"] == "orders"
    assert login["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    superuser = sandbox_login(Kube(production.api), record, superuser=True)
    assert superuser["user"] == "postgres" and superuser["password"] != login["password"]


def test_missing_credentials_are_named(production):
    record = provision_sandbox(production)
    production.request("DELETE", production.path("v1", "secrets", objects.OWNER_SECRET, NS))
    with pytest.raises(SandboxError) as missing:
        sandbox_login(Kube(production.api), record)
    assert missing.value.code == "SANDBOX_CREDENTIALS_MISSING"


@pytest.mark.parametrize(
    ("mode", "code", "names"),
    [
        # No CloudNativePG ran: no sandbox-ca Secret, so the server cannot be verified.
        ("in_cluster", "SANDBOX_CREDENTIALS_MISSING", "sandbox-ca"),
        # No instance pod: nothing to forward to; the selectors tried are named.
        ("port_forward", "SANDBOX_UNREACHABLE", "cnpg.io/instanceRole=primary"),
    ],
)
def test_data_checks_that_cannot_reach_the_database_say_why(production, mode, code, names):
    """Opening the database fails before any check runs, as a SandboxError naming what is
    missing (the tier is COULD NOT VERIFY), and leaves no private directory behind."""
    import glob
    import tempfile

    from drillkit.gate import FAILURE_CODES
    from drillkit.k8s.access import open_database

    record = provision_sandbox(production)
    before = set(glob.glob(f"{tempfile.gettempdir()}/drillkit-k8s-*"))
    with (
        pytest.raises(SandboxError) as refused,
        open_database(Kube(production.api), record, mode=mode),
    ):
        pass
    assert refused.value.code == code and code not in FAILURE_CODES
    assert names in str(refused.value)
    assert set(glob.glob(f"{tempfile.gettempdir()}/drillkit-k8s-*")) == before


def test_data_checks_without_the_drill_secrets_refuse_to_connect(production):
    from drillkit.k8s.access import open_database

    record = provision_sandbox(production)
    code, body = production.request(
        "DELETE", production.path("v1", "secrets", objects.SUPERUSER_SECRET, NS)
    )
    assert code == 200, body
    kube = Kube(production.api)
    with (
        pytest.raises(SandboxError, match="credentials are gone") as refused,
        open_database(kube, record, mode="port_forward"),
    ):
        pass
    assert refused.value.code == "SANDBOX_CREDENTIALS_MISSING"
