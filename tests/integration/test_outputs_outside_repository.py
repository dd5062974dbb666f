"""Outputs never land under a catalog path: each is refused up front (exit 2, the setting named,
no traceback) and the repository is byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from restorekit import tree_digest

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def drillkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DRILLKIT, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def repo_and_spec(damaged_scenario, workdir: Path) -> tuple[Path, Path]:
    repo, _truth = damaged_scenario()  # a copy of its own: nothing shared is at risk
    spec = yaml.safe_load((workdir / "drill.yaml").read_text())
    spec["catalog"]["path"] = str(repo)
    spec.pop("report", None)
    path = workdir / "drill.yaml"
    path.write_text(yaml.safe_dump(spec))
    return repo, path


def _refused(result: subprocess.CompletedProcess[str], setting: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert setting in result.stderr and "inside the backup repository" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "relative", "setting"),
    [
        ("--json", "report.json", "drillkit run --json"),
        ("--junit", "wal/report.xml", "drillkit run --junit"),
    ],
)
def test_run_outputs_inside_the_repository_are_refused(repo_and_spec, flag, relative, setting):
    repo, spec = repo_and_spec
    before = tree_digest(repo)
    _refused(drillkit("run", str(spec), flag, str(repo / relative)), setting)
    assert tree_digest(repo) == before
    assert not (repo / relative).exists()


def test_a_link_into_the_repository_is_seen_through(repo_and_spec, workdir: Path):
    repo, spec = repo_and_spec
    alias = workdir / "reports"
    alias.symlink_to(repo / "base")
    before = tree_digest(repo)
    _refused(drillkit("run", str(spec), "--json", str(alias / "r.json")), "drillkit run --json")
    assert tree_digest(repo) == before


def test_report_path_inside_the_repository_is_refused(repo_and_spec):
    repo, spec = repo_and_spec
    document = yaml.safe_load(spec.read_text())
    document["report"] = {"path": str(repo / "reports")}
    spec.write_text(yaml.safe_dump(document))
    before = tree_digest(repo)
    _refused(drillkit("run", str(spec)), "report.path")
    assert tree_digest(repo) == before
    assert not (repo / "reports").exists()


def test_state_dir_inside_the_repository_is_refused(repo_and_spec):
    repo, spec = repo_and_spec
    before = tree_digest(repo)
    env = {"DRILLKIT_STATE_DIR": str(repo / "state")}
    _refused(drillkit("run", str(spec), env=env), "DRILLKIT_STATE_DIR")
    _refused(drillkit("catalog", str(repo), env=env), "DRILLKIT_STATE_DIR")
    assert tree_digest(repo) == before
    assert not (repo / "state").exists()


def test_sandbox_root_inside_the_repository_is_refused(repo_and_spec):
    repo, spec = repo_and_spec
    before = tree_digest(repo)
    env = {"DRILLKIT_SANDBOX_ROOT": str(repo / "wal" / "sandboxes")}
    _refused(drillkit("run", str(spec), env=env), "DRILLKIT_SANDBOX_ROOT")
    _refused(drillkit("restore", str(repo), env=env), "DRILLKIT_SANDBOX_ROOT")
    assert tree_digest(repo) == before
    assert not (repo / "wal" / "sandboxes").exists()
