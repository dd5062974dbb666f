"""Pure builders of the sandbox's objects: drill namespace, NetworkPolicy, CloudNativePG Cluster.

The recovery Cluster reads production's backups and never gets production's ``backup`` or
``plugins`` settings: a restored server that archived would write into production's object store.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
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


def namespace(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": dict(meta)}


def network_policy(meta: Mapping[str, Any], *, config: SandboxConfig) -> dict[str, Any]:
    """Deny egress except DNS, the namespace itself and ``config.egress`` (object store, API
    server); admit ingress only from the drill's worker namespace, the namespace itself and the
    CloudNativePG operator (which polls each instance's status port)."""

    def from_namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    dns = {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress: list[dict[str, Any]] = [{"to": [{"podSelector": {}}]}, dns]
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


def recovery_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """The ``externalClusters`` entry that reads the source cluster's backups (read-only)."""
    spec = source.get("spec") or {}
    name = source["metadata"]["name"]
    store = (spec.get("backup") or {}).get("barmanObjectStore")
    if store:
        return {"name": RECOVERY_SOURCE, "barmanObjectStore": _store_for_restore(store, name)}
    plugin = _archiver_plugin(spec)
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


def cnpg_cluster(
    meta: Mapping[str, Any],
    *,
    source: Mapping[str, Any],
    coordinate: Mapping[str, Any],
    config: SandboxConfig,
) -> dict[str, Any]:
    """A one-instance Cluster bootstrapped by recovery from ``source``'s backups.

    Copied from the source: what the data needs to start (image, PostgreSQL parameters and
    preloaded libraries, storage class and size). Never copied: backup, plugins, replica,
    managed roles, externalClusters, bootstrap, certificates and secrets.
    """
    spec = source.get("spec") or {}
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
                "database": config.database,
                "owner": config.user,
                "recoveryTarget": recovery_target(coordinate),
            }
        },
        "externalClusters": [recovery_source(source)],
    }
    if config.image_name:
        cluster_spec["imageName"] = config.image_name
    elif spec.get("imageCatalogRef"):
        cluster_spec["imageCatalogRef"] = copy.deepcopy(spec["imageCatalogRef"])
    elif spec.get("imageName"):
        cluster_spec["imageName"] = spec["imageName"]
    postgresql = spec.get("postgresql") or {}
    copied = {
        k: copy.deepcopy(postgresql[k])
        for k in ("parameters", "shared_preload_libraries")
        if postgresql.get(k)
    }
    if copied:
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
            if set(node) == {"name", "key"} and isinstance(node.get("name"), str):
                names.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(store)
    return names


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
