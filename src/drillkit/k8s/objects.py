"""Pure builders of the sandbox's objects: drill namespace, NetworkPolicy, CloudNativePG Cluster.

The recovery Cluster reads production's backups and never gets production's ``backup`` or
``plugins`` settings: a restored server that archived would write into production's object store.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from drillkit.exceptions import InvalidInputError
from drillkit.k8s.config import SandboxConfig
from drillkit.timeutil import isoformat, parse_target_time

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "drillkit"
DRILL_ID_LABEL = "drillkit.io/drill-id"
SANDBOX_LABEL = "drillkit.io/sandbox"
EXPIRES_ANNOTATION = "drillkit.io/expires-at"
ENDPOINT_ANNOTATION = "drillkit.io/endpoint"  # http | tcp: a Service that is a drill endpoint
CLUSTER_NAME = "sandbox"
RECOVERY_SOURCE = "origin"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
OWNED = f"{MANAGED_BY}={MANAGER}"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Fields of a barmanObjectStore that serve reading backups; the rest configure writing them.
_RESTORE_FIELDS = (
    "destinationPath",
    "endpointURL",
    "endpointCA",
    "serverName",
    "s3Credentials",
    "azureCredentials",
    "googleCredentials",
)


def namespace_name(sandbox_id: str) -> str:
    name = f"drill-{sandbox_id}"
    if not _NAME_RE.match(name):
        raise InvalidInputError(f"sandbox id {sandbox_id!r} does not make a namespace name")
    return name


def labels(*, drill_id: str, sandbox_id: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, DRILL_ID_LABEL: drill_id, SANDBOX_LABEL: sandbox_id}


def metadata(
    name: str, *, namespace: str | None, drill_id: str, sandbox_id: str, expires_at: str
) -> dict[str, Any]:
    """Labels find drill objects; the expiry annotation tells GC when they may go."""
    meta: dict[str, Any] = {
        "name": name,
        "labels": labels(drill_id=drill_id, sandbox_id=sandbox_id),
        "annotations": {EXPIRES_ANNOTATION: expires_at},
    }
    if namespace:
        meta["namespace"] = namespace
    return meta


# No sidecar in a drill namespace: an injected proxy holds CloudNativePG's recovery Job open (it
# never exits) and sits between the instance and the operator. `istio-injection=disabled` turns
# off Istio's sidecar injector for the namespace
# (https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/), and
# `istio.io/dataplane-mode=none` keeps ambient mode's ztunnel out
# (https://istio.io/latest/docs/ambient/usage/add-workloads/).
NO_MESH_LABELS = {"istio-injection": "disabled", "istio.io/dataplane-mode": "none"}


def namespace(meta: Mapping[str, Any]) -> dict[str, Any]:
    out = {"apiVersion": "v1", "kind": "Namespace", "metadata": dict(meta)}
    out["metadata"]["labels"] = {**NO_MESH_LABELS, **dict(meta.get("labels") or {})}
    return out


def _block(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def network_policy(
    meta: Mapping[str, Any],
    *,
    config: SandboxConfig,
    api_server: Sequence[str] = (),
    api_port: int | None = None,
) -> dict[str, Any]:
    """Deny egress except DNS, the namespace itself, the API server (``api_server``: its
    endpoint networks, on ``config.api_server.port``) and ``config.egress`` (object store);
    admit ingress only from the drill's worker namespace, the namespace itself and the
    CloudNativePG operator (which polls each instance's status port)."""

    def from_namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    dns_ports = [
        {"protocol": proto, "port": port} for port in config.dns.ports for proto in ("UDP", "TCP")
    ]
    dns = {
        "to": [{"namespaceSelector": {}}, *(_block(c) for c in config.dns.cidrs)],
        "ports": dns_ports,
    }
    egress: list[dict[str, Any]] = [{"to": [{"podSelector": {}}]}, dns]
    api_peers = [_block(c) for c in api_server]
    if config.api_server.namespace:
        api_peers.append(from_namespace(config.api_server.namespace))
    if api_peers:
        egress.append(
            {
                "to": api_peers,
                "ports": [{"protocol": "TCP", "port": api_port or config.api_server.port}],
            }
        )
    for rule in config.egress:
        entry: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
        if rule.ports:
            entry["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
        egress.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {**dict(meta), "name": "drill-isolation"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        from_namespace(config.worker_namespace),
                        from_namespace(config.operator_namespace),
                    ]
                }
            ],
            "egress": egress,
        },
    }


