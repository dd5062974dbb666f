"""Sandbox ``kind: kubernetes``: a drill namespace holding a CloudNativePG recovery Cluster.

``provision`` applies the namespace, its NetworkPolicy, copies of the object-store credentials and
the Cluster, then returns at once: CloudNativePG restores in the background and the readiness
sensor (deferrable) waits for the Cluster's status, and measures the restore time once it is ready
(``cluster_readiness``). Endpoints are read from the Services created.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from drillkit.exceptions import DrillError, InvalidInputError, SandboxError, TransientDrillError
from drillkit.k8s import objects
from drillkit.k8s.archiving import check_archive_reaches
from drillkit.k8s.client import Kube
from drillkit.k8s.config import SandboxConfig, parse_sandbox
from drillkit.k8s.kinds import (
    CNPG_CLUSTER,
    ENDPOINT_SLICE,
    IMAGE_CATALOG,
    JOB,
    NAMESPACE,
    NETWORK_POLICY,
    OBJECT_STORE,
    POD,
    SECRET,
    SERVICE,
    kind_of,
)
from drillkit.sandbox.base import SCHEMA
from drillkit.timeutil import isoformat, parse_iso, utcnow

HEALTHY = "Cluster in healthy state"
READY_CONDITION = "Ready"
# CloudNativePG labels the Jobs of a Cluster with cnpg.io/cluster and cnpg.io/jobRole; recovery
# from an object store runs as the "full-recovery" Job (pkg/specs/jobs.go, JobRoleLabelName).
JOB_SELECTOR = "cnpg.io/cluster={cluster},cnpg.io/jobRole=full-recovery"
TERMINATION_WAIT = 120.0  # seconds a re-provision waits for its namespace's previous deletion
# Seconds provisioning may wait for a working archive to pass a recent target (a scheduled drill's
# logical date is about now): CloudNativePG's default archive_timeout (5min) plus the upload.
ARCHIVE_WAIT = 420.0
Say = Callable[[str], None]


class KubernetesSandboxBackend:
    """Sandboxes as ``drill-<sandbox id>`` namespaces; implements the SandboxBackend protocol."""

    kind = "kubernetes"

    def __init__(
        self,
        *,
        kube: Kube,
        config: SandboxConfig | Mapping[str, Any],
        say: Say | None = None,
        termination_wait: float = TERMINATION_WAIT,
        poll_interval: float = 1.0,
        archive_wait: float = ARCHIVE_WAIT,
        upload_allowance: float = 60.0,
    ) -> None:
        self.kube = kube
        self.config = config if isinstance(config, SandboxConfig) else parse_sandbox(config)
        self.say = say or (lambda _msg: None)
        self.termination_wait = termination_wait
        self.poll_interval = poll_interval
        self.archive_wait = archive_wait
        self.upload_allowance = upload_allowance

    def _record(
        self,
        coordinate: Mapping[str, Any],
        *,
        drill_id: str,
        sandbox_id: str,
        ttl: timedelta,
        source: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        created = utcnow()
        namespace = objects.namespace_name(sandbox_id)
        return {
            "schema": SCHEMA,
            "backend": self.kind,
            "id": sandbox_id,
            "drill_id": drill_id,
            "namespace": namespace,
            "cluster": objects.CLUSTER_NAME,
            "endpoints": planned_endpoints(namespace, self.config, source),
            # Secret names only: checks read the values through the API at run time.
            "credentials": {
                "owner_secret": objects.OWNER_SECRET,
                "superuser_secret": objects.SUPERUSER_SECRET,
                "ca_secret": objects.CA_SECRET,
            },
            "endpoint_mode": self.config.endpoint,
            "access": self.config.access,  # how data checks reach the database (k8s.access)
            "created_at": isoformat(created),
            "ttl_seconds": ttl.total_seconds(),
            "expires_at": isoformat(created + ttl),
            "backup_id": coordinate.get("backup_id"),
            # CloudNativePG restores after provision returns: the readiness sensor measures it
            # (cluster_readiness) and the gate and report merge its measurement into this record.
            "restore_seconds": None,
            "achieved_recovery_point": None,
        }

    def plan(
        self, coordinate: Mapping[str, Any], *, drill_id: str, sandbox_id: str, ttl: timedelta
    ) -> dict[str, Any]:
        """The record a dry run reports: nothing is created."""
        record = self._record(coordinate, drill_id=drill_id, sandbox_id=sandbox_id, ttl=ttl)
        return {**record, "dry_run": True}

    def provision(
        self,
        coordinate: dict[str, Any],
        *,
        drill_id: str,
        name: str,
        ttl: timedelta,
        sandbox_id: str | None = None,
    ) -> dict[str, Any]:
        from drillkit.sandbox.base import new_sandbox_id

        catalog = coordinate.get("catalog") or {}
        if catalog.get("kind") != "cnpg":
            raise InvalidInputError(
                "a kubernetes sandbox restores from a CloudNativePG cluster's backups: set the "
                "drill spec's catalog to {kind: cnpg, cluster: ..., namespace: ...}"
            )
        sandbox_id = sandbox_id or new_sandbox_id(name)
        source = self.kube.get(CNPG_CLUSTER, catalog["cluster"], catalog["namespace"])
        if source is None:
            raise SandboxError(
                f"source cluster {catalog['cluster']} is gone from namespace "
                f"{catalog['namespace']}; nothing to restore from",
                code="SANDBOX_SOURCE_MISSING",
            )
        requested = (coordinate.get("target") or {}).get("requested")
        target = parse_iso(requested) if requested else None
        # Before anything is created: a target the archive has not passed fails now, not at the
        # RTO deadline (PostgreSQL would stop with "recovery ended before configured recovery
        # target was reached" and the Cluster would never become healthy).
        archive = self._archive_check(source, target)
        self.say(f"archive check: {archive['detail']}")
        record = self._record(
            coordinate, drill_id=drill_id, sandbox_id=sandbox_id, ttl=ttl, source=source
        )
        record["archive_check"] = archive
        namespace = record["namespace"]
        self._await_termination(namespace)

        def meta(obj_name: str, *, in_namespace: bool = True) -> dict[str, Any]:
            return objects.metadata(
                obj_name,
                namespace=namespace if in_namespace else None,
                drill_id=drill_id,
                sandbox_id=sandbox_id,
                expires_at=record["expires_at"],
            )

        applied: list[str] = []
        try:
            # Namespace first: a crash from here on leaves something GC finds by label.
            self._apply(NAMESPACE, objects.namespace(meta(namespace, in_namespace=False)), applied)
            cidrs, port = self._api_server()
            policy = objects.network_policy(
                meta(""), config=self.config, api_server=cidrs, api_port=port
            )
            self._apply(NETWORK_POLICY, policy, applied)
            cluster = objects.cnpg_cluster(
                meta(""),
                source=source,
                coordinate=coordinate,
                config=self.config,
                catalog_image=self._catalog_image(source, coordinate),
            )
            self._copy_credentials(cluster, source, meta, applied, coordinate)
            recovery = cluster["spec"]["bootstrap"]["recovery"]
            for secret_name, username in (
                (objects.OWNER_SECRET, recovery["owner"]),
                (objects.SUPERUSER_SECRET, "postgres"),
            ):
                self._create_once(
                    SECRET, objects.credential_secret(meta(""), secret_name, username), applied
                )
            self._apply(CNPG_CLUSTER, cluster, applied)
            values = {"namespace": namespace, "drill_id": drill_id, "sandbox_id": sandbox_id}
            for manifest in self.config.manifests:
                obj = objects.templated(manifest, values)
                obj["metadata"] = _merged_meta(obj.get("metadata") or {}, meta)
                self._apply(kind_of(obj), obj, applied)
        except BaseException:
            self.say(f"provisioning failed: deleting namespace {namespace}")
            self.kube.delete(NAMESPACE, namespace)
            raise
        self.say(f"sandbox {sandbox_id}: applied {', '.join(applied)}")
        return {**record, "objects": applied}

    def _archive_check(self, source: dict[str, Any], target: datetime | None) -> dict[str, Any]:
        """check_archive_reaches, waiting (up to ``archive_wait``) when archiving works and the
        target is only too recent: the next forced WAL switch will archive it. Re-reads the
        source's condition after the wait: it may have failed meanwhile."""
        from drillkit.exceptions import BackupError

        allowance = timedelta(seconds=self.upload_allowance)
        deadline = time.monotonic() + self.archive_wait
        while True:
            try:
                return check_archive_reaches(
                    source, target=target, now=utcnow(), allowance=allowance
                )
            except BackupError as exc:
                by = _timestamp(exc.details.get("archived_by"))
                if by is None:
                    raise
                wait = (by - utcnow()).total_seconds()
                if time.monotonic() + wait > deadline:
                    raise
                self.say(f"waiting {wait:.0f} s for the archive to pass the target")
                time.sleep(max(wait, 0.0) + 0.05)
                fresh = self.kube.get(
                    CNPG_CLUSTER, source["metadata"]["name"], source["metadata"]["namespace"]
                )
                source = fresh or source

    def _api_server(self) -> tuple[tuple[str, ...], int | None]:
        """The API server's endpoint networks and port for the NetworkPolicy: configured, or read
        from the EndpointSlices of Service ``default/kubernetes`` (CloudNativePG's instance
        manager talks to the API; NetworkPolicy sees the endpoint, not the ClusterIP)."""
        access = self.config.api_server
        if access.cidrs:
            return access.cidrs, None
        slices = self.kube.list(
            ENDPOINT_SLICE, namespace="default", selector="kubernetes.io/service-name=kubernetes"
        )
        cidrs: list[str] = []
        port = None
        for item in slices:
            for endpoint in item.get("endpoints") or []:
                for address in endpoint.get("addresses") or []:
                    cidrs.append(f"{address}/{128 if ':' in str(address) else 32}")
            for entry in item.get("ports") or []:
                if entry.get("port") and (port is None or entry.get("name") == "https"):
                    port = int(entry["port"])
        if not cidrs and not access.namespace:
            raise SandboxError(
                "cannot find the Kubernetes API server's endpoints (no EndpointSlice of Service "
                "default/kubernetes): set sandbox.api_server.cidrs (and port) so the drill "
                "namespace's NetworkPolicy lets CloudNativePG's instance manager reach it",
                code="K8S_API_SERVER_UNKNOWN",
            )
        return tuple(sorted(set(cidrs))), port

    def _await_termination(self, namespace: str) -> None:
        """Wait for an earlier deletion of ``namespace`` to finish: nothing can be created in a
        Terminating namespace (403 from the NamespaceLifecycle admission plugin). Still
        terminating after ``termination_wait``: a transient error, the task's retry waits more."""
        deadline = time.monotonic() + self.termination_wait
        while self.kube.terminating(NAMESPACE, namespace):
            if time.monotonic() >= deadline:
                raise TransientDrillError(
                    f"namespace {namespace} is still being deleted after "
                    f"{self.termination_wait:.0f} s (an earlier attempt's teardown); the task "
                    "will retry once it is gone",
                    code="K8S_NAMESPACE_TERMINATING",
                )
            self.say(f"namespace {namespace} is terminating: waiting for it to be gone")
            time.sleep(self.poll_interval)

    def _create_once(self, kind: Any, obj: Mapping[str, Any], applied: list[str]) -> None:
        """Create ``obj`` unless it exists: a retried provision keeps the password the Cluster
        was bootstrapped with."""
        try:
            self.kube.create(kind, obj)
            self.say(f"created {kind.describe(obj['metadata']['name'], self._ns(obj))}")
        except DrillError as exc:
            if exc.details.get("status") != 409:
                raise
        applied.append(f"{kind.kind}/{obj['metadata']['name']}")

    @staticmethod
    def _ns(obj: Mapping[str, Any]) -> str | None:
        return obj["metadata"].get("namespace")

    def _apply(self, kind: Any, obj: Mapping[str, Any], applied: list[str]) -> dict[str, Any]:
        stored, action = self.kube.apply(kind, obj)
        applied.append(f"{kind.kind}/{obj['metadata']['name']}")
        self.say(
            f"{action} {kind.describe(obj['metadata']['name'], obj['metadata'].get('namespace'))}"
        )
        return stored

    def _catalog_image(
        self, source: Mapping[str, Any], coordinate: Mapping[str, Any]
    ) -> str | None:
        """The image a namespaced ImageCatalog gives for the backup's major: the catalog is in
        the source namespace, not the drill's, so the recovery Cluster names the image itself."""
        ref = (source.get("spec") or {}).get("imageCatalogRef") or {}
        if self.config.image_name or ref.get("kind") != "ImageCatalog":
            return None
        origin = (coordinate.get("backup") or {}).get("origin") or {}
        major = origin.get("major_version") or ref.get("major")
        namespace = source["metadata"]["namespace"]
        catalog = self.kube.get(IMAGE_CATALOG, str(ref.get("name")), namespace)
        if catalog is None:
            raise SandboxError(
                f"ImageCatalog {ref.get('name')} named by the source cluster is not in namespace "
                f"{namespace}; set the sandbox's image_name",
                code="SANDBOX_SOURCE_MISSING",
            )
        for entry in (catalog.get("spec") or {}).get("images") or []:
            if entry.get("major") == major and entry.get("image"):
                return str(entry["image"])
        raise SandboxError(
            f"ImageCatalog {ref.get('name')} in namespace {namespace} has no image for "
            f"PostgreSQL {major}, the backup's major version; add one or set the sandbox's "
            "image_name",
            code="SANDBOX_IMAGE_MAJOR_MISMATCH",
        )

    def _copy_credentials(
        self,
        cluster: dict[str, Any],
        source: Mapping[str, Any],
        meta: Callable[..., dict[str, Any]],
        applied: list[str],
        coordinate: Mapping[str, Any],
    ) -> None:
        """The recovery source's Secrets (and barman-cloud ObjectStore) in the drill namespace;
        with ``recovery_credentials`` only that Secret, every reference renamed to it."""
        source_namespace = source["metadata"]["namespace"]
        origin = cluster["spec"]["externalClusters"][0]
        swap = self.config.recovery_credentials
        if swap and origin.get("barmanObjectStore"):
            origin["barmanObjectStore"] = objects.renamed_secret_refs(
                origin["barmanObjectStore"], swap
            )
        backup_origin = (coordinate.get("backup") or {}).get("origin") or {}
        refs = objects.secret_refs(origin.get("barmanObjectStore") or {})
        plugin = origin.get("plugin")
        if plugin and plugin.get("parameters", {}).get("barmanObjectName"):
            store_name = plugin["parameters"]["barmanObjectName"]
            store = self.kube.get(OBJECT_STORE, store_name, source_namespace)
            if store is None:
                raise SandboxError(
                    f"ObjectStore {store_name} of the barman-cloud plugin is not in namespace "
                    f"{source_namespace}; the sandbox cannot read the backups without it",
                    code="SANDBOX_SOURCE_MISSING",
                )
            spec = dict(store.get("spec") or {})
            configuration = dict(spec.get("configuration") or {})
            # The bucket and endpoint the backup was written to, from its own status.
            for key, field in (
                ("destination_path", "destinationPath"),
                ("endpoint_url", "endpointURL"),
            ):
                if backup_origin.get(key):
                    configuration[field] = backup_origin[key]
            if swap:
                configuration = objects.renamed_secret_refs(configuration, swap)
            spec["configuration"] = configuration
            copy = {
                "apiVersion": store["apiVersion"],
                "kind": "ObjectStore",
                "metadata": meta(store_name),
                "spec": spec,
            }
            refs |= objects.secret_refs(configuration)
            self._apply(OBJECT_STORE, copy, applied)
        for name in sorted(refs):
            secret = self.kube.get(SECRET, name, source_namespace)
            if secret is None:
                raise SandboxError(
                    f"secret {name} named by the source cluster's object store is not in "
                    f"namespace {source_namespace}",
                    code="SANDBOX_SOURCE_MISSING",
                )
            self._apply(SECRET, objects.copied_secret(secret, meta(name)), applied)

    def teardown(self, sandbox_id: str) -> dict[str, Any]:
        return delete_sandbox(self.kube, sandbox_id)


