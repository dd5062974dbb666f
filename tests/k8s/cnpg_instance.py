"""What CloudNativePG's instance manager does on a node, done locally for cnpg_operator.py: the
recovery Job's restore (barman-cloud-backup-list, barman-cloud-wal-restore, barman-cloud-restore,
recovery until promotion) and the instance pod's PostgreSQL (TLS, pg_hba, passwords).

Sources (github.com/cloudnative-pg/cloudnative-pg unless said): pkg/management/postgres/restore.go
(Restore, loadBackupObjectFromExternalCluster, WriteInitialPostgresqlConf, WriteRestoreHbaConf,
writeRecoveryConfiguration, ConfigureInstanceAfterRestore), pkg/management/postgres/initdb.go
(ConfigureNewInstance), pkg/postgres/configuration.go (hba/ident templates, ServerPort),
pkg/certs/certs.go (CreateRootCA, CreateAndSignPair), github.com/cloudnative-pg/barman-cloud
pkg/catalog/catalog.go (FindBackupInfo), pkg/credentials/env.go (envSetAWSCredentials).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit import pgbin
from drillkit.barman import tools
from drillkit.sandbox.config import conf_quote
from drillkit.sandbox.local import stop_server

PORT = 5432  # pkg/postgres/configuration.go ServerPort
CLUSTER_DOMAIN = "cluster.local"  # internal/configuration: KubernetesClusterDomain default
CERT_DAYS = 90  # internal/configuration: CertificateDuration default (days)


class RestoreError(Exception):
    """The recovery Job's container exits non-zero with this error (what its log ends with)."""


# --- credentials and the backup catalog ------------------------------------------------------


def s3_environment(config: Mapping[str, Any], secret_value: Callable[[str, str], bytes]) -> dict:
    """barman-cloud pkg/credentials/env.go envSetCloudCredentials/envSetAWSCredentials: the AWS
    variables from the Secrets the configuration names (read in the Cluster's namespace)."""
    s3 = config.get("s3Credentials")
    if s3 is None:
        if config.get("azureCredentials") or config.get("googleCredentials"):
            raise RestoreError("the stand-in reads S3 credentials only (known difference)")
        raise RestoreError("ObjectStoreConfiguration invalid: no credentials defined")
    if s3.get("inheritFromIAMRole"):
        return {}
    env = {}
    if not s3.get("accessKeyId"):
        raise RestoreError("missing access key ID")
    access = secret_value(s3["accessKeyId"]["name"], s3["accessKeyId"]["key"])
    if not s3.get("secretAccessKey"):
        raise RestoreError("missing secret access key")
    secret = secret_value(s3["secretAccessKey"]["name"], s3["secretAccessKey"]["key"])
    if s3.get("region"):
        env["AWS_DEFAULT_REGION"] = secret_value(s3["region"]["name"], s3["region"]["key"])
    if s3.get("sessionToken"):
        env["AWS_SESSION_TOKEN"] = secret_value(
            s3["sessionToken"]["name"], s3["sessionToken"]["key"]
        )
    env["AWS_ACCESS_KEY_ID"] = access
    env["AWS_SECRET_ACCESS_KEY"] = secret
    # boto3 needs a region; the pod's image sets none, moto accepts any.
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in env.items()}


def _barman_time(iso: str | None, ctime: str | None) -> dt.datetime | None:
    """catalog.go tryParseISOOrCtimeTime: the ISO field, else the ctime one (UTC)."""
    try:
        if iso:
            return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        if ctime:
            try:
                return dt.datetime.strptime(ctime, "%a %b %d %H:%M:%S %Y").replace(tzinfo=dt.UTC)
            except ValueError:
                return dt.datetime.fromisoformat(ctime)
    except ValueError:
        return None
    return None


@dataclass
class BarmanBackup:
    id: str
    begin: dt.datetime | None
    end: dt.datetime | None
    begin_wal: str
    end_lsn: str
    timeline: int

    @property
    def done(self) -> bool:  # catalog.go isBackupDone
        return self.begin is not None and self.end is not None


