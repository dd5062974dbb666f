"""``make airflow``: Airflow 3 on this machine as separate services over an embedded PostgreSQL.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as their own processes with
the provider installed (its entry point loads the plugin). Two DAG bundles are loaded: the
repository's ``dags/`` and a demo drill on a real scenario. Ctrl-C stops everything, PostgreSQL
last. The e2e tests import this file by path and reuse ``LocalAirflow``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_STATE = Path(os.environ.get("DRILLKIT_AIRFLOW_DIR", "/tmp/drillkit-airflow"))
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"
# 2 cores, ~1 GB: 4 LocalExecutor workers run 3 drills at once (the api-server with one worker,
# one parsing process); every service is its own Python process of 150-250 MB.
DEFAULT_PARALLELISM = 4
Say = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether the api-server can bind ``port``. SO_REUSEADDR as uvicorn sets it: connections of
    a previous api-server still in TIME_WAIT do not hold the port, only a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listeners(port: int) -> list[str]:
    """``PID command`` of the processes listening on TCP ``port`` (from /proc/net/tcp[6])."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                found.append(f"{entry.name} {command[:120]}")
    return found


def choose_port(port: int, *, wait: float = 10.0) -> int:
    """``port`` once it is free (a previous stack may still be stopping: wait up to ``wait`` s),
    else SystemExit naming who holds it: the URL never moves silently to another port."""
    deadline = time.monotonic() + wait
    while not _port_free(port):
        if time.monotonic() >= deadline:
            holders = "; ".join(listeners(port)) or "a process this user cannot see"
            raise SystemExit(
                f"make airflow: port {port} is in use ({holders}). Stop that process, or "
                f"choose another port: make airflow AIRFLOW_PORT=8081"
            )
        time.sleep(0.5)
    return port


# -- the metadata database -------------------------------------------------------------------
@dataclass
class MetadataDB:
    """An embedded PostgreSQL (drillkit.pgbin) on a unix socket only, in ``directory``."""

    directory: Path
    durable: bool = True  # fsync on: a local Airflow keeps its history across restarts

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        preferred = self.directory / "run"
        if len(str(preferred)) <= 90:  # sun_path is 108 bytes with "/.s.PGSQL.5432"
            return preferred
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"dk-airflow-{digest}"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@/airflow?host={self.socket_dir}"

    def start(self, say: Say = print) -> None:
        from drillkit import pgbin

        self.directory.mkdir(parents=True, exist_ok=True)
        pgbin.require_reachable(self.directory, "Airflow state directory")
        pgbin.give_to_server_user(self.directory)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        pgbin.give_to_server_user(self.socket_dir)
        if not (self.data / "PG_VERSION").exists():
            say(f"metadata database: initdb {self.data}")
            pgbin.run(
                "initdb", ["-D", str(self.data), "-U", "airflow", "--auth=trust", "-E", "UTF8"]
            )
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# drillkit: Airflow metadata, reachable only through its socket\n"
                    f"listen_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\n"
                    "shared_buffers = 32MB\nmax_connections = 100\ntimezone = 'UTC'\n"
                    f"fsync = {'on' if self.durable else 'off'}\n"
                    f"synchronous_commit = {'on' if self.durable else 'off'}\n"
                )
        if self.running():  # left by a run that was killed: restart it cleanly
            self.stop()
        pgbin.run(
            "pg_ctl",
            ["-D", str(self.data), "-l", str(self.directory / "server.log"), "-w", "start"],
        )
        exists = self.psql("select 1 from pg_database where datname = 'airflow'", db="postgres")
        if not exists.strip():
            self.psql("create database airflow", db="postgres")

    def psql(self, query: str, *, db: str = "airflow") -> str:
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), user="airflow", dbname=db)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return "\n".join(str(r[0]) for r in cur.fetchall()) if cur.description else ""
        finally:
            conn.close()

    def running(self) -> bool:
        from drillkit import pgbin

        if not (self.data / "postmaster.pid").exists():
            return False
        return pgbin.run("pg_ctl", ["-D", str(self.data), "status"], check=False).returncode == 0

    def stop(self) -> None:
        from drillkit import pgbin
        from drillkit.sandbox.local import stop_server

        if not (self.data / "postmaster.pid").exists():
            return
        result = pgbin.run(
            "pg_ctl", ["-D", str(self.data), "-m", "fast", "-w", "stop"], check=False
        )
        if result.returncode != 0:
            stop_server(self.data)  # immediate, then SIGKILL


