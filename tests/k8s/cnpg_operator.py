"""A CloudNativePG operator stand-in that does the real work: for each recovery Cluster created in a
``drill-*`` namespace it runs the full-recovery Job's restore from the object store the Cluster
names (real barman-cloud tools, real PostgreSQL of the backup's major), then serves the restored
server as the instance pod behind ``<cluster>-rw``, and writes to the API what CloudNativePG writes.

Behaviour and where it comes from (github.com/cloudnative-pg/cloudnative-pg unless said):
- PKI first: Secrets ``<cluster>-ca`` (ca.crt, ca.key) and ``<cluster>-server`` (tls.crt, tls.key,
  type kubernetes.io/tls), SANs of GetClusterAltDNSNames (internal/controller/cluster_pki.go,
  pkg/certs/certs.go, api/v1/cluster_funcs.go); Services ``-rw``/``-r``/``-ro`` on port 5432 named
  ``postgres`` with CloudNativePG's selectors (pkg/specs/services.go).
- Status phase "Setting up primary", reason "Creating primary instance <cluster>-1", targetPrimary
  (internal/controller/cluster_create.go createPrimaryInstance; api/v1/cluster_types.go).
- Job ``<cluster>-1-full-recovery`` labelled as pkg/specs/jobs.go CreatePrimaryJob does; its
  container runs pkg/management/postgres/restore.go Restore (cnpg_instance.py): credentials from
  Secrets in the Cluster's namespace (barman-cloud pkg/credentials/env.go), serverName defaulting
  to the external cluster's name (api/v1 ExternalCluster.GetServerName) or, for the barman-cloud
  plugin, to the Cluster's name (plugin-barman-cloud internal/cnpgi/operator/config/config.go),
  the backup chosen by barman-cloud pkg/catalog/catalog.go FindBackupInfo, the first WAL checked
  (ensureArchiveContainsLastCheckpointRedoWAL), barman-cloud-restore, recovery to the target with
  recovery_target_action=promote, then ConfigureNewInstance (role and database created when the
  backup lacks them). The Job's log is ``logs[namespace]``; a failure ends the Job as the Job
  controller does after backoffLimit (conditions FailureTarget and Failed, reason
  BackoffLimitExceeded: https://kubernetes.io/docs/concepts/workloads/controllers/job/
  #terminal-job-conditions) and the Cluster stays "Setting up primary".
- The instance pod ``<cluster>-1``: PostgreSQL restarted on the restored data (so
  pg_last_xact_replay_timestamp() is NULL, as on CloudNativePG) with TLS (ssl_min_protocol_version
  TLSv1.3), CloudNativePG's pg_hba, on a loopback address of its own (``addresses[namespace]``:
  the Pod IP and the -rw Service's clusterIP) port 5432, its socket in a private directory;
  passwords from superuserSecret (enableSuperuserAccess) and the application Secret
  (internal/management/controller/instance_controller.go refreshCredentialsFromSecret); Pod
  labels of pkg/specs/pods.go plus role/instanceRole primary (pkg/utils/labels_annotations.go
  SetInstanceRole); Cluster status "Cluster in healthy state"
  with a Ready condition (api/v1/cluster_types.go ClusterIsReady).
- Namespace deletion stops that PostgreSQL and removes its data; ``__exit__`` stops everything.

Known differences from real CloudNativePG:
- One Job attempt: a failure is deterministic here, so the Job is marked as the Job controller
  marks it after backoffLimit (6) retries, with ``status.failed`` 1, without the retries.
- restore_command runs barman-cloud-wal-restore itself with the credentials in the postmaster's
  environment (CloudNativePG runs ``/controller/manager wal-restore``, which runs the same tool).
- During the Job the server listens on its private socket only; logs are plain stderr text, not
  CloudNativePG's JSON; the instance archives nowhere (archive_command ``/bin/true``, as
  ``manager wal-archive`` does for a Cluster with no backup configured).
- Only ``-rw``'s clusterIP reaches the instance (``-r``/``-ro`` get addresses that go nowhere).
- Only S3 credentials (Azure/Google: a clear error); only ``bootstrap.recovery.source`` (no
  ``recovery.backup`` or volume snapshots); no streaming_replica client certificate, no replicas,
  no PVCs, no ownerReferences; no empty-WAL-archive check (the drill's Cluster has no backup).
- PKI is created just before the Job, once; no renewal.
- A PostgreSQL build without OpenSSL (the embedded wheel, PostgreSQL 18 here) cannot serve TLS:
  then a relay in this process answers the SSLRequest on :5432 with the same certificate and TLS
  1.3 and passes the stream to the server on :5433 of the same address; pg_hba's hostssl/cert
  lines become comments (that build refuses them) and pg_stat_ssl shows no SSL. A build with
  OpenSSL (e.g. Debian's postgresql-15) serves TLS itself with CloudNativePG's settings.
- The instance's configuration is the subset of CloudNativePG's that matters to a drill (the
  Cluster's parameters, port, socket, hba/ident files, hot_standby, wal_level logical,
  scram-sha-256, TLS); fsync and the rest stay PostgreSQL's defaults.
"""