def _store_for_restore(store: Mapping[str, Any], server_name: str) -> dict[str, Any]:
    kept = {k: copy.deepcopy(store[k]) for k in _RESTORE_FIELDS if k in store}
    kept.setdefault("serverName", server_name)
    for section, fields in (
        ("wal", ("maxParallel", "restoreAdditionalCommandArgs")),
        ("data", ("jobs", "restoreAdditionalCommandArgs")),
    ):
        part = {k: store[section][k] for k in fields if k in (store.get(section) or {})}
        if part:
            kept[section] = part
    return kept


def _archiver_plugin(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for plugin in spec.get("plugins") or []:
        if plugin.get("isWALArchiver") or plugin.get("name") == BARMAN_PLUGIN:
            return plugin
    return None


_ORIGIN_TO_STORE = (
    ("destination_path", "destinationPath"),
    ("endpoint_url", "endpointURL"),
    ("endpoint_ca", "endpointCA"),
    ("s3_credentials", "s3Credentials"),
    ("azure_credentials", "azureCredentials"),
    ("google_credentials", "googleCredentials"),
)
_CREDENTIALS = ("s3Credentials", "azureCredentials", "googleCredentials")


def _store_from_origin(
    origin: Mapping[str, Any], current: Mapping[str, Any] | None, server_name: str
) -> dict[str, Any]:
    """A barmanObjectStore that reads the backup where its own status says it was written; what
    the status lacks (restore tuning, IAM-inherited credentials) comes from the current store."""
    store = _store_for_restore(current or {}, server_name) if current else {}
    if origin.get("destination_path") and origin.get("destination_path") != store.get(
        "destinationPath"
    ):
        # Another bucket or folder: the current credentials and endpoint may not apply there.
        for key in ("endpointURL", "endpointCA", *_CREDENTIALS):
            store.pop(key, None)
    for key, field in _ORIGIN_TO_STORE:
        if origin.get(key) not in (None, "", {}):
            if field in _CREDENTIALS:
                for other in _CREDENTIALS:
                    store.pop(other, None)
            store[field] = copy.deepcopy(origin[key])
    store["serverName"] = origin.get("server_name") or store.get("serverName") or server_name
    if not store.get("destinationPath"):
        raise InvalidInputError(
            "the chosen Backup's status has no destinationPath and the source cluster has no "
            "barmanObjectStore: nothing says where the backup is; choose another backup",
            code="BACKUP_UNVERIFIABLE",
        )
    if not any(store.get(k) for k in _CREDENTIALS):
        raise InvalidInputError(
            f"no object-store credentials for {store['destinationPath']}: neither the chosen "
            "Backup's status nor the source cluster's barmanObjectStore has s3Credentials, "
            "azureCredentials or googleCredentials; set sandbox.recovery_credentials",
            code="BACKUP_UNVERIFIABLE",
        )
    return store


def recovery_source(
    source: Mapping[str, Any], origin: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``externalClusters`` entry that reads the backup (read-only).

    ``origin`` is the chosen Backup's own status (``backup.origin`` of a cnpg coordinate): its
    method, serverName, destinationPath, endpoint and credentials win over the source cluster's
    current settings, which may have moved since (a serverName change, a bucket move, a migration
    to the barman-cloud plugin). Without it (an older coordinate) the current settings are used.
    """
    spec = source.get("spec") or {}
    name = source["metadata"]["name"]
    store = (spec.get("backup") or {}).get("barmanObjectStore")
    plugin = _archiver_plugin(spec)
    method = (origin or {}).get("method")
    if origin and method == "barmanObjectStore":
        return {
            "name": RECOVERY_SOURCE,
            "barmanObjectStore": _store_from_origin(origin, store, name),
        }
    if origin and method == "plugin":
        wanted = (origin.get("plugin") or {}).get("name") or (plugin or {}).get("name")
        if not wanted:
            raise InvalidInputError(
                f"the chosen Backup of {name} was taken by a plugin it does not name, and the "
                "cluster has no WAL-archiver plugin now; choose another backup",
                code="BACKUP_UNVERIFIABLE",
            )
        params = dict((plugin or {}).get("parameters") or {}) if plugin else {}
        if plugin and plugin.get("name") != wanted:
            params = {}
        params.update((origin.get("plugin") or {}).get("parameters") or {})
        params["serverName"] = origin.get("server_name") or params.get("serverName") or name
        return {
            "name": RECOVERY_SOURCE,
            "plugin": {
                "name": wanted,
                "enabled": True,
                "isWALArchiver": False,
                "parameters": params,
            },
        }
    if store:
        return {"name": RECOVERY_SOURCE, "barmanObjectStore": _store_for_restore(store, name)}
    if plugin:
        params = dict(plugin.get("parameters") or {})
        params.setdefault("serverName", name)
        return {
            "name": RECOVERY_SOURCE,
            "plugin": {
                "name": plugin["name"],
                "enabled": True,
                "isWALArchiver": False,
                "parameters": params,
            },
        }
    raise InvalidInputError(
        f"cluster {name} has neither spec.backup.barmanObjectStore nor a WAL-archiver plugin: it "
        "has no object-store backups to restore from; configure backups on it first",
        code="BACKUP_UNVERIFIABLE",
    )


def recovery_target(coordinate: Mapping[str, Any]) -> dict[str, Any]:
    """``recoveryTarget`` from a cnpg coordinate: the backup, and the time when one is set."""
    backup = coordinate.get("backup") or {}
    barman_id = backup.get("barman_id")
    if not isinstance(barman_id, str) or not re.fullmatch(r"[0-9A-Za-z_.:-]{1,64}", barman_id):
        raise InvalidInputError(
            f"coordinate backup.barman_id {barman_id!r} is not a backup id: the coordinate must "
            "come from drillkit's cnpg catalog selection"
        )
    target: dict[str, Any] = {"backupID": barman_id}
    requested = (coordinate.get("target") or {}).get("requested")
    if requested:
        # Only a timestamp's shape reaches the server's recovery settings.
        target["targetTime"] = isoformat(parse_target_time(str(requested)))
    return target


OWNER_SECRET = f"{CLUSTER_NAME}-drill-owner"
SUPERUSER_SECRET = f"{CLUSTER_NAME}-drill-superuser"
# Set on every recovery Cluster, whatever the source says (see cnpg_cluster).
SEALED_PARAMETERS = {"max_logical_replication_workers": "0"}
CA_SECRET = f"{CLUSTER_NAME}-ca"  # CloudNativePG's generated CA: ca.crt signs the server cert


def source_database(source: Mapping[str, Any] | None, config: SandboxConfig) -> tuple[str, str]:
    """``(database, owner)`` of the restored cluster: the drill's setting, else what the source
    was bootstrapped with (initdb, recovery or pg_basebackup), else CloudNativePG's ``app``.

    Recovery must name the database the data holds: for any other name CloudNativePG creates a
    new, empty database after recovery and the checks would read that.
    """
    bootstrap = ((source or {}).get("spec") or {}).get("bootstrap") or {}
    found: Mapping[str, Any] = {}
    for method in ("initdb", "recovery", "pg_basebackup"):
        if isinstance(bootstrap.get(method), Mapping):
            found = bootstrap[method]
            break
    database = config.database or found.get("database") or "app"
    owner = config.user or found.get("owner") or database
    return str(database), str(owner)


def credential_secret(meta: Mapping[str, Any], name: str, username: str) -> dict[str, Any]:
    """A drill-owned ``kubernetes.io/basic-auth`` Secret with a fresh random password: the
    recovery Cluster's owner (``bootstrap.recovery.secret``) or superuser (``superuserSecret``).
    The password is only ever in this Secret, read at check time (never in XCom)."""
    import secrets as random

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**dict(meta), "name": name},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": username, "password": random.token_urlsafe(24)},
    }


def image_major(image: str) -> int | None:
    """The PostgreSQL major of a CloudNativePG operand image's tag (``postgresql:17.2`` -> 17)."""
    match = re.search(r":(\d+)(?:[.\-][^/]*)?$", image.split("@", 1)[0])
    return int(match.group(1)) if match else None


def _image(
    spec: Mapping[str, Any], *, major: int | None, config: SandboxConfig, resolved: str | None
) -> dict[str, Any]:
    """imageName or imageCatalogRef for the recovery Cluster, for the backup's major version.

    The drill's ``image_name`` wins. A namespaced ImageCatalog does not exist in the drill
    namespace: the sandbox resolves it in the source namespace (``resolved``). A
    ClusterImageCatalog is cluster-wide: the ref is kept with the backup's major.
    """
    if config.image_name:
        return {"imageName": config.image_name}
    if resolved:
        return {"imageName": resolved}
    ref = spec.get("imageCatalogRef")
    if ref:
        out = copy.deepcopy(ref)
        if major is not None:
            out["major"] = major
        return {"imageCatalogRef": out}
    image = spec.get("imageName")
    if not image:
        return {}
    found = image_major(image)
    if major is not None and found is not None and found != major:
        raise InvalidInputError(
            f"the chosen backup was taken with PostgreSQL {major} but the source cluster now "
            f"runs {image} (PostgreSQL {found}); a backup restores only with its own major: set "
            f"the sandbox's image_name to a PostgreSQL {major} image",
            code="SANDBOX_IMAGE_MAJOR_MISMATCH",
        )
    return {"imageName": image}


def cnpg_cluster(
    meta: Mapping[str, Any],
    *,
    source: Mapping[str, Any],
    coordinate: Mapping[str, Any],
    config: SandboxConfig,
    catalog_image: str | None = None,
) -> dict[str, Any]:
    """A one-instance Cluster bootstrapped by recovery from the chosen backup.

    The recovery source, method and image major come from the Backup's own status
    (``coordinate.backup.origin``). Copied from the source: what the data needs to start
    (PostgreSQL parameters and preloaded libraries, storage class and size, tablespaces, which
    CloudNativePG requires on recovery) and ``serviceAccountTemplate`` (workload identity to
    read the object store). Never copied: backup, plugins, replica, managed roles,
    externalClusters, bootstrap, certificates and secrets.
    """
    spec = source.get("spec") or {}
    origin = (coordinate.get("backup") or {}).get("origin") or None
    database, owner = source_database(source, config)
    storage = dict(spec.get("storage") or {})
    storage_spec: dict[str, Any] = {"size": config.storage_size or storage.get("size") or "1Gi"}
    storage_class = config.storage_class or storage.get("storageClass")
    if storage_class:
        storage_spec["storageClass"] = storage_class
    cluster_spec: dict[str, Any] = {
        "instances": 1,
        "storage": storage_spec,
        "bootstrap": {
            "recovery": {
                "source": RECOVERY_SOURCE,
                "database": database,
                "owner": owner,
                "secret": {"name": OWNER_SECRET},
                "recoveryTarget": recovery_target(coordinate),
            }
        },
        # Superuser for the integrity checks' amcheck and for creating the sealed check role;
        # only in this drill namespace, with a drill-made password.
        "enableSuperuserAccess": True,
        "superuserSecret": {"name": SUPERUSER_SECRET},
        "externalClusters": [recovery_source(source, origin)],
    }
    major = (origin or {}).get("major_version")
    cluster_spec.update(
        _image(
            spec,
            major=major if isinstance(major, int) else None,
            config=config,
            resolved=catalog_image,
        )
    )
    for key in ("tablespaces", "serviceAccountTemplate"):
        if spec.get(key):
            cluster_spec[key] = copy.deepcopy(spec[key])
    postgresql = spec.get("postgresql") or {}
    copied = {
        k: copy.deepcopy(postgresql[k])
        for k in ("parameters", "shared_preload_libraries")
        if postgresql.get(k)
    }
    # A restored subscription must not start applying (and advancing production's slot) before
    # the smoke task seals the database: no logical replication worker may run in the sandbox.
    copied["parameters"] = {**copied.get("parameters", {}), **SEALED_PARAMETERS}
    cluster_spec["postgresql"] = copied
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {**dict(meta), "name": CLUSTER_NAME},
        "spec": cluster_spec,
    }


def secret_refs(store: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a barmanObjectStore (or ObjectStore configuration) refers to."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            # A SecretKeySelector: {name, key} (and optionally "optional").
            if (
                isinstance(node.get("name"), str)
                and isinstance(node.get("key"), str)
                and set(node) <= {"name", "key", "optional"}
            ):
                names.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(store)
    return names


def renamed_secret_refs(node: Any, name: str) -> Any:
    """``node`` with every SecretKeySelector pointing at Secret ``name`` (same keys): the drill's
    read-only ``recovery_credentials`` in place of production's."""
    if isinstance(node, Mapping):
        if (
            isinstance(node.get("name"), str)
            and isinstance(node.get("key"), str)
            and set(node) <= {"name", "key", "optional"}
        ):
            return {**dict(node), "name": name}
        return {k: renamed_secret_refs(v, name) for k, v in node.items()}
    if isinstance(node, list):
        return [renamed_secret_refs(v, name) for v in node]
    return node


def copied_secret(secret: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """``secret`` for the drill namespace: its data and type, the drill's metadata."""
    out = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**dict(meta), "name": secret["metadata"]["name"]},
        "type": secret.get("type", "Opaque"),
    }
    if secret.get("data"):
        out["data"] = dict(secret["data"])
    return out


def templated(obj: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """Substitute ``${namespace}``, ``${drill_id}``, ``${sandbox_id}`` in every string."""
    from string import Template

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return Template(node).safe_substitute(values)
        if isinstance(node, Mapping):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(obj)
