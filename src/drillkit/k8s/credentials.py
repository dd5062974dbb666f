"""Credentials of a kubernetes sandbox's restored database, read through the API at check time.

The provision task creates them (drill-owned ``kubernetes.io/basic-auth`` Secrets in the drill
namespace, see ``objects.credential_secret``); its record names the Secrets, never the values, so
nothing secret passes through XCom. The CA that signs CloudNativePG's server certificate is in
Secret ``<cluster>-ca`` (key ``ca.crt``): a client in the cluster verifies ``<cluster>-rw.<ns>.svc``
against it (``sslmode=verify-full``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from drillkit.exceptions import SandboxError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import SECRET


def _secret_value(secret: Mapping[str, Any], key: str, *, what: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        raise SandboxError(
            f"Secret {secret['metadata']['name']} ({what}) has no key {key!r}",
            code="SANDBOX_CREDENTIALS_MISSING",
        )
    return base64.b64decode(raw).decode()


def sandbox_login(
    kube: Kube, record: Mapping[str, Any], *, superuser: bool = False
) -> dict[str, Any]:
    """``{user, password, database, ca_pem}`` for the record's restored database: its owner, or
    the drill-only superuser (``postgres``) to create the sealed check role and run amcheck."""
    namespace = str(record["namespace"])
    names = record.get("credentials") or {}
    key = "superuser_secret" if superuser else "owner_secret"
    name = str(names.get(key) or (objects.SUPERUSER_SECRET if superuser else objects.OWNER_SECRET))
    secret = kube.get(SECRET, name, namespace)
    if secret is None:
        raise SandboxError(
            f"Secret {name} is not in namespace {namespace}: the sandbox's credentials are gone "
            "(torn down, or provisioned by an older drillkit); re-run the tier",
            code="SANDBOX_CREDENTIALS_MISSING",
        )
    ca_name = str(names.get("ca_secret") or objects.CA_SECRET)
    ca = kube.get(SECRET, ca_name, namespace)
    postgres = (record.get("endpoints") or {}).get("postgres") or {}
    return {
        "user": _secret_value(secret, "username", what="login"),
        "password": _secret_value(secret, "password", what="login"),
        "database": postgres.get("database"),
        "ca_pem": _secret_value(ca, "ca.crt", what="server CA") if ca is not None else None,
    }