def delete_sandbox(kube: Kube, sandbox_id: str) -> dict[str, Any]:
    """Delete the drill namespace (and so everything in it); already gone is not an error."""
    namespace = objects.namespace_name(sandbox_id)
    removed = kube.delete(NAMESPACE, namespace)
    return {
        "id": sandbox_id,
        "removed": removed,
        "already_gone": not removed,
        "namespace": namespace,
    }


def _merged_meta(user: Mapping[str, Any], meta: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A user manifest's metadata with the drill's namespace, labels and expiry on top."""
    if not isinstance(user.get("name"), str):
        raise InvalidInputError("every sandbox manifest needs metadata.name")
    drill = meta(user["name"])
    merged = {**dict(user), **drill}
    for key in ("labels", "annotations"):
        merged[key] = {**dict(user.get(key) or {}), **drill[key]}
    return merged


def planned_endpoints(
    namespace: str, config: SandboxConfig, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """CloudNativePG's read-write Service, as it will be named (confirmed by ``endpoints``),
    with the database and owner the recovery restores (the source's bootstrap)."""
    database, owner = objects.source_database(source, config)
    return {
        "postgres": {
            "kind": "postgres",
            "host": f"{objects.CLUSTER_NAME}-rw.{namespace}.svc",
            "port": 5432,
            "user": owner,
            "database": database,
        }
    }


def _address(service: Mapping[str, Any], namespace: str, mode: str) -> str:
    if mode == "cluster_ip":
        ip = (service.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            raise SandboxError(f"Service {service['metadata']['name']} has no cluster IP")
        return str(ip)
    return f"{service['metadata']['name']}.{namespace}.svc"


def _port(service: Mapping[str, Any], preferred: str | None = None) -> int:
    ports = (service.get("spec") or {}).get("ports") or []
    named = [p for p in ports if preferred and p.get("name") == preferred]
    if not (named or ports):
        raise SandboxError(f"Service {service['metadata']['name']} exposes no port")
    return int((named or ports)[0]["port"])


def endpoints(kube: Kube, record: Mapping[str, Any]) -> dict[str, Any]:
    """Endpoints from the Services in the drill namespace: CloudNativePG's ``-rw`` one, and each
    Service annotated ``drillkit.io/endpoint: http|tcp`` (from the spec's manifests)."""
    namespace = str(record["namespace"])
    mode = str(record.get("endpoint_mode", "dns"))
    found: dict[str, Any] = {}
    rw_name = f"{record.get('cluster', objects.CLUSTER_NAME)}-rw"
    planned = (record.get("endpoints") or {}).get("postgres") or {}
    rw = kube.get(SERVICE, rw_name, namespace)
    if rw is None:
        raise SandboxError(
            f"Service {rw_name} is not in namespace {namespace}: CloudNativePG has not created "
            "the read-write service; is the Cluster healthy?",
            code="SANDBOX_UNREACHABLE",
        )
    found["postgres"] = {
        **planned,
        "kind": "postgres",
        "host": _address(rw, namespace, mode),
        "port": _port(rw, "postgres"),
    }
    for service in kube.list(SERVICE, namespace=namespace):
        kind = (service["metadata"].get("annotations") or {}).get(objects.ENDPOINT_ANNOTATION)
        if kind == "tcp":
            found[service["metadata"]["name"]] = {
                "kind": "tcp",
                "host": _address(service, namespace, mode),
                "port": _port(service),
            }
        elif kind == "http":
            found[service["metadata"]["name"]] = {
                "kind": "http",
                "url": f"http://{_address(service, namespace, mode)}:{_port(service)}",
            }
    return found


def _check_ready(
    kube: Kube, record: Mapping[str, Any]
) -> tuple[bool, str, Mapping[str, Any] | None]:
    """``(ready, why, cluster)``: healthy, all instances ready, -rw Service up."""
    namespace = str(record["namespace"])
    name = str(record.get("cluster", objects.CLUSTER_NAME))
    cluster = kube.get(CNPG_CLUSTER, name, namespace)
    if cluster is None:
        return False, f"Cluster {name} is not in namespace {namespace} (deleted?)", None
    status = cluster.get("status") or {}
    phase = status.get("phase") or "no status yet (is the CloudNativePG operator running?)"
    wanted = (cluster.get("spec") or {}).get("instances", 1)
    ready = status.get("readyInstances") or 0
    if phase != HEALTHY or ready < wanted:
        reason = f" ({status['phaseReason']})" if status.get("phaseReason") else ""
        return False, f"Cluster {name}: {phase}{reason}, {ready}/{wanted} instances ready", cluster
    if kube.get(SERVICE, f"{name}-rw", namespace) is None:
        return (
            False,
            f"Cluster {name} is healthy but Service {name}-rw does not exist yet",
            cluster,
        )
    return True, f"Cluster {name}: {phase}, {ready}/{wanted} instances ready", cluster


# What the recovery Job's log says, by the cause it names (matched case-insensitively). Only a
# cause in the backup itself is a FAIL; access to the store is this drill's configuration.
_BACKUP_CAUSES = (
    # CloudNativePG: the store holds no backup matching the target at the Backup's own
    # serverName/destinationPath, so the backup its status describes is not restorable there.
    ("no target backup found", "BACKUP_NOT_IN_STORE"),
    ("no backup found with id", "BACKUP_NOT_IN_STORE"),  # recoveryTarget.backupID not in the store
    ("nosuchbucket", "BACKUP_NOT_IN_STORE"),
    # PostgreSQL: the archive ends before the target.
    ("recovery ended before configured recovery target was reached", "RECOVERY_TARGET_NOT_REACHED"),
)
_ACCESS_CAUSES = (
    # CloudNativePG reading the credentials Secret it was given (a drill's copy, or
    # recovery_credentials) before calling barman-cloud.
    "inside secret",
    "accessdenied",
    "access denied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "expiredtoken",
    "unable to locate credentials",
    "nocredentialserror",
    "could not connect to the endpoint",
    "connect timeout",
    "connection refused",
    "name or service not known",
    "temporary failure in name resolution",
)


def _job_log(kube: Kube, namespace: str, job: str) -> tuple[str | None, str]:
    """``(log, why not)``: the newest pod's log of ``job`` (the Job controller labels its pods
    ``batch.kubernetes.io/job-name``), or None and why it could not be read."""
    try:
        pods = kube.list(POD, namespace=namespace, selector=f"batch.kubernetes.io/job-name={job}")
        if not pods:
            return None, "the Job has no pod left to read its log from"
        newest = max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
        return kube.pod_log(namespace, newest["metadata"]["name"]), ""
    except DrillError as exc:
        return None, f"its log could not be read ({exc}); grant get on pods/log in drill namespaces"


def _classify(log: str) -> str | None:
    lowered = log.lower()
    for needle, code in _BACKUP_CAUSES:
        if needle in lowered:
            return code
    if any(needle in lowered for needle in _ACCESS_CAUSES):
        return "RECOVERY_SOURCE_UNREACHABLE"
    return None


def _log_excerpt(log: str, lines: int = 5) -> str:
    kept = [line.strip() for line in log.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-1500:]


def failed_recovery_job(kube: Kube, namespace: str, cluster: str) -> dict[str, str] | None:
    """``{code, message}`` once the Cluster's full-recovery Job has failed, else None.

    A Job whose pods exhausted ``backoffLimit`` gets the condition ``Failed: "True"`` with a
    reason and message (https://kubernetes.io/docs/concepts/workloads/controllers/job/
    #terminal-job-conditions); CloudNativePG does not retry the recovery after that, so waiting
    longer only spends the RTO. Why it failed is in its pod's log: a cause in the backup is a
    finding (``BACKUP_NOT_IN_STORE``, ``RECOVERY_TARGET_NOT_REACHED``: FAIL); a store this drill
    cannot reach (credentials, network) is ``RECOVERY_SOURCE_UNREACHABLE``, and a cause the log
    does not name (or a log that cannot be read) ``K8S_RECOVERY_JOB_FAILED``: COULD NOT VERIFY,
    never blamed on the backup.
    """
    for job in kube.list(JOB, namespace=namespace, selector=JOB_SELECTOR.format(cluster=cluster)):
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") != "Failed" or cond.get("status") != "True":
                continue
            name = job["metadata"]["name"]
            said = (
                f"CloudNativePG's recovery Job {name} failed ({cond.get('reason')}: "
                f"{cond.get('message')})"
            )
            log, why_not = _job_log(kube, namespace, name)
            if log is None:
                return {
                    "code": "K8S_RECOVERY_JOB_FAILED",
                    "message": f"{said}; {why_not}, so whether the backup is at fault is unknown",
                }
            code = _classify(log) or "K8S_RECOVERY_JOB_FAILED"
            advice = {
                "BACKUP_NOT_IN_STORE": "the object store does not hold the backup the Backup "
                "object describes (at its own serverName and destinationPath)",
                "RECOVERY_TARGET_NOT_REACHED": "the archived WAL ends before the target",
                "RECOVERY_SOURCE_UNREACHABLE": "the recovery could not read the object store: "
                "check the credentials (recovery_credentials) and the drill namespace's egress",
                "K8S_RECOVERY_JOB_FAILED": "its log names no cause drillkit knows; read it "
                f"(kubectl logs -n {namespace} job/{name})",
            }[code]
            return {"code": code, "message": f"{said}: {advice}. Log: {_log_excerpt(log)}"}
    return None


def _timestamp(value: Any) -> datetime | None:
    try:
        return parse_iso(value) if isinstance(value, str) else None
    except ValueError:
        return None


def restore_seconds_from_conditions(cluster: Mapping[str, Any]) -> float | None:
    """Seconds from the Cluster's ``metadata.creationTimestamp`` to the ``lastTransitionTime`` of
    its ``Ready: "True"`` condition, or None when either is missing (or they contradict).

    Both are stamped inside the cluster (the API server, the CloudNativePG operator), never by the
    Airflow worker, so the worker's clock skew does not enter the RTO.
    """
    created = _timestamp((cluster.get("metadata") or {}).get("creationTimestamp"))
    conditions = (cluster.get("status") or {}).get("conditions") or []
    ready_at = next(
        (
            _timestamp(c.get("lastTransitionTime"))
            for c in conditions
            if isinstance(c, Mapping)
            and c.get("type") == READY_CONDITION
            and c.get("status") == "True"
        ),
        None,
    )
    if created is None or ready_at is None or ready_at < created:
        return None
    return (ready_at - created).total_seconds()


def cluster_readiness(
    kube: Kube, record: Mapping[str, Any], *, observed_at: datetime | None = None
) -> dict[str, Any]:
    """``{ready, detail, restore_seconds, restore_seconds_source}``, and ``failed``
    (``{code, message}``, see ``failed_recovery_job``) once CloudNativePG's full-recovery Job
    has failed:
    the wait is over then, not at the RTO deadline. A ready Cluster's restore
    time comes from its own timestamps (``"cluster_conditions"``), else it is the time readiness
    was observed minus the record's ``created_at`` (``"observed"``: the workers' clocks, and late
    by up to one poke interval). Not ready, or no sane measurement: both are None."""
    failed = failed_recovery_job(
        kube, str(record["namespace"]), str(record.get("cluster", objects.CLUSTER_NAME))
    )
    if failed is not None:
        return {
            "ready": False,
            "detail": failed["message"],
            "restore_seconds": None,
            "restore_seconds_source": None,
            "failed": failed,
        }
    ready, why, cluster = _check_ready(kube, record)
    seconds, source = None, None
    if ready and cluster is not None:
        seconds = restore_seconds_from_conditions(cluster)
        created = _timestamp(record.get("created_at"))
        observed = observed_at or utcnow()
        if seconds is not None:
            source = "cluster_conditions"
        elif created is not None and observed >= created:  # else the clocks disagree: no RTO
            seconds, source = round((observed - created).total_seconds(), 3), "observed"
    return {
        "ready": ready,
        "detail": why,
        "restore_seconds": seconds,
        "restore_seconds_source": source,
    }


def keep(kube: Kube, record: Mapping[str, Any], *, ttl: timedelta) -> dict[str, Any]:
    """Keep the namespace for investigation: push its expiry out (GC removes it after)."""
    expires = isoformat(utcnow() + ttl)
    kube.patch(
        NAMESPACE,
        str(record["namespace"]),
        {"metadata": {"annotations": {objects.EXPIRES_ANNOTATION: expires}}},
    )
    return {
        "id": record.get("id"),
        "removed": False,
        "kept_until": expires,
        "namespace": record["namespace"],
    }


def teardown(
    kube: Kube, record: Mapping[str, Any], *, keep_sandbox: bool, keep_ttl: timedelta
) -> dict[str, Any]:
    """Remove the tier's routes always; then delete the namespace, or keep it until ``keep_ttl``."""
    from drillkit.k8s.routes import remove_routes

    sandbox_id = str(record.get("id"))
    if record.get("dry_run"):
        return {"id": sandbox_id, "removed": False, "dry_run": True}
    routes = remove_routes(kube, sandbox_id=sandbox_id)
    result = keep(kube, record, ttl=keep_ttl) if keep_sandbox else delete_sandbox(kube, sandbox_id)
    return {**result, "routes_removed": routes}
