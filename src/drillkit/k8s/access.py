"""Reach a kubernetes sandbox's restored database for the data checks, and seal it first.

Two ways in (``sandbox.access``):

- ``in_cluster``: the worker runs in the cluster and connects to CloudNativePG's read-write
  Service ``<cluster>-rw.<ns>.svc`` with TLS verified against the cluster's own CA (Secret
  ``<cluster>-ca``, key ``ca.crt``; ``sslmode=verify-full`` on that name). The drill namespace's
  NetworkPolicy admits the workers' namespace.
- ``port_forward``: the worker is outside the cluster and reaches the primary pod through the API
  server's ``pods/portforward`` subresource (RBAC: ``get`` on ``pods/portforward``), relayed to a
  Unix socket in a private 0700 directory of this process: no other local user can use it.
- ``auto`` (default): ``in_cluster`` when the process runs in a pod (the kubelet sets
  ``KUBERNETES_SERVICE_HOST`` in every container), else ``port_forward``.

Credentials are read through the API when the checks run (never XCom): the drill-owned superuser
Secret logs in once to seal the database (subscriptions disabled and detached, slots and PUBLIC
user mappings dropped: ``sandbox.seal``) and to create the per-sandbox check roles
(``sandbox.roles``), exactly as on a local sandbox; the checks then log in as those roles, whose
passwords live in a 0600 file in the private directory for the duration of the checks only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drillkit.exceptions import InvalidInputError, SandboxError
from drillkit.k8s import objects
from drillkit.k8s.client import Kube
from drillkit.k8s.config import ACCESS_MODES
from drillkit.k8s.credentials import sandbox_login
from drillkit.k8s.kinds import SERVICE
from drillkit.timeutil import isoformat

POSTGRES_PORT = 5432  # CloudNativePG's instances and Services always listen on 5432
CONNECT_TIMEOUT = 10
NOT_MEASURABLE = (
    "not measurable: CloudNativePG restarts PostgreSQL after the recovery Job, so "
    "pg_last_xact_replay_timestamp() is NULL; the pitr checks prove the recovered moment"
)


def resolve_mode(configured: str | None) -> str:
    """``in_cluster`` or ``port_forward`` for the configured mode (``auto`` decides by where this
    process runs: the kubelet sets ``KUBERNETES_SERVICE_HOST`` in every container,
    https://kubernetes.io/docs/concepts/services-networking/service/#environment-variables)."""
    mode = configured or "auto"
    if mode not in ACCESS_MODES:
        raise InvalidInputError(
            f"sandbox.access {mode!r} is not one of {', '.join(ACCESS_MODES)}; "
            "use in_cluster when the workers run in the cluster, port_forward when they do not"
        )
    if mode == "auto":
        return "in_cluster" if os.environ.get("KUBERNETES_SERVICE_HOST") else "port_forward"
    return mode


@dataclass
class DatabaseAccess:
    """What the checks use while the access is open: an endpoint and the sealed check roles."""

    mode: str
    detail: str
    endpoint: dict[str, Any]
    check_roles: dict[str, Any]
    sealed: dict[str, list[str]]
    major: int
    achieved_recovery_point: str | None
    achieved_recovery_point_source: str

    def summary(self) -> dict[str, Any]:
        """For the validation (no secret, no local path)."""
        return {
            "mode": self.mode,
            "detail": self.detail,
            "postgres_major": self.major,
            "sealed": self.sealed,
            "check_roles": {
                k: v for k, v in self.check_roles.items() if k in ("read", "write", "superuser")
            },
            "achieved_recovery_point": self.achieved_recovery_point,
            "achieved_recovery_point_source": self.achieved_recovery_point_source,
        }


def _superuser_connect(endpoint: Mapping[str, Any], login: Mapping[str, Any]) -> Any:
    """``database -> autocommit psycopg2 connection`` as the drill-only superuser."""
    import psycopg2

    def connect(database: str) -> Any:
        params: dict[str, Any] = {
            "host": endpoint.get("tls_server_name") or endpoint["host"],
            "port": endpoint["port"],
            "user": login["user"],
            "password": login["password"],
            "dbname": database,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "drillkit seal",
        }
        if endpoint.get("hostaddr"):
            params["hostaddr"] = endpoint["hostaddr"]
        if endpoint.get("sslrootcert"):
            params["sslmode"] = "verify-full"
            params["sslrootcert"] = endpoint["sslrootcert"]
        try:
            conn = psycopg2.connect(**params)
        except psycopg2.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["no reason given"])[0]
            raise SandboxError(
                f"cannot log in to the restored database {database!r} as the drill's superuser "
                f"({first}); is the recovery Cluster healthy and its Secret "
                f"{objects.SUPERUSER_SECRET} the one it was bootstrapped with?",
                code="SANDBOX_UNREACHABLE",
            ) from exc
        conn.autocommit = True
        return conn

    return connect


