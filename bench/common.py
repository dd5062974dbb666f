"""Small helpers the benchmark scripts share: timing, cache control, work directories, the
restore sides (drillkit's sandbox, a DBA's baseline) and reporting.

Benches are standalone scripts (``python bench/NAME.py``); they import this module by path.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2

from drillkit import pgbin

# PostgreSQL runs as an unprivileged user: its files must live where that user can reach them
# (a virtualenv or a home directory under /root is not).
WORK_PARENTS = ("/var/tmp", "/tmp")


class Stopwatch:
    """Named phase durations of one run, in seconds."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def work_dir(prefix: str, *, stable_name: str | None = None) -> tuple[Path, bool]:
    """A directory the PostgreSQL OS user can traverse (mode 0755); True when it already existed.

    With ``stable_name`` the same path is used on every run, so a kept build can be reused.
    """
    parent = next((p for p in WORK_PARENTS if os.path.isdir(p)), tempfile.gettempdir())
    if stable_name:
        path = Path(parent) / f"{prefix}{stable_name}"
        existed = path.is_dir()
        path.mkdir(exist_ok=True)
    else:
        path, existed = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)), False
    os.chmod(path, 0o755)
    return path, existed


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def drop_caches() -> str | None:
    """Sync and drop the page cache; None when done, else why it could not be done."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError as exc:
        return f"{exc.strerror or exc} writing /proc/sys/vm/drop_caches"
    return None


def read_all(paths: Iterable[Path]) -> int:
    """Read every file under ``paths`` once (warms the page cache equally when it cannot be
    dropped); return the bytes read."""
    total = 0
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    total += len(chunk)
    return total


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def interleaved(runs: int) -> Iterator[tuple[int, str]]:
    """``(run, side)`` for each measured run of "drillkit" and "baseline", noted on stderr; who
    goes first alternates, so drift on a shared machine hits both sides alike."""
    for i in range(runs):
        for side in ("drillkit", "baseline") if i % 2 == 0 else ("baseline", "drillkit"):
            note(f"run {i + 1}/{runs}: {side}")
            yield i, side


def sandbox_id(index: int) -> str:
    return f"bench-{index}-{os.getpid()}"


def provision(backend: Any, coordinate: dict, sandbox: str) -> dict:
    """drillkit's side: ``backend`` (a LocalSandboxBackend) restores ``coordinate`` into
    sandbox ``sandbox``, ready; its record."""
    return backend.provision(
        coordinate,
        drill_id="bench",
        name="bench",
        ttl=timedelta(hours=1),
        sandbox_id=sandbox,
    )


def time_sandbox(
    work: Path, coordinate: dict, index: int, *, start_timeout: float
) -> tuple[float, int]:
    """drillkit's side, unchanged: seconds to a ready local sandbox of ``coordinate`` (under
    ``work``/sandboxes), and its max(id) of orders; the sandbox is torn down."""
    from drillkit.sandbox.local import LocalSandboxBackend

    backend = LocalSandboxBackend(root=work / "sandboxes", start_timeout=start_timeout)
    sandbox = sandbox_id(index)
    started = time.perf_counter()
    try:
        record = provision(backend, coordinate, sandbox)
        took = time.perf_counter() - started
        return took, max_id(record["endpoints"]["postgres"]["host"])
    finally:
        backend.teardown(sandbox)


def max_id(host: str) -> int:
    """max(id) of the scenario's orders table on the server at ``host`` (its socket directory)."""
    conn = psycopg2.connect(host=host, user="postgres", dbname="app")
    try:
        with conn.cursor() as cur:
            cur.execute("select max(id) from orders")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def baseline_dir(work: Path, index: int, *, mode: int) -> Path:
    """A fresh ``work``/baseline-INDEX with ``mode``, owned by the PostgreSQL OS user."""
    user = pgbin.os_user()
    directory = work / f"baseline-{index}"
    remove_tree(directory)
    directory.mkdir(mode=mode)
    if user:
        os.chown(directory, user.uid, user.gid)
    return directory


def write_recovery(data: Path, settings: Mapping[str, str]) -> None:
    """Append ``settings`` to ``data``'s postgresql.auto.conf and ask for recovery
    (recovery.signal, owned by the PostgreSQL OS user), as a DBA would."""
    user = pgbin.os_user()
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.writelines(f"{k} = '{v}'\n" for k, v in settings.items())
    (data / "recovery.signal").write_text("")
    if user:
        os.chown(data / "recovery.signal", user.uid, user.gid)


def wait_promoted(host: str, timeout: float | None = None) -> None:
    """Poll pg_is_in_recovery() in one open session until the server at ``host`` is promoted;
    TimeoutError after ``timeout`` seconds when given."""
    conn = psycopg2.connect(host=host, user="postgres", dbname="postgres")
    conn.autocommit = True
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while deadline is None or time.monotonic() < deadline:
                cur.execute("select pg_is_in_recovery()")
                if not cur.fetchone()[0]:
                    return
                time.sleep(0.01)
        raise TimeoutError(f"baseline not promoted within {timeout:.0f} s")
    finally:
        conn.close()


def say_runs(ours: Iterable[float], bare: Iterable[float], baseline: str) -> None:
    """One line a measured run: drillkit's seconds | ``baseline``'s."""
    for i, (d, b) in enumerate(zip(ours, bare, strict=True)):
        say(f"  run {i + 1}: drillkit {d:.2f} s | {baseline} {b:.2f} s")


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def ratio_text(ours: float, baseline: float, goal: float) -> str:
    """``ratio 1.08x (goal <= 1.2x)``, flagged when over the goal."""
    ratio = ours / baseline if baseline > 0 else float("inf")
    flag = "" if ratio <= goal else ", OVER GOAL"
    return f"ratio {ratio:.2f}x (goal <= {goal:g}x{flag})"


def say(message: str) -> None:
    print(message, flush=True)


def note(message: str) -> None:
    """Progress chatter on stderr, so stdout holds only the report."""
    print(f"  .. {message}", file=sys.stderr, flush=True)
