"""``drillkit run`` (the real Airflow DAG) on a damaged Barman Cloud store: the corrupt newest
backup fails its tier, the next one passes, and the store only ever sees list and get requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from objectstore import CREDENTIALS, READ_METHODS

pytestmark = pytest.mark.integration
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def _files_holding(roots: list[Path], needle: bytes) -> list[str]:
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if needle in path.read_bytes():
                        hits.append(str(path))
                except OSError:
                    continue
    return hits


def test_drill_run_falls_back_and_never_writes_to_the_store(
    barman_damaged, object_store, workdir: Path
):
    directory, truth, _catalog = barman_damaged
    newest, previous = truth["backups"][-1]["backup_id"], truth["backups"][-2]["backup_id"]
    before = object_store.listing("drills")
    home, report = workdir / "airflow-home", workdir / "report.json"
    env = {**os.environ, **CREDENTIALS, "DRILLKIT_RUN_HOME": str(home)}
    with object_store.recording() as requests_seen:
        result = subprocess.run(
            [DRILLKIT, "run", str(directory / "drill.yaml"), "--json", str(report)],
            capture_output=True,
            text=True,
            timeout=1500,
            env=env,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(report.read_text())
    assert verdict["verdict"] == "PASS"
    tiers = {t["tier"]: t for t in verdict["tiers"]}
    assert tiers["primary"]["backup_id"] == newest
    assert tiers["primary"]["status"] == "failed"
    # The flipped bytes in the orders table: the full read (integrity check) found them.
    primary_codes = {f["code"] for f in tiers["primary"]["findings"]}
    assert "DATA_CORRUPTION" in primary_codes, tiers["primary"]
    assert tiers["secondary"]["backup_id"] == previous
    assert tiers["secondary"]["status"] == "passed"
    assert truth["interrupted_backup"] not in {t["backup_id"] for t in verdict["tiers"]}
    codes = {f["code"] for f in tiers["secondary"]["findings"]}
    assert "BACKUP_UNVERIFIABLE" in codes  # said honestly; the checks carried the proof

    # Read-only towards the store: the server's own log holds only GET/HEAD, and every object
    # is still there with the same ETag.
    assert requests_seen, "the recorder saw no request at all: the log proves nothing"
    methods = {entry["method"] for entry in requests_seen}
    assert methods <= READ_METHODS, sorted(methods)
    assert object_store.listing("drills") == before

    # Credentials never land in what drillkit writes: report, Airflow home (XCom, task logs),
    # state, sandboxes, the scenario directory, stdout and stderr.
    # The search itself works: the server's request log holds the (public) access key id.
    access_key = CREDENTIALS["AWS_ACCESS_KEY_ID"].encode()
    assert _files_holding([object_store.log_path], access_key) == [str(object_store.log_path)]
    secret = CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode()
    roots = [report, home, Path(os.environ["DRILLKIT_STATE_DIR"]), directory]
    roots.append(Path(os.environ["DRILLKIT_SANDBOX_ROOT"]))
    for needle in (secret, access_key):
        assert _files_holding(roots, needle) == []
        assert needle.decode() not in result.stdout + result.stderr
