"""`make bench`: every benchmark, each printing ratios measured side by side in one run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "bench_restore.py",
    "bench_drill.py",
    "bench_checks.py",
    "bench_pgbackrest.py",
    "bench_barman.py",
]


def main() -> int:
    worst = 0
    for name in BENCHES:
        print(f"\n== {name}", flush=True)
        worst = max(
            worst, subprocess.run([sys.executable, str(HERE / name), *sys.argv[1:]]).returncode
        )
    return worst


if __name__ == "__main__":
    sys.exit(main())
