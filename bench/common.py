"""Small helpers the benchmark scripts share: timing, cache control, work directories, reporting.

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