def _in_cluster_endpoint(
    kube: Kube, record: Mapping[str, Any], ca_file: Path
) -> tuple[dict[str, Any], str]:
    namespace = str(record["namespace"])
    cluster = str(record.get("cluster", objects.CLUSTER_NAME))
    name = f"{cluster}-rw"
    server_name = f"{name}.{namespace}.svc"
    endpoint: dict[str, Any] = {
        "host": server_name,
        "port": POSTGRES_PORT,
        "tls_server_name": server_name,
        "sslrootcert": str(ca_file),
    }
    if record.get("endpoint_mode") == "cluster_ip":
        service = kube.get(SERVICE, name, namespace)
        ip = ((service or {}).get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            raise SandboxError(
                f"Service {name} in namespace {namespace} has no cluster IP; is the recovery "
                "Cluster healthy?",
                code="SANDBOX_UNREACHABLE",
            )
        # The address is judged (the guard pins it); TLS still verifies the Service's name.
        endpoint["host"] = str(ip)
        endpoint["hostaddr"] = str(ip)
    detail = f"in the cluster: TLS (verify-full against Secret {cluster}-ca) to {server_name}" + (
        f" at {endpoint['host']}" if endpoint.get("hostaddr") else ""
    )
    return endpoint, detail


@contextlib.contextmanager
def open_database(
    kube: Kube,
    record: Mapping[str, Any],
    *,
    mode: str | None = None,
    database: str | None = None,
) -> Iterator[DatabaseAccess]:
    """Open the way to the record's restored database, seal it and create its check roles.

    ``mode`` defaults to the record's ``access`` (see ``resolve_mode``). Everything local (CA
    file, password file, port-forward socket) lives in a private directory removed on exit.
    Anything that keeps the checks from starting is a SandboxError (the tier cannot be judged),
    never a check result.
    """
    mode = resolve_mode(mode or record.get("access"))
    login = sandbox_login(kube, record, superuser=True)
    workdir = Path(tempfile.mkdtemp(prefix="drillkit-k8s-"))  # 0700, this process's user
    try:
        with contextlib.ExitStack() as stack:
            access = _prepare(kube, record, login, mode, workdir, stack, database)
            yield access
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(
    kube: Kube,
    record: Mapping[str, Any],
    login: Mapping[str, Any],
    mode: str,
    workdir: Path,
    stack: contextlib.ExitStack,
    database: str | None,
) -> DatabaseAccess:
    import psycopg2

    from drillkit.sandbox import seal

    namespace = str(record["namespace"])
    cluster = str(record.get("cluster", objects.CLUSTER_NAME))
    forward = None
    try:
        if mode == "in_cluster":
            if not login.get("ca_pem"):
                raise SandboxError(
                    f"Secret {cluster}-ca is not in namespace {namespace}: the server's "
                    "certificate cannot be verified, so the checks do not connect",
                    code="SANDBOX_CREDENTIALS_MISSING",
                )
            ca_file = workdir / "ca.crt"
            ca_file.write_text(str(login["ca_pem"]))
            endpoint, detail = _in_cluster_endpoint(kube, record, ca_file)
        else:
            from drillkit.k8s.portforward import forward_unix, primary_pod, socket_file

            pod = primary_pod(kube, namespace, cluster)
            forward = stack.enter_context(
                forward_unix(
                    kube,
                    namespace=namespace,
                    pod=pod,
                    port=POSTGRES_PORT,
                    socket_path=socket_file(workdir, POSTGRES_PORT),
                )
            )
            endpoint = {"host": str(workdir), "port": POSTGRES_PORT}
            detail = (
                f"port-forward through the Kubernetes API to pod {pod} in {namespace} "
                "(the worker is outside the cluster)"
            )
        planned = (record.get("endpoints") or {}).get("postgres") or {}
        name = str(database or planned.get("database") or login.get("database") or "postgres")
        connect = _superuser_connect(endpoint, login)
        first = connect(name)
        try:
            with first.cursor() as cur:
                cur.execute("SHOW server_version_num")
                major = int(cur.fetchone()[0]) // 10000
                cur.execute("SELECT pg_last_xact_replay_timestamp()")
                replayed = cur.fetchone()[0]
            names = seal.databases(first)
        finally:
            first.close()
        isolated = seal.seal_for_checks(connect, names, workdir, major=major)
    except (OSError, psycopg2.Error, SandboxError) as exc:
        if isinstance(exc, SandboxError) and not (forward and forward.errors):
            raise
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reported = forward.errors if forward else []
        said = f"; the port-forward reported: {'; '.join(reported)}" if reported else ""
        raise SandboxError(
            f"cannot prepare the checks on the sandbox's database in {namespace} "
            f"({first_line}{said}); the tier cannot be judged",
            code="SANDBOX_UNREACHABLE",
        ) from exc
    return DatabaseAccess(
        mode=mode,
        detail=detail,
        endpoint={
            "kind": "postgres",
            **endpoint,
            "database": name,
            "user": isolated["check_roles"]["read"]["user"],
        },
        check_roles=isolated["check_roles"],
        sealed=isolated["sealed"],
        major=major,
        achieved_recovery_point=isoformat(replayed) if replayed else None,
        achieved_recovery_point_source="pg_last_xact_replay_timestamp"
        if replayed
        else NOT_MEASURABLE,
    )