# -- configuration ---------------------------------------------------------------------------
def load_secrets(path: Path) -> dict[str, str]:
    """The JWT secret shared by every service and the drill signing key, kept 0600."""
    if path.exists():
        return dict(json.loads(path.read_text()))
    values = {"jwt_secret": secrets.token_hex(32), "signing_key": secrets.token_hex(32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(values, handle)
    return values


def airflow_env(
    *,
    home: Path,
    db_url: str,
    port: int,
    bundles: Mapping[str, Path],
    parallelism: int,
    secret_values: Mapping[str, str],
    base: Mapping[str, str],
    refresh_interval: int = 5,
) -> dict[str, str]:
    """The environment of every Airflow process: ``base`` less its Airflow settings, plus ours."""
    # PYTHONPATH goes too: the repository's top-level plugins/ must never be importable under
    # a second name (Airflow would see the plugin twice).
    keep = {
        k: v
        for k, v in base.items()
        if not k.startswith(("AIRFLOW", "DRILLKIT_SIGNING_KEY")) and k != "PYTHONPATH"
    }
    bundle_list = [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path), "refresh_interval": refresh_interval},
        }
        for name, path in bundles.items()
    ]
    base_url = f"http://127.0.0.1:{port}"
    return {
        **keep,
        # Services spawn `airflow` and Python helpers: the virtualenv's bin first.
        "PATH": f"{BIN}:{keep.get('PATH', '/usr/bin:/bin')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_FOLDER": str(next(iter(bundles.values()))),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__API__BASE_URL": f"{base_url}/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_values["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundle_list),
        # New drill files show up in seconds, not the default 5 minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(refresh_interval),
        # An edited spec: its loader .py does not change when its YAML does, so the edit shows
        # when Airflow parses the loader again, every min_file_process_interval (default 30 s).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(refresh_interval),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_STORAGE_PATH": str(home / "bundles"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # The signing key reaches tasks as a connection (masked in logs), never as a printed value.
        "AIRFLOW_CONN_DRILLKIT_SIGNING": json.dumps(
            {"conn_type": "generic", "password": secret_values["signing_key"]}
        ),
    }


def write_cli_env(path: Path, env: Mapping[str, str]) -> None:
    """``. airflow.env`` gives a shell the same Airflow (CLI commands), without the secrets."""
    secret = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_CONN_DRILLKIT_SIGNING")
    lines = [
        f"export {k}={shlex.quote(v)}"
        for k, v in sorted(env.items())
        if k.startswith("AIRFLOW") and k not in secret
    ]
    lines.append(f"export PATH={shlex.quote(env['PATH'])}")
    path.write_text("\n".join(lines) + "\n")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def airflow(args: list[str], env: Mapping[str, str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env=dict(env), **kwargs)


# -- the services ----------------------------------------------------------------------------
@dataclass
class LocalAirflow:
    """Airflow's four services over an embedded PostgreSQL, everything under ``state``."""

    state: Path
    port: int
    bundles: dict[str, Path]
    parallelism: int = DEFAULT_PARALLELISM
    durable: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.state / "airflow"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> MetadataDB:
        return MetadataDB(self.state / "pg", durable=self.durable)

    def prepare(self, say: Say = print) -> None:
        """Start the metadata database and migrate it (the services are not started yet)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        stop_leftovers(self.state)
        self.db.start(say)
        self.env = airflow_env(
            home=self.home,
            db_url=self.db.url,
            port=self.port,
            bundles=self.bundles,
            parallelism=self.parallelism,
            secret_values=load_secrets(self.state / "secrets.json"),
            base=self.base_env,
        )
        self.env.setdefault("DRILLKIT_SANDBOX_ROOT", str(self.state / "sandboxes"))
        self.env.update(self.extra_env)
        write_cli_env(self.state / "airflow.env", self.env)
        say("metadata database: airflow db migrate")
        result = airflow(["db", "migrate"], self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stderr[-3000:]}")

    def spawn(self) -> None:
        for name in SERVICES:
            args = [name]
            if name == "api-server":
                args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
            elif name in ("scheduler", "triggerer"):
                # One machine, one log folder: the api-server reads task logs from disk, so the
                # log-serving subprocesses (~140 MB each, fixed ports) are not needed.
                args.append("--skip-serve-logs")
            with (self.logs / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [str(BIN / "airflow"), *args],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: stopped as one, after Ctrl-C
                    preexec_fn=_die_with_parent,
                )
        pids = {name: proc.pid for name, proc in self.processes.items()}
        (self.state / "pids.json").write_text(json.dumps(pids))

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as answer:
                return dict(json.loads(answer.read()))
        except (OSError, ValueError):
            return {}

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Seconds until api-server, scheduler, dag-processor and triggerer all report healthy."""
        started = time.monotonic()
        while True:
            self.check_alive()
            health = self.health()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if health and all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"Airflow not healthy after {timeout:.0f} s: {health}")
            time.sleep(0.5)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}; its log "
                    f"{self.logs / (name + '.log')} ends:\n{tail(self.logs / (name + '.log'))}"
                )

    def credentials(self) -> tuple[str, str]:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        return ADMIN, str(json.loads(passwords.read_text())[ADMIN])

    def token(self) -> str:
        user, password = self.credentials()
        request = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": user, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(json.loads(answer.read())["access_token"])

    def start(self, say: Say = print) -> None:
        self.prepare(say)
        say(f"starting {', '.join(SERVICES)} (LocalExecutor, parallelism {self.parallelism})")
        self.spawn()

    def stop(self, grace: float = 15.0, say: Say | None = None) -> None:
        """SIGTERM every service's process group, wait, SIGKILL what is left, then PostgreSQL.

        The scheduler waits for running tasks on SIGTERM: a drill still running after
        ``grace`` is killed, and its sandbox is left for ``drillkit gc``."""
        killed = stop_groups(self.processes, grace)
        if killed and say:
            say(
                f"killed after {grace:.0f} s: {', '.join(killed)} (interrupted drills leave "
                "their sandboxes to `drillkit gc`)"
            )
        self.processes.clear()
        # Task runners live in process groups of their own: whatever of this home is left.
        stop_pids([p for p in processes_of(self.home, []) if p != os.getpid()], grace=5)
        stopped = stop_sandbox_servers(Path(self.env.get("DRILLKIT_SANDBOX_ROOT", "/nonexistent")))
        if stopped and say:
            say(
                f"stopped the servers of {len(stopped)} sandbox(es) of interrupted or kept drills "
                f"({', '.join(stopped)}); `drillkit gc` deletes them once their TTL has passed"
            )
        with contextlib.suppress(FileNotFoundError):
            (self.state / "pids.json").unlink()
        self.db.stop()

    def __enter__(self) -> LocalAirflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_groups(processes: Mapping[str, subprocess.Popen], grace: float) -> list[str]:
    """SIGTERM each process group, wait up to ``grace`` s, SIGKILL them; the names killed."""
    for proc in processes.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = []
    for name, proc in processes.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(name)
        # Stragglers, and children that outlived their service in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    return killed


