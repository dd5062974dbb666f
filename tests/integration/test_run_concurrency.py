"""Several `drillkit run`s at once in the default home: each finishes with its own verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def test_concurrent_runs_of_the_same_and_of_different_specs_each_pass(
    clean_scenario, workdir: Path
):
    repo, _truth = clean_scenario
    spec = yaml.safe_load((repo.parent / "drill.yaml").read_text())
    specs = {}
    for name in ("same", "other"):
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "drill": name, "report": {"path": str(workdir)}}))
        specs[name] = path
    env = dict(os.environ)
    env["DRILLKIT_STATE_DIR"] = str(workdir / "state")  # a fresh default home, none migrated
    env.pop("DRILLKIT_SIGNING_KEY", None)  # the runs create the local key together, too
    env.pop("DRILLKIT_RUN_HOME", None)
    runs = [("same", 1), ("same", 2), ("other", 3)]
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [DRILLKIT, "run", str(specs[name]), "--json", str(workdir / f"report-{n}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for name, n in runs
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    took = time.monotonic() - started
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "VERDICT: PASS" in output
    reports = [json.loads((workdir / f"report-{n}.json").read_text()) for _name, n in runs]
    assert [r["drill"] for r in reports] == ["same", "same", "other"]
    assert len({(r["dag_id"], r["run_id"]) for r in reports}) == 3
    homes = sorted((workdir / "state" / "run" / "homes").iterdir())
    assert len(homes) == 3  # one private home each, the migration done once in a template
    assert len(list((workdir / "state" / "run").glob("template-*/.migrated-*"))) == 1
    print(f"3 concurrent runs took {took:.1f} s")


def test_runs_in_one_named_home_take_turns(clean_scenario, workdir: Path):
    repo, _truth = clean_scenario
    spec = workdir / "drill.yaml"
    spec.write_text((repo.parent / "drill.yaml").read_text())
    home = workdir / "shared-home"
    processes = [
        subprocess.Popen(
            [DRILLKIT, "run", str(spec), "--dry-run", "--airflow-home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "VERDICT: DRY RUN" in output
