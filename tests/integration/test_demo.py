"""`make demo` as a newcomer runs it: twice in a row, with only the system's PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _demo(directory: Path) -> subprocess.CompletedProcess[str]:
    """What `make demo DEMO_DIR=...` runs: the venv's python on scripts/demo.py, the venv's
    bin NOT on PATH, none of the test session's drillkit or Airflow settings."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), str(directory)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_make_demo_works_twice_in_a_row(workdir: Path):
    demo = workdir / "demo"
    outputs = []
    for attempt in (1, 2):
        result = _demo(demo)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"demo run {attempt} failed:\n{output[-4000:]}"
        assert "Traceback" not in output, output[-4000:]
        assert "VERDICT: PASS" in output and "sandboxes left: none" in output
        outputs.append(output)
    assert "removing the previous demo" in outputs[1]
    assert not [p for p in (demo / "sandboxes").glob("*")]