def backup_catalog(args: list[str], env: Mapping[str, str], log: Callable[[str], None]) -> list:
    """barman-cloud pkg/command/backuplist.go GetBackupList: ``barman-cloud-backup-list --format
    json``, sorted by time (catalog.go NewCatalogFromBarmanCloudBackupList)."""
    result = tools.run_tool(
        "barman-cloud-backup-list", ["--format", "json", *args], credentials=env, check=False
    )
    if result.returncode != 0:
        log(f"Can't extract backup id: {(result.stderr or result.stdout).strip()[-1500:]}")
        raise RestoreError(f"exit status {result.returncode}")
    raw = json.loads(result.stdout or "{}").get("backups_list") or []
    backups = [
        BarmanBackup(
            id=item.get("backup_id", ""),
            begin=_barman_time(item.get("begin_time_iso"), item.get("begin_time")),
            end=_barman_time(item.get("end_time_iso"), item.get("end_time")),
            begin_wal=item.get("begin_wal") or "",
            end_lsn=item.get("end_xlog") or "",
            timeline=int(item.get("timeline") or 0),
        )
        for item in raw
    ]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(backups, key=lambda b: b.begin or epoch)


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def find_backup(catalog: list[BarmanBackup], target: Mapping[str, Any] | None) -> BarmanBackup:
    """catalog.go FindBackupInfo / LatestBackupInfo and restore.go's "no target backup found"."""
    if target and target.get("backupID"):
        for backup in catalog:
            if backup.done and backup.id == target["backupID"]:
                return backup
        raise RestoreError(f"no backup found with ID {target['backupID']}")
    tli = str((target or {}).get("targetTLI") or "")

    def on_timeline(b: BarmanBackup) -> bool:
        return tli in ("", "latest") or str(b.timeline) == tli

    chosen = None
    for backup in reversed([b for b in catalog if b.done and on_timeline(b)]):
        if target and target.get("targetTime"):
            moment = dt.datetime.fromisoformat(str(target["targetTime"]).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            if backup.end and backup.end <= moment:
                chosen = backup
                break
        elif target and target.get("targetLSN"):
            if _lsn(backup.end_lsn) < _lsn(str(target["targetLSN"])):
                chosen = backup
                break
        else:
            chosen = backup
            break
    if chosen is None:
        raise RestoreError("no target backup found")
    return chosen


# --- recovery configuration -------------------------------------------------------------------


def postgres_time(value: str) -> str:
    """machinery pkg/postgres/time ConvertToPostgresFormat: RFC 3339 -> '... .000000+00:00'."""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")
    return text[:-2] + ":" + text[-2:]


def recovery_target_options(target: Mapping[str, Any] | None) -> dict[str, str]:
    """api/v1/cluster_funcs.go RecoveryTarget.BuildPostgresOptions."""
    if not target:
        return {}
    options: dict[str, str] = {}
    for key, setting in (
        ("targetTLI", "recovery_target_timeline"),
        ("targetXID", "recovery_target_xid"),
        ("targetName", "recovery_target_name"),
        ("targetLSN", "recovery_target_lsn"),
    ):
        if target.get(key):
            options[setting] = str(target[key])
    if target.get("targetTime"):
        options["recovery_target_time"] = postgres_time(str(target["targetTime"]))
    if target.get("targetImmediate"):
        options["recovery_target"] = "immediate"
    options["recovery_target_inclusive"] = "false" if target.get("exclusive") else "true"
    return options


def render(settings: Mapping[str, str]) -> str:
    return "".join(f"{key} = {conf_quote(str(value))}\n" for key, value in settings.items())


def server_os_user() -> str:
    """The OS user PostgreSQL runs as (``postgres`` in CloudNativePG's images)."""
    user = pgbin.os_user()
    if user is not None:
        return user.name
    import getpass

    return getpass.getuser()


def hba_rules(major: int, *, ssl: bool = True) -> str:
    """pkg/postgres/configuration.go hbaTemplateString with no user rules;
    pkg/management/postgres/configuration.go: scram-sha-256 from PostgreSQL 14 (md5 before).
    A build without SSL refuses hostssl/cert lines: they are kept as comments there."""
    method = "scram-sha-256" if major >= 14 else "md5"
    hostssl = "" if ssl else "# (no SSL in this build) "
    return (
        "local all cnpg_metrics_exporter peer map=cnpg_metrics_exporter\n"
        "local all all peer map=local\n"
        f"{hostssl}hostssl postgres streaming_replica all cert map=cnpg_streaming_replica\n"
        f"{hostssl}hostssl replication streaming_replica all cert map=cnpg_streaming_replica\n"
        f"{hostssl}hostssl all cnpg_pooler_pgbouncer all cert map=cnpg_pooler_pgbouncer\n"
        f"host all all all {method}\n"
    )


def ident_rules() -> str:
    """pkg/postgres/configuration.go identTemplateString (Username: the server's OS user)."""
    user = server_os_user()
    return (
        f"local {user} postgres\n"
        "cnpg_streaming_replica streaming_replica streaming_replica\n"
        "cnpg_pooler_pgbouncer cnpg_pooler_pgbouncer cnpg_pooler_pgbouncer\n"
        f"cnpg_metrics_exporter {user} cnpg_metrics_exporter\n"
    )


# --- certificates (pkg/certs/certs.go) --------------------------------------------------------


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    # x509.MarshalECPrivateKey + "EC PRIVATE KEY" block: the traditional OpenSSL form.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def root_ca(common_name: str, unit: str) -> tuple[bytes, bytes]:
    """CreateRootCA: ECDSA P-256, CN=cluster, OU=namespace, KeyUsageCertSign, 90 days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        ]
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def server_pair(ca_cert: bytes, ca_key: bytes, host: str, names: list[str]) -> tuple[bytes, bytes]:
    """CreateAndSignPair(host, CertTypeServer, altDNSNames): CN=host, SANs altDNSNames (+host),
    digitalSignature|keyAgreement|keyEncipherment, extKeyUsage serverAuth."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    dns = list(dict.fromkeys([*names, host]))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, True, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def alt_dns_names(cluster: str, namespace: str) -> list[str]:
    """api/v1/cluster_funcs.go GetClusterAltDNSNames: -rw, -r, -ro (all enabled by default), each
    as name, name.ns, name.ns.svc, name.ns.svc.<cluster domain>."""
    out = []
    for suffix in ("-rw", "-r", "-ro"):
        service = f"{cluster}{suffix}"
        out += [
            service,
            f"{service}.{namespace}",
            f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
        ]
    return out


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# --- the local PostgreSQL ---------------------------------------------------------------------


def _owned_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    pgbin.give_to_server_user(path)
    return path


@dataclass
class Instance:
    """One Cluster's PostgreSQL: its data directory, private socket directory and log."""

    root: Path
    log: Callable[[str], None]
    installation: pgbin.Installation | None = None
    env: dict[str, str] = field(default_factory=dict)  # the pod's environment (credentials)
    relay: Any = None  # TlsRelay when the build has no SSL
    port: int = PORT  # the server's own port (behind the relay: PORT + 1)

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def server_log(self) -> Path:
        return self.root / "postgres.log"

    def prepare(self) -> None:
        _owned_dir(self.root, 0o755)
        _owned_dir(self.run)
        (self.root / "tmp").mkdir(exist_ok=True)
        pgbin.give_to_server_user(self.root / "tmp")

    def pick_installation(self) -> pgbin.Installation:
        major = int((self.data / "PG_VERSION").read_text().strip().split(".")[0])
        self.installation = pgbin.for_major(major)
        return self.installation

    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        path = self.data / name
        path.write_text(text)
        os.chmod(path, mode)
        user = pgbin.os_user()
        if user is not None:
            os.chown(path, user.uid, user.gid)
        return path

    def start(self, *, timeout: float = 600.0) -> None:
        """pg_ctl start -w as the server's OS user, with the pod's environment (restore_command
        reads the credentials from it, as CloudNativePG's wal-restore does from its cache)."""
        assert self.installation is not None
        result = self.installation.run(
            "pg_ctl",
            [
                "-D",
                str(self.data),
                "-l",
                str(self.server_log),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            check=False,
            env=self.env,
        )
        if result.returncode != 0:
            tail = self.log_tail()
            self.log(f"PostgreSQL did not start: {tail}")
            raise RestoreError(f"while starting PostgreSQL: {tail[-600:]}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> bool:
        return stop_server(self.data, self.installation) if self.data.exists() else False

    def sql(self, statement: str, database: str = "postgres") -> str:
        """psql over the private socket as the server's OS user: peer auth, map=local."""
        assert self.installation is not None
        result = self.installation.run(
            "psql",
            [
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.run),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                statement,
            ],
            check=False,
        )
        if result.returncode != 0:
            raise RestoreError(f"SQL failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout.strip()

    def wait_promoted(self, timeout: float) -> None:
        """restore.go waitUntilRecoveryFinishes: poll pg_is_in_recovery() until false."""
        deadline = time.monotonic() + timeout
        while True:
            if self.sql("SELECT pg_catalog.pg_is_in_recovery()") == "f":
                return
            self.log("Checking if the server is still in recovery: recovery=true")
            if time.monotonic() > deadline:
                raise RestoreError("while waiting for PostgreSQL to stop recovery mode: timeout")
            time.sleep(0.5)

    def controldata(self) -> dict[str, str]:
        assert self.installation is not None
        out = self.installation.run("pg_controldata", ["-D", str(self.data)], env={"LC_ALL": "C"})
        found = {}
        for line in out.stdout.splitlines():
            key, _, value = line.partition(":")
            found[key.strip()] = value.strip()
        return found

    def remove(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def restore_command(args: list[str]) -> str:
    """``barman-cloud-wal-restore <store> %f %p`` (CloudNativePG runs ``/controller/manager
    wal-restore``, which runs this tool with the same store and credentials)."""
    tool = shlex.join([str(tools.tool("barman-cloud-wal-restore")), *args])
    return f"{tool} %f %p"


def run_barman(name: str, args: list[str], env: Mapping[str, str], log: Callable[[str], None]):
    result = tools.run_tool(name, args, credentials=env, check=False)
    for line in (result.stderr or "").strip().splitlines()[-20:]:
        log(f"{name}: {line}")
    return result


def is_running(data: Path) -> bool:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
        return True
    except (ValueError, IndexError, OSError):
        return False


def processes_for(root: Path) -> list[int]:
    """PIDs of postgres processes whose command line names a directory under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"postgres" in cmdline and str(root).encode() in cmdline:
            found.append(int(entry.name))
    return found


def has_ssl(installation: pgbin.Installation) -> bool:
    """Whether this PostgreSQL build links OpenSSL (the embedded wheel's does not)."""
    import subprocess

    out = subprocess.run(
        ["ldd", str(installation.binary("postgres"))], capture_output=True, text=True, check=False
    )
    return "libssl" in out.stdout


class TlsRelay:
    """TLS for a PostgreSQL build without SSL: listens on ``address:5432``, answers the
    protocol's SSLRequest with 'S' (GSSENCRequest with 'N') and does the TLS handshake with
    the server certificate, or takes a direct TLS ClientHello (ALPN ``postgresql``, PostgreSQL
    17+), then relays the decrypted stream to the server on ``address:backend_port``
    (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL)."""

    SSL_REQUEST = (80877103).to_bytes(4, "big")
    GSS_REQUEST = (80877104).to_bytes(4, "big")

    def __init__(self, address: str, backend_port: int, cert: Path, key: Path) -> None:
        import socket
        import ssl
        import threading

        self.address, self.backend_port = address, backend_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3  # ssl_min_protocol_version
        self.context.load_cert_chain(str(cert), str(key))
        self.context.set_alpn_protocols(["postgresql"])
        self.listener = socket.create_server((address, PORT), reuse_port=False)
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._sockets: list = []
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"tls-{address}")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for sock in list(self._sockets):
            with _suppress():
                sock.close()

    def _serve(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            self._sockets.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _recv_exact(self, sock: Any, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def _handle(self, client: Any) -> None:
        import socket

        try:
            client.settimeout(30)
            first = client.recv(1, socket.MSG_PEEK)
            stream = client
            if first == b"\x16":  # direct TLS (sslnegotiation=direct)
                stream = self.context.wrap_socket(client, server_side=True)
            else:
                head = self._recv_exact(client, 8)
                while head[4:] == self.GSS_REQUEST:
                    client.sendall(b"N")
                    head = self._recv_exact(client, 8)
                if head[4:] == self.SSL_REQUEST:
                    client.sendall(b"S")
                    stream = self.context.wrap_socket(client, server_side=True)
                    head = b""
            backend = socket.create_connection((self.address, self.backend_port), timeout=30)
            self._sockets.append(backend)
            if head:
                backend.sendall(head)
            stream.settimeout(None)
            backend.settimeout(None)
            import threading

            threading.Thread(target=_pipe, args=(backend, stream), daemon=True).start()
            _pipe(stream, backend)
        except (OSError, ConnectionError):
            with _suppress():
                client.close()


def _pipe(source: Any, sink: Any) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with _suppress():
                sock.close()


def _suppress():
    import contextlib

    return contextlib.suppress(OSError)
