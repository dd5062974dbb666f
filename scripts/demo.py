"""`make demo`: a real restore drill end to end, in one directory, leaving nothing running.

Builds a scenario whose newest backup is corrupt, runs the drill DAG to a target between two
batches (primary fails its checksum gate, secondary restores the older backup plus WAL), prints
the report, then shows a dry run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def reachable_demo_dir(requested: Path) -> Path:
    """PostgreSQL runs as an unprivileged user when we are root: it must reach the directory."""
    from drillkit import pgbin

    user = pgbin.os_user()
    probe = requested if requested.exists() else requested.parent
    if user is None or pgbin.traversable_by(probe, user):
        return requested
    fallback = Path("/var/tmp/drillkit-demo")
    print(
        f"note: {requested} is not reachable by the PostgreSQL user {user.name}; using {fallback}"
    )
    return fallback


def remove_previous_demo(demo: Path) -> None:
    """Stop every sandbox an earlier (perhaps killed) demo left running, then delete it all.

    In process, with the virtualenv's drillkit: not a `drillkit` looked up on PATH, which
    `make demo` does not extend. Its sandboxes are all the demo's own, so none is spared
    for its TTL."""
    from datetime import UTC, datetime, timedelta

    from drillkit.sandbox.gc import collect_local

    print(f"removing the previous demo in {demo}", flush=True)
    if (demo / "sandboxes").exists():
        later = datetime.now(UTC) + timedelta(days=36500)
        stopped = collect_local(root=demo / "sandboxes", now=later)
        if stopped:
            print(f"stopped {len(stopped)} sandbox(es) it left: {[s['id'] for s in stopped]}")
    shutil.rmtree(demo)


def main() -> int:
    demo = reachable_demo_dir(Path(sys.argv[1] if len(sys.argv) > 1 else "demo").absolute())
    env = dict(
        os.environ,
        DRILLKIT_STATE_DIR=str(demo / "state"),
        DRILLKIT_SANDBOX_ROOT=str(demo / "sandboxes"),
    )
    # The virtualenv's own drillkit, never one found (or not) on PATH.
    bin_dir = Path(sys.executable).parent
    if demo.exists():
        remove_previous_demo(demo)

    def drillkit(*args: str) -> int:
        print(f"\n$ drillkit {' '.join(args)}", flush=True)
        return subprocess.run([str(bin_dir / "drillkit"), *args], env=env).returncode

    scenario = demo / "scenario"
    code = drillkit("scenario", "create", str(scenario), "--corrupt-newest")
    if code:
        return code
    truth = json.loads((scenario / "truth.json").read_text())
    target = truth["targets"][-1]
    print(
        f"\nground truth: at {target['target']} rows up to id {target['max_id']} existed and "
        f"id {target['absent_id']} did not; the newest backup is corrupt"
    )
    drillkit("catalog", str(scenario / "repo"))
    spec = str(scenario / "drill.yaml")
    code = drillkit(
        "run", spec, "--target-time", target["target"], "--json", str(demo / "report.json")
    )
    print(f"\ndrill exit code {code} (0 PASS, 1 FAIL, 2 COULD NOT VERIFY)")
    dry = drillkit("run", spec, "--target-time", target["target"], "--dry-run")
    print(f"\ndry run exit code {dry}: nothing was restored")
    leftovers = (
        [p.name for p in (demo / "sandboxes").glob("*")] if (demo / "sandboxes").exists() else []
    )
    print(f"sandboxes left: {leftovers or 'none'}; everything is under {demo}")
    return code or dry or (1 if leftovers else 0)


if __name__ == "__main__":
    sys.exit(main())