def stop_pids(pids: list[int], grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_sandbox_servers(root: Path) -> list[str]:
    """Stop every sandbox server under ``root``; labels and data stay for ``drillkit gc``."""
    from drillkit.sandbox.local import stop_server

    if not root.is_dir():
        return []
    return [d.name for d in sorted(root.iterdir()) if stop_server(d / "data")]


def stop_leftovers(state: Path) -> None:
    """Service groups a killed launcher left behind (recorded in pids.json, same Airflow home)."""
    pids_file = state / "pids.json"
    if not pids_file.exists():
        return
    home = f"AIRFLOW_HOME={state / 'airflow'}".encode()
    for pid in json.loads(pids_file.read_text()).values():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if home in environ:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pids_file.unlink()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def processes_of(home: Path, roots: list[Path], *, tree_of: int | None = None) -> list[int]:
    """Every process of this Airflow home (by environment), PostgreSQL servers whose data
    directory lies under one of ``roots`` (pg_ctl detaches them) with all their descendants,
    and with ``tree_of`` that process and every descendant of it (walked from /proc)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found: set[int] = set()
    postmasters: set[int] = set()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.add(pid)
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        joined = b" ".join(cmdline)
        if cmdline[0].endswith(b"/postgres") and any(str(r).encode() in joined for r in roots):
            postmasters.add(pid)
    tops = postmasters | ({tree_of} if tree_of is not None and tree_of in parents else set())
    return sorted(found | descendants(parents, tops))


def descendants(parents: Mapping[int, int], tops: set[int]) -> set[int]:
    """``tops`` and every process below them in the (pid -> parent pid) tree."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    seen, todo = set(), list(tops)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pids``, in MiB; PSS counts shared pages once."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


# -- the demo drill --------------------------------------------------------------------------
def build_demo(state: Path, say: Say = print) -> tuple[Path, dict[str, Any]]:
    """A scenario (once) and its drill in the demo bundle, unpaused when created."""
    import yaml

    from drillkit.scenario import ScenarioOptions, create_scenario
    from drillkit.spec import loader_name, loader_source

    scenario = state / "demo"
    if not (scenario / "truth.json").exists():
        shutil.rmtree(scenario, ignore_errors=True)
        create_scenario(scenario, ScenarioOptions(drill_name="demo"), say=say)
    truth = json.loads((scenario / "truth.json").read_text())
    spec = yaml.safe_load((scenario / "drill.yaml").read_text())
    spec["paused"] = False  # is_paused_upon_creation=False: ready to trigger
    dags = state / "dags"
    (dags / "drills").mkdir(parents=True, exist_ok=True)
    spec_path = dags / "drills" / "demo.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (dags / loader_name(spec_path)).write_text(loader_source("drills/demo.yaml"))
    return spec_path, truth


@contextlib.contextmanager
def single_instance(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with (state / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another `make airflow` is running on {state}") from None
        yield


def _banner(stack: LocalAirflow, truth: dict[str, Any], out: TextIO) -> None:
    user, password = stack.credentials()
    pids = processes_of(stack.home, [stack.state], tree_of=os.getpid())
    rss, pss = memory_mib(pids)
    target = truth["targets"][len(truth["targets"]) // 2]["target"]
    print(
        f"""
Airflow {stack.url}/  user {user}  password {password}
  DAGs: the repository's dags/ and drill_demo (unpaused, manual), AIRFLOW_HOME={stack.home}
  trigger the demo drill from a shell:
    . {stack.state / "airflow.env"}
    airflow dags trigger drill_demo --conf '{{"target_time": "{target}"}}'
  or in the UI: drill_demo > Trigger, "Recovery target" {target}
  service logs: {stack.logs}/
  memory of every process it started ({len(pids)}, this launcher and PostgreSQL included):
    PSS {pss:.0f} MiB (shared pages counted once), RSS {rss:.0f} MiB (shared pages counted
    in every process)
Ctrl-C stops everything.""",
        file=out,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="%(default)s")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--parallelism", type=int, default=DEFAULT_PARALLELISM)
    parser.add_argument("--fresh", action="store_true", help="delete the state directory first")
    args = parser.parse_args(argv)
    state = args.state.absolute()
    if args.fresh and state.exists():
        with single_instance(state):
            MetadataDB(state / "pg").stop()
        shutil.rmtree(state)
    port = choose_port(args.port)
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    with single_instance(state):
        _spec, truth = build_demo(state)
        stack = LocalAirflow(
            state=state,
            port=port,
            bundles={"drillkit-examples": REPO / "dags", "drillkit-demo": state / "dags"},
            parallelism=args.parallelism,
        )
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            stack.start()
            print(f"waiting for the services (logs in {stack.logs}) ...", flush=True)
            deadline = time.monotonic() + 300
            while not stop_requested:
                with contextlib.suppress(TimeoutError):
                    stack.wait_healthy(timeout=1)
                    _banner(stack, truth, sys.stdout)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the services were not healthy within 300 s: {stack.logs}")
            while not stop_requested:
                stack.check_alive()
                time.sleep(1)
        except (RuntimeError, OSError) as exc:
            print(f"make airflow: {exc}", file=sys.stderr)
            return 1
        finally:
            print("stopping the services and the metadata database ...", flush=True)
            stack.stop(say=print)
            print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
