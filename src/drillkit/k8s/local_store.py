"""A cnpg catalog drilled on the worker: the chosen Backup's object store, restored locally.

For a ``sandbox: {kind: local}`` tier of a ``catalog: {kind: cnpg, ...}`` spec, the Backup object
chosen by the cnpg policies names its own store in its status (serverName, destinationPath,
endpointURL and the ``s3Credentials`` Secret references: BackupStatus in
../shared/crds/cnpg-backups.yaml); a backup taken by the barman-cloud plugin names its
``ObjectStore`` in ``spec.pluginConfiguration.parameters.barmanObjectName``, whose
``spec.configuration`` holds the same fields
(https://cloudnative-pg.io/plugin-barman-cloud/docs/usage/). That store is then read and restored
by the ``barman_cloud`` catalog code, as catalog kind ``cnpg_store``: its config carries Secret
references only; the keys are read from the Secret through the Kubernetes connection each time
they are needed and travel as environment variables only (never XCom, never a log line).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from drillkit.barman.catalog import BarmanCloudCatalog
from drillkit.barman.store import Destination
from drillkit.catalog.protocol import select_from_snapshot
from drillkit.exceptions import InvalidInputError
from drillkit.k8s.client import Kube
from drillkit.k8s.kinds import CNPG_CLUSTER, OBJECT_STORE, SECRET
from drillkit.pgbin import PgSettings

KIND = "cnpg_store"
# CloudNativePG's S3Credentials (SecretKeySelector each) -> the variable boto3 and barman-cloud
# read: https://cloudnative-pg.io/documentation/current/appendixes/object_stores/#aws-s3
_S3_KEYS = {
    "accessKeyId": "AWS_ACCESS_KEY_ID",
    "secretAccessKey": "AWS_SECRET_ACCESS_KEY",
    "sessionToken": "AWS_SESSION_TOKEN",
    "region": "AWS_DEFAULT_REGION",
}
UNSUPPORTED = "BACKUP_UNVERIFIABLE"


def _plugin_store(
    kube: Kube, origin: Mapping[str, Any], namespace: str, cluster: str
) -> dict[str, Any]:
    """The plugin's ObjectStore configuration, as the Backup's plugin parameters name it, else
    the source Cluster's entry for the same plugin (an on-demand Backup usually names only the
    plugin: https://cloudnative-pg.io/plugin-barman-cloud/docs/usage/)."""
    wanted = (origin.get("plugin") or {}).get("name")
    source = kube.get(CNPG_CLUSTER, cluster, namespace) or {}
    params: dict[str, Any] = {}
    for plugin in (source.get("spec") or {}).get("plugins") or []:
        if isinstance(plugin, Mapping) and plugin.get("name") == wanted:
            params.update(plugin.get("parameters") or {})
    params.update((origin.get("plugin") or {}).get("parameters") or {})
    name = params.get("barmanObjectName")
    if not name:
        raise InvalidInputError(
            "the chosen Backup was taken by a plugin but names no barmanObjectName: drillkit "
            "cannot tell which ObjectStore holds it; drill it on a kubernetes tier",
            code=UNSUPPORTED,
        )
    store = kube.get(OBJECT_STORE, str(name), namespace)
    if store is None:
        raise InvalidInputError(
            f"ObjectStore {name} is not in namespace {namespace}: the chosen Backup's store is "
            "unknown; restore it on a kubernetes tier or choose another backup",
            code=UNSUPPORTED,
        )
    config = dict((store.get("spec") or {}).get("configuration") or {})
    if params.get("serverName"):
        config["serverName"] = params["serverName"]
    return config


def store_config(
    kube: Kube, origin: Mapping[str, Any], *, namespace: str, cluster: str
) -> dict[str, Any]:
    """Catalog ``cnpg_store`` for a Backup's ``origin`` (``backup_origin``): no secret values."""
    fields: dict[str, Any] = {}
    if origin.get("method") == "plugin":
        fields.update(_plugin_store(kube, origin, namespace, cluster))
    for status, key in (
        ("serverName", "server_name"),
        ("destinationPath", "destination_path"),
        ("endpointURL", "endpoint_url"),
        ("s3Credentials", "s3_credentials"),
        ("azureCredentials", "azure_credentials"),
        ("googleCredentials", "google_credentials"),
    ):
        if origin.get(key) not in (None, "", {}):
            fields[status] = origin[key]
    if fields.get("azureCredentials") or fields.get("googleCredentials"):
        raise InvalidInputError(
            "the chosen Backup is in Azure or Google Cloud Storage; a local tier restores S3 "
            "stores only so far: drill it on a kubernetes tier",
            code=UNSUPPORTED,
        )
    if not fields.get("destinationPath"):
        raise InvalidInputError(
            "the chosen Backup's status names no destinationPath: nothing says where it is; "
            "choose another backup or drill it on a kubernetes tier",
            code=UNSUPPORTED,
        )
    config: dict[str, Any] = {
        "kind": KIND,
        "namespace": namespace,
        "destination": str(fields["destinationPath"]),
        "server_name": str(fields.get("serverName") or cluster),
    }
    if fields.get("endpointURL"):
        config["endpoint_url"] = str(fields["endpointURL"])
    s3 = fields.get("s3Credentials") or {}
    refs = {k: dict(v) for k, v in s3.items() if k in _S3_KEYS and isinstance(v, Mapping)}
    if refs:
        config["s3_credentials"] = refs
    return config