from __future__ import annotations

import base64
import errno
import os
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cnpg_instance as inst
from cnpg_instance import Instance, RestoreError

CNPG = "postgresql.cnpg.io/v1"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
HEALTHY = "Cluster in healthy state"
SETTING_UP = "Setting up primary"
BACKOFF = "Job has reached the specified backoff limit"
BARMAN_EXIT = {
    1: "Operation error",
    2: "Network error",
    3: "CLI argument parsing error",
    4: "General error",
}  # barman-cloud pkg/command/errors.go


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NamespaceGone(Exception):
    """The drill namespace was deleted while its Cluster was being set up."""


class CnpgOperator:
    """Context manager; a background thread polls the emulator (harness token) every ``poll``
    seconds. ``root``: where data directories go (reachable by the PostgreSQL OS user).

    Attributes: ``logs[namespace]`` (the recovery Job's log lines), ``addresses[namespace]`` (the
    instance's loopback IPv4), ``outcomes[namespace]`` ("healthy" or "failed: <error>"),
    ``instances[namespace]`` (cnpg_instance.Instance).
    """

    def __init__(
        self,
        cluster: Any,
        *,
        root: Path,
        poll: float = 0.2,
        recovery_timeout: float = 600.0,
        octet: int = 77,
    ) -> None:
        self.cluster, self.poll, self.recovery_timeout = cluster, poll, recovery_timeout
        self.root = Path(tempfile.mkdtemp(prefix="cnpg-", dir=root))
        self.root.chmod(0o755)
        self.octet = octet
        self.logs: dict[str, list[str]] = {}
        self._job_pods: dict[str, str] = {}  # namespace -> the recovery Job's pod
        self.addresses: dict[str, str] = {}
        self.outcomes: dict[str, str] = {}
        self.instances: dict[str, Instance] = {}
        self._gone: dict[str, threading.Event] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cnpg-operator")

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> CnpgOperator:
        self._refuse_wildcard_listener()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for event in list(self._gone.values()):
            event.set()
        for worker in list(self._workers.values()):
            worker.join(timeout=120)
        for namespace in list(self.instances):
            self._teardown(namespace)
        shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> list[int]:
        """PIDs of PostgreSQL processes this operator started that are still alive."""
        return inst.processes_for(self.root)

    def _refuse_wildcard_listener(self) -> None:
        """A PostgreSQL bound to 0.0.0.0:5432 holds 5432 on every loopback address: binding
        127.<octet>.255.254:5432 (an address nothing names) fails exactly then."""
        probe = f"127.{self.octet}.255.254"
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((probe, inst.PORT))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeError(
                        f"port {inst.PORT} is taken on every loopback address (a server listens "
                        f"on 0.0.0.0:{inst.PORT} or [::]:{inst.PORT}): the CloudNativePG "
                        "stand-in serves each Cluster on 127.x.y.1:5432; stop that server or "
                        "make it listen on one address"
                    ) from exc
                raise

    def _allocate(self, namespace: str) -> str:
        """A loopback address whose port 5432 is free (other runs on this machine use some)."""
        start = random.randrange(1, 250)
        with self._lock:
            taken = set(self.addresses.values())
            for step in range(250):
                address = f"127.{self.octet}.{(start + step) % 250 + 1}.1"
                if address in taken:
                    continue
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((address, inst.PORT))
                    except OSError:
                        continue
                self.addresses[namespace] = address
                return address
        raise RuntimeError(f"no free 127.{self.octet}.x.1:{inst.PORT} for the stand-in")

    # --- the control loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self._reconcile_all()
            except Exception as exc:
                self.logs.setdefault("_operator", []).append(f"reconcile error: {exc!r}")

    def _reconcile_all(self) -> None:
        for obj in self.cluster.listed(CNPG, "clusters"):
            namespace = obj["metadata"]["namespace"]
            recovery = ((obj.get("spec") or {}).get("bootstrap") or {}).get("recovery")
            if not namespace.startswith("drill-") or not recovery or namespace in self._workers:
                continue
            if self._namespace_gone(namespace):  # a Cluster left in a Terminating namespace
                continue
            self._gone[namespace] = threading.Event()
            worker = threading.Thread(
                target=self._bootstrap, args=(obj,), daemon=True, name=f"cnpg-{namespace}"
            )
            self._workers[namespace] = worker
            worker.start()
        for namespace, event in list(self._gone.items()):
            if not event.is_set():
                stored = self.cluster.stored("v1", "namespaces", namespace)
                if stored is None or stored["metadata"].get("deletionTimestamp"):
                    event.set()
            if event.is_set() and not self._workers[namespace].is_alive():
                self._teardown(namespace)
                # A namespace made again (a retried drill) holds a new Cluster to bootstrap.
                del self._workers[namespace], self._gone[namespace]

    def _teardown(self, namespace: str) -> None:
        """The namespace's PVC and pod are gone: stop PostgreSQL and remove its data."""
        instance = self.instances.pop(namespace, None)
        if instance is not None:
            instance.remove()
            self._say(namespace, "instance stopped and its data removed (namespace deleted)")
        with self._lock:
            self.addresses.pop(namespace, None)

    # --- API helpers ---------------------------------------------------------------------------

    def _say(self, namespace: str, line: str) -> None:
        self.logs.setdefault(namespace, []).append(line)
        pod = self._job_pods.get(namespace)
        if pod is not None:  # what `kubectl logs` of the Job's pod shows (GET .../pods/x/log)
            self.cluster.emulator.store.pod_logs[(namespace, pod)] = "\n".join(self.logs[namespace])

    def _check(self, namespace: str) -> None:
        if self._gone[namespace].is_set() or self._stop.is_set():
            raise NamespaceGone(namespace)

    def _write(self, method: str, path: str, body: Any, namespace: str, **kw: Any) -> Any:
        code, answer = self.cluster.request(method, path, body, **kw)
        if code in (403, 404) and self._namespace_gone(namespace):
            raise NamespaceGone(namespace)
        if code not in (200, 201):
            raise RuntimeError(f"{method} {path}: {code} {answer}")
        return answer

    def _namespace_gone(self, namespace: str) -> bool:
        stored = self.cluster.stored("v1", "namespaces", namespace)
        return stored is None or bool(stored["metadata"].get("deletionTimestamp"))

    def _create(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        plural = {"Secret": "secrets", "Service": "services", "Job": "jobs", "Pod": "pods"}
        path = self.cluster.path(obj["apiVersion"], plural[obj["kind"]], None, namespace)
        return self._write("POST", path, obj, namespace)

    def _status(self, api_version: str, plural: str, name: str, namespace: str, status: dict):
        path = self.cluster.path(api_version, plural, name, namespace) + "/status"
        return self._write(
            "PATCH",
            path,
            {"status": status},
            namespace,
            content_type="application/merge-patch+json",
        )

    def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.stored("v1", "secrets", name, namespace)

    def _secret_value(self, namespace: str) -> Callable[[str, str], bytes]:
        """barman-cloud pkg/credentials/env.go extractValueFromSecret (Cluster's namespace)."""

        def value(name: str, key: str) -> bytes:
            secret = self._secret(namespace, name)
            if secret is None:
                raise RestoreError(f'while getting secret {name}: secrets "{name}" not found')
            data = secret.get("data") or {}
            if key not in data:
                raise RestoreError(f"missing key {key}, inside secret {name}")
            return base64.b64decode(data[key])

        return value

    # --- one Cluster ---------------------------------------------------------------------------

    def _bootstrap(self, obj: dict[str, Any]) -> None:
        namespace = obj["metadata"]["namespace"]
        instance = Instance(root=self.root / namespace, log=lambda m: self._say(namespace, m))
        self.instances[namespace] = instance
        try:
            self._setup(obj, instance)
        except NamespaceGone:
            self._say(namespace, "namespace deleted while the cluster was being set up")
        except Exception as exc:
            self._say(namespace, f"operator stand-in error: {exc!r}")
            self.outcomes[namespace] = f"error: {exc!r}"
        finally:
            if self._gone[namespace].is_set() or self._stop.is_set():
                self._teardown(namespace)

    def _setup(self, obj: dict[str, Any], instance: Instance) -> None:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        pod = f"{name}-1"  # pkg/specs GetInstanceName(cluster, 1)
        address = self._allocate(namespace)
        instance.prepare()
        ca_cert, ca_key, server_cert, server_key = self._pki(obj)
        for suffix, role in (("-rw", "primary"), ("-r", None), ("-ro", "replica")):
            self._create(self._service(obj, suffix, role, address), namespace)
        self._status(
            CNPG,
            "clusters",
            name,
            namespace,
            {
                "phase": SETTING_UP,
                "phaseReason": f"Creating primary instance {pod}",
                "targetPrimary": pod,
                "latestGeneratedNode": 1,
                "instances": 0,
                "readyInstances": 0,
                "conditions": [self._ready(False)],
            },
        )
        job = f"{pod}-full-recovery"
        created = self._create(self._job(obj, job), namespace)
        self._status("batch/v1", "jobs", job, namespace, {"startTime": _now(), "active": 1})
        job_pod = self._job_pod(created)
        self._create(job_pod, namespace)
        self._job_pods[namespace] = job_pod["metadata"]["name"]
        self._say(namespace, f"Recovering from external cluster into {name} (Job {job})")
        try:
            self._restore(obj, instance)
        except RestoreError as exc:
            instance.stop()
            self._say(namespace, f"Error while restoring a backup: {exc}")
            self._say(namespace, f"while restoring cluster: {exc}")
            self.outcomes[namespace] = f"failed: {exc}"
            self._finish_job(job, namespace, succeeded=False)
            return
        self._finish_job(job, namespace, succeeded=True)
        self._check(namespace)
        self._instance_pod(obj, instance, address, (ca_cert, server_cert, server_key))
        del ca_key

    def _pki(self, obj: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes]:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        labels = {"app.kubernetes.io/managed-by": "cloudnative-pg"}
        ca_cert, ca_key = inst.root_ca(name, namespace)
        cert, key = inst.server_pair(
            ca_cert, ca_key, f"{name}-rw", inst.alt_dns_names(name, namespace)
        )
        for secret_name, kind, data in (
            (f"{name}-ca", "Opaque", {"ca.crt": ca_cert, "ca.key": ca_key}),
            (f"{name}-server", "kubernetes.io/tls", {"tls.crt": cert, "tls.key": key}),
        ):
            self._create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": kind,
                    "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
                    "data": {k: inst.b64(v) for k, v in data.items()},
                },
                namespace,
            )
        return ca_cert, ca_key, cert, key

    @staticmethod
    def _labels(obj: dict[str, Any]) -> dict[str, str]:
        name = obj["metadata"]["name"]
        return {
            "cnpg.io/cluster": name,
            "app.kubernetes.io/name": "postgresql",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/version": str(CnpgOperator._major(obj) or ""),
            "app.kubernetes.io/component": "database",
            "app.kubernetes.io/managed-by": "cloudnative-pg",
        }

    @staticmethod
    def _major(obj: dict[str, Any]) -> int | None:
        from drillkit.k8s.objects import image_major

        image = (obj.get("spec") or {}).get("imageName") or ""
        return image_major(image) if image else None

    def _service(self, obj: dict[str, Any], suffix: str, role: str | None, address: str):
        name = obj["metadata"]["name"]
        selector = {"cnpg.io/cluster": name}
        if role:
            selector["cnpg.io/instanceRole"] = role
        else:
            selector["cnpg.io/podRole"] = "instance"
        # Only -rw gets the instance's address as its clusterIP (two Services never share one);
        # -r and -ro get one the API server allocates, which reaches nothing here.
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{name}{suffix}",
                "namespace": obj["metadata"]["namespace"],
                "labels": self._labels(obj),
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": address if suffix == "-rw" else "",
                "ports": [
                    {
                        "name": "postgres",
                        "protocol": "TCP",
                        "port": inst.PORT,
                        "targetPort": inst.PORT,
                    }
                ],
                "selector": selector,
            },
        }

    def _job(self, obj: dict[str, Any], job: str) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        labels = {
            **self._labels(obj),
            "cnpg.io/instanceName": f"{name}-1",
            "cnpg.io/jobRole": "full-recovery",
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "namespace": obj["metadata"]["namespace"], "labels": labels},
            "spec": {
                "backoffLimit": 6,  # the API server's default (CloudNativePG sets none)
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostname": job,
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "full-recovery",
                                "image": (obj.get("spec") or {}).get("imageName") or "",
                                "command": ["/controller/manager", "instance", "restore"],
                            }
                        ],
                    },
                },
            },
        }

    def _finish_job(self, job: str, namespace: str, *, succeeded: bool) -> None:
        """The Job's terminal status as the Job controller writes it: an interim condition then
        the terminal one (FailureTarget + Failed, or SuccessCriteriaMet + Complete)."""
        if succeeded:
            kinds, reason = ("SuccessCriteriaMet", "Complete"), "CompletionsReached"
            message = "Reached expected number of succeeded pods"
            counts: dict[str, Any] = {"succeeded": 1, "completionTime": _now()}
        else:
            kinds, reason, message = ("FailureTarget", "Failed"), "BackoffLimitExceeded", BACKOFF
            counts = {"failed": 1}
        condition = {
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": _now(),
            "lastTransitionTime": _now(),
        }
        self._status(
            "batch/v1",
            "jobs",
            job,
            namespace,
            {"active": 0, **counts, "conditions": [{"type": k, **condition} for k in kinds]},
        )

    @staticmethod
    def _job_pod(job: dict[str, Any]) -> dict[str, Any]:
        """The pod the Job controller makes for ``job``: its template's labels plus
        ``batch.kubernetes.io/job-name``/``job-name`` and the controller uid
        (https://kubernetes.io/docs/concepts/workloads/controllers/job/), a random suffix."""
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        uid = job["metadata"].get("uid", "")
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
        }
        suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-{suffix}", "labels": labels},
            "spec": {**template["spec"], "nodeName": "node-1"},  # bound by the scheduler
        }

    @staticmethod
    def _ready(ready: bool) -> dict[str, Any]:
        """api/v1/cluster_types.go ConditionClusterReady (ClusterIsReady/ClusterIsNotReady)."""
        return {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "ClusterIsReady" if ready else "ClusterIsNotReady",
            "message": "Cluster is Ready" if ready else "Cluster Is Not Ready",
            "lastTransitionTime": _now(),
        }

    # --- the recovery Job ----------------------------------------------------------------------

    def _recovery_store(self, obj: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """(barman object store configuration, serverName) of bootstrap.recovery.source."""
        spec = obj["spec"]
        recovery = spec["bootstrap"]["recovery"]
        source = recovery.get("source")
        if not source:
            raise RestoreError("recovery source not specified (the stand-in reads no Backup refs)")
        external = next(
            (e for e in spec.get("externalClusters") or [] if e.get("name") == source), None
        )
        if external is None:
            raise RestoreError(f"missing external cluster: {source}")
        plugin = external.get("plugin")
        if plugin:
            if plugin.get("name") != BARMAN_PLUGIN:
                raise RestoreError(f"the stand-in knows only the {BARMAN_PLUGIN} plugin")
            params = plugin.get("parameters") or {}
            store_name = params.get("barmanObjectName") or ""
            namespace = obj["metadata"]["namespace"]
            store = self.cluster.stored(
                "barmancloud.cnpg.io/v1", "objectstores", store_name, namespace
            )
            if store is None:
                raise RestoreError(f'objectstores.barmancloud.cnpg.io "{store_name}" not found')
            server = params.get("serverName") or obj["metadata"]["name"]
            return (store.get("spec") or {}).get("configuration") or {}, server
        store = external.get("barmanObjectStore")
        if not store:
            raise RestoreError(f"missing barman object store configuration for source: {source}")
        return store, store.get("serverName") or external["name"]

    def _restore(self, obj: dict[str, Any], instance: Instance) -> None:
        """pkg/management/postgres/restore.go Restore + ConfigureInstanceAfterRestore."""
        namespace = obj["metadata"]["namespace"]
        say = instance.log
        recovery = obj["spec"]["bootstrap"]["recovery"]
        store, server = self._recovery_store(obj)
        say(
            f"Recovering from external cluster sourceName={recovery.get('source')} "
            f"serverName={server}"
        )
        env = inst.s3_environment(store, self._secret_value(namespace))
        where = ["--endpoint-url", store["endpointURL"]] if store.get("endpointURL") else []
        where += [store.get("destinationPath") or "", server]
        catalog = inst.backup_catalog(where, env, say)
        backup = inst.find_backup(catalog, recovery.get("recoveryTarget"))
        say(f"Target backup found: {backup.id}")
        self._check(namespace)
        test_wal = instance.root / "tmp" / "test.wal"
        result = inst.run_barman(
            "barman-cloud-wal-restore", [*where, backup.begin_wal, str(test_wal)], env, say
        )
        test_wal.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RestoreError(
                "encountered an error while checking the presence of first needed WAL in the "
                f"archive: exit status {result.returncode}"
            )
        data = instance.data
        if data.exists():
            raise RestoreError(f"PGData directories already exist: {data}")
        data.mkdir(mode=0o700)
        inst.pgbin.give_to_server_user(data)
        say(f"Starting barman-cloud-restore options={[*where, backup.id, str(data)]}")
        result = inst.run_barman("barman-cloud-restore", [*where, backup.id, str(data)], env, say)
        if result.returncode != 0:
            code = result.returncode
            raise RestoreError(f"{BARMAN_EXIT.get(code, 'Generic failure')} (exit code {code})")
        say("Restore completed")
        self._check(namespace)
        instance.pick_installation()
        self._write_recovery_config(obj, instance, where, recovery.get("recoveryTarget"))
        instance.env = env
        instance.start(timeout=self.recovery_timeout)
        try:
            instance.wait_promoted(self.recovery_timeout)
        finally:
            instance.stop()
        self._check(namespace)
        self._configure_new_instance(obj, instance)
        say("restore command execution completed without errors")

    def _base_settings(self, obj: dict[str, Any], instance: Instance) -> dict[str, str]:
        """What RefreshConfigurationFilesFromCluster puts in custom.conf that matters here: the
        Cluster's parameters, then CloudNativePG's fixed ones (pkg/postgres/configuration.go)."""
        params = dict(((obj.get("spec") or {}).get("postgresql") or {}).get("parameters") or {})
        libraries = ((obj.get("spec") or {}).get("postgresql") or {}).get(
            "shared_preload_libraries"
        )
        if libraries:
            params["shared_preload_libraries"] = ",".join(libraries)
        return {
            **{k: str(v) for k, v in params.items()},
            "port": str(inst.PORT),
            "unix_socket_directories": str(instance.run),
            "hba_file": str(instance.data / "pg_hba.conf"),
            "ident_file": str(instance.data / "pg_ident.conf"),
            "hot_standby": "true",
            "wal_level": "logical",
            "archive_mode": "on",
            "password_encryption": "scram-sha-256",
            "log_destination": "stderr",
            "logging_collector": "off",
            "dynamic_shared_memory_type": "posix",
            "full_page_writes": "on",
        }

    def _write_recovery_config(
        self, obj: dict[str, Any], instance: Instance, where: list[str], target: Any
    ) -> None:
        """WriteInitialPostgresqlConf, WriteRestoreHbaConf, writeCustomRestoreWalConfig."""
        custom = {**self._base_settings(obj, instance), "listen_addresses": ""}
        custom["ssl"] = "off"  # "we still don't have the required certificates"
        custom["archive_command"] = "false"
        control = instance.controldata()
        params = ((obj.get("spec") or {}).get("postgresql") or {}).get("parameters") or {}
        for key, setting in (
            ("max_connections setting", "max_connections"),
            ("max_wal_senders setting", "max_wal_senders"),
            ("max_worker_processes setting", "max_worker_processes"),
            ("max_prepared_xacts setting", "max_prepared_transactions"),
            ("max_locks_per_xact setting", "max_locks_per_transaction"),
        ):
            found = [int(v) for v in (control.get(key), params.get(setting)) if v]
            if found:
                custom[setting] = str(max(found))
        custom["recovery_target_action"] = "promote"
        custom["restore_command"] = inst.restore_command(where)
        custom.update(inst.recovery_target_options(target))
        instance.log(f"Generated recovery configuration {inst.recovery_target_options(target)}")
        self._write_conf(instance, custom, hba="local all all peer map=local\n")
        instance.write("recovery.signal", "")

    def _write_conf(self, instance: Instance, custom: dict[str, str], *, hba: str) -> None:
        for stale in ("standby.signal", "postgresql.auto.conf"):
            (instance.data / stale).unlink(missing_ok=True)
        instance.write("postgresql.conf", "include 'custom.conf'\ninclude 'override.conf'\n")
        instance.write("custom.conf", inst.render(custom))
        instance.write("override.conf", "")
        instance.write("postgresql.auto.conf", "")
        instance.write("pg_hba.conf", hba)
        instance.write("pg_ident.conf", inst.ident_rules())

    def _configure_new_instance(self, obj: dict[str, Any], instance: Instance) -> None:
        """initdb.go ConfigureNewInstance, run by ConfigureInstanceAfterRestore when
        ShouldRecoveryCreateApplicationDatabase (owner and database both set): the role is
        created (LOGIN, nothing granted) and the database (owned by it) when the backup lacks
        them; an existing database is left as it is."""
        recovery = obj["spec"]["bootstrap"]["recovery"]
        owner, database = recovery.get("owner") or "", recovery.get("database") or ""
        if not owner or not database:
            return
        instance.start(timeout=self.recovery_timeout)
        try:
            ident = '"' + owner.replace('"', '""') + '"'
            literal = "'" + owner.replace("'", "''") + "'"
            if (
                instance.sql(
                    f"SELECT COUNT(*) > 0 FROM pg_catalog.pg_roles WHERE rolname = {literal}"
                )
                == "f"
            ):
                instance.sql(f"CREATE ROLE {ident} LOGIN")
                instance.log(f"created role {owner} (absent from the backup)")
            db_literal = "'" + database.replace("'", "''") + "'"
            if (
                instance.sql(
                    f"SELECT COUNT(*) > 0 FROM pg_catalog.pg_database WHERE datname = {db_literal}"
                )
                == "f"
            ):
                db_ident = '"' + database.replace('"', '""') + '"'
                instance.sql(f"CREATE DATABASE {db_ident} OWNER {ident}")
                instance.log(f"created database {database} owned by {owner}")
        finally:
            instance.stop()

    # --- the instance pod ----------------------------------------------------------------------

    def _instance_pod(
        self, obj: dict[str, Any], instance: Instance, address: str, pki: tuple[bytes, ...]
    ) -> None:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        pod = f"{name}-1"
        certs = instance.root / "certs"
        certs.mkdir(mode=0o700, exist_ok=True)
        inst.pgbin.give_to_server_user(certs)
        paths = {}
        for file_name, content in zip(("ca.crt", "server.crt", "server.key"), pki, strict=True):
            path = certs / file_name
            path.write_bytes(content)
            os.chmod(path, 0o600)
            user = inst.pgbin.os_user()
            if user is not None:
                os.chown(path, user.uid, user.gid)
            paths[file_name] = str(path)
        assert instance.installation is not None
        custom = {
            **self._base_settings(obj, instance),
            "listen_addresses": address,
            "ssl": "on",
            "ssl_ca_file": paths["ca.crt"],
            "ssl_cert_file": paths["server.crt"],
            "ssl_key_file": paths["server.key"],
            "ssl_min_protocol_version": "TLSv1.3",
            "archive_command": "/bin/true",
        }
        if not inst.has_ssl(instance.installation):
            # A build without OpenSSL (the embedded wheel): TLS ends in a relay on :5432 that
            # presents the same certificate; the server listens behind it on :5433.
            for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_min_protocol_version"):
                custom.pop(key)
            custom.update(ssl="off", port=str(inst.PORT + 1))
            instance.port = inst.PORT + 1
        hba = inst.hba_rules(instance.installation.major, ssl=custom["ssl"] == "on")
        self._write_conf(instance, custom, hba=hba)
        instance.env = {}
        instance.start(timeout=120)
        if custom["ssl"] == "off":
            instance.relay = inst.TlsRelay(
                address, inst.PORT + 1, certs / "server.crt", certs / "server.key"
            )
        self._check(namespace)
        self._credentials(obj, instance)
        labels = {
            **self._labels(obj),
            "cnpg.io/instanceName": pod,
            "cnpg.io/podRole": "instance",
            "role": "primary",
            "cnpg.io/instanceRole": "primary",
        }
        self._create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "labels": labels},
                "spec": {
                    "hostname": pod,
                    # Bound by the scheduler (spec.nodeName) before its kubelet runs it: the API
                    # server's port-forward and log paths go through that node's kubelet.
                    "nodeName": "node-1",
                    "containers": [
                        {
                            "name": "postgres",
                            "image": (obj.get("spec") or {}).get("imageName") or "",
                            "ports": [
                                {
                                    "name": "postgresql",
                                    "containerPort": inst.PORT,
                                    "protocol": "TCP",
                                }
                            ],
                        }
                    ],
                },
            },
            namespace,
        )
        now = _now()
        self._status(
            "v1",
            "pods",
            pod,
            namespace,
            {
                "phase": "Running",
                "podIP": address,
                "podIPs": [{"ip": address}],
                "startTime": now,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
            },
        )
        self._status(
            CNPG,
            "clusters",
            name,
            namespace,
            {
                "phase": HEALTHY,
                "phaseReason": "",
                "instances": 1,
                "readyInstances": 1,
                "currentPrimary": pod,
                "targetPrimary": pod,
                "instanceNames": [pod],
                "instancesStatus": {"healthy": [pod]},
                "writeService": f"{name}-rw",
                "readService": f"{name}-r",
                "conditions": [self._ready(True)],
            },
        )
        self.outcomes[namespace] = "healthy"
        self._say(namespace, f"instance {pod} is the primary on {address}:{inst.PORT}")

    def _credentials(self, obj: dict[str, Any], instance: Instance) -> None:
        """refreshCredentialsFromSecret: the superuser's password (or none) and the owner's."""
        spec, namespace, name = obj["spec"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        if spec.get("enableSuperuserAccess"):
            secret = (spec.get("superuserSecret") or {}).get("name") or f"{name}-superuser"
            self._reconcile_user(namespace, instance, "postgres", secret)
        else:
            instance.sql("ALTER ROLE postgres WITH PASSWORD NULL")
        recovery = spec["bootstrap"]["recovery"]
        if recovery.get("owner") and recovery.get("database"):
            secret = (recovery.get("secret") or {}).get("name") or f"{name}-app"
            self._reconcile_user(namespace, instance, recovery["owner"], secret)

    def _reconcile_user(self, namespace: str, instance: Instance, user: str, secret: str) -> None:
        """instance_controller.go reconcileUser: a missing Secret is skipped, a wrong username
        is an error; the password is sent SCRAM-encoded (utils/roles.go SetUserPassword)."""
        found = self._secret(namespace, secret)
        if found is None:
            return
        data = found.get("data") or {}
        username = base64.b64decode(data.get("username", "")).decode()
        password = base64.b64decode(data.get("password", "")).decode()
        if username != user:
            self._say(namespace, f"wrong username '{username}' in secret, expected '{user}'")
            return
        from drillkit.sandbox.roles import scram_verifier

        ident = '"' + user.replace('"', '""') + '"'
        instance.sql(f"ALTER ROLE {ident} WITH PASSWORD '{scram_verifier(password)}'")