def _secret_value(kube: Kube, namespace: str, ref: Mapping[str, Any], what: str) -> str:
    name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
    secret = kube.get(SECRET, name, namespace) if name else None
    if secret is None:
        raise InvalidInputError(
            f"the Backup's {what} names Secret {name!r}, which is not in namespace {namespace}; "
            "restore it or drill this backup on a kubernetes tier",
            code="STORE_CREDENTIALS_MISSING",
        )
    raw = (secret.get("data") or {}).get(key)
    try:
        return base64.b64decode(raw, validate=True).decode() if raw else ""
    except (binascii.Error, UnicodeDecodeError, TypeError):
        return ""


class CnpgStoreCatalog(BarmanCloudCatalog):
    """A Backup's object store read with the Backup's own credentials Secret."""

    kind = KIND

    def __init__(
        self,
        *,
        namespace: str,
        s3_credentials: Mapping[str, Mapping[str, Any]],
        destination: Destination,
        endpoint_url: str | None = None,
        postgres: PgSettings | None = None,
    ) -> None:
        super().__init__(destination=destination, endpoint_url=endpoint_url, postgres=postgres)
        self.namespace = namespace
        self.s3_credentials = {k: dict(v) for k, v in s3_credentials.items()}

    def descriptor(self) -> dict[str, Any]:
        config = {**super().descriptor(), "kind": KIND, "namespace": self.namespace}
        if self.s3_credentials:
            config["s3_credentials"] = self.s3_credentials
        return config

    def credentials(self) -> dict[str, str]:
        """Read from the Secret now (never stored): without references, the worker's own
        credential chain (``inheritFromIAMRole``)."""
        if not self.s3_credentials:
            return super().credentials()
        from drillkit.k8s.client import current

        kube = current()
        env = {}
        for field, ref in self.s3_credentials.items():
            value = _secret_value(kube, self.namespace, ref, f"s3Credentials.{field}")
            if value:
                env[_S3_KEYS[field]] = value
        if "AWS_ACCESS_KEY_ID" not in env or "AWS_SECRET_ACCESS_KEY" not in env:
            raise InvalidInputError(
                f"the Backup's s3Credentials Secret in namespace {self.namespace} lacks the access "
                "key id or the secret access key it names; fix the Secret",
                code="STORE_CREDENTIALS_MISSING",
            )
        return env


def from_config(config: Mapping[str, Any], *, postgres: PgSettings | None = None) -> Any:
    """Validate ``{kind: cnpg_store, ...}`` (made by a cnpg select); no I/O."""
    known = {"kind", "namespace", "destination", "server_name", "endpoint_url", "s3_credentials"}
    unknown = sorted(set(map(str, config)) - known)
    if unknown:
        raise InvalidInputError(
            f"catalog has unknown keys {unknown}; a cnpg_store catalog is made by a cnpg select"
        )
    endpoint = config.get("endpoint_url")
    if endpoint is not None and not str(endpoint).startswith(("http://", "https://")):
        raise InvalidInputError(f"catalog.endpoint_url {endpoint!r} is not an http(s) URL")
    refs = config.get("s3_credentials") or {}
    if not isinstance(refs, Mapping) or set(refs) - set(_S3_KEYS):
        raise InvalidInputError(f"catalog.s3_credentials takes only {', '.join(_S3_KEYS)}")
    return CnpgStoreCatalog(
        namespace=str(config.get("namespace") or ""),
        s3_credentials=refs,
        destination=Destination.parse(
            str(config.get("destination") or ""), str(config.get("server_name") or "")
        ),
        endpoint_url=endpoint,
        postgres=postgres,
    )


def select_local(
    kube: Kube,
    objects: list[dict[str, Any]],
    *,
    cluster: str,
    namespace: str,
    target: datetime | None,
    policy: str,
    rpo: timedelta,
    exclude: list[str],
    pinned: str | None,
    checksum_gate: bool,
    postgres: PgSettings | None,
    say: Any,
) -> dict[str, Any]:
    """The cnpg policies choose the Backup object; its store's snapshot gives the coordinate
    (WAL continuity verified from the store's own listing)."""
    from drillkit.k8s.catalog import CnpgBackup, select_from_backups

    # A backup an earlier tier failed is named by its Backup object or by its barman id.
    failed = set(exclude)
    failed |= {b.name for b in map(CnpgBackup.from_object, objects) if b.barman_id in failed}
    chosen = select_from_backups(
        objects,
        catalog={"cluster": cluster, "namespace": namespace},
        target=target,
        policy=policy,
        rpo=rpo,
        exclude=sorted(failed),
        pinned=pinned,
    )
    backup = chosen["backup"]
    store = from_config(
        store_config(kube, backup.get("origin") or {}, namespace=namespace, cluster=cluster),
        postgres=postgres,
    )
    coordinate = select_from_snapshot(
        store,
        policy="pinned",
        target=target,
        rpo=rpo,
        exclude=[],
        pinned=str(backup["barman_id"]),
        checksum_gate=checksum_gate,
        say=say,
    )
    coordinate["reason"] = (
        f"Backup {chosen['backup_id']}: {chosen['reason']}; its store: {coordinate['reason']}"
    )
    coordinate["policy"] = chosen["policy"]
    coordinate["cnpg_backup"] = chosen["backup_id"]
    return coordinate
