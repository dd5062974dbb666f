"""Barman Cloud stores drilled for real: barman-cloud tools, embedded PostgreSQL 18, moto S3."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drillkit import drill
from drillkit.exceptions import NoRestorableBackupError
from drillkit.restore import restore_and_prove
from drillkit.timeutil import parse_target_time

pytestmark = pytest.mark.integration


def _select(catalog, **kwargs):
    args = {"policy": "latest", "target": None, "rpo": timedelta(0), "exclude": [], "pinned": None}
    return drill.select(catalog, **{**args, **kwargs})


@pytest.mark.parametrize("which", [0, -1])
def test_ground_truth_pitr_from_the_store(barman_clean, which):
    directory, truth, catalog = barman_clean
    target = truth["targets"][which]
    result = restore_and_prove(
        catalog=catalog,
        target=target["target"],
        policy="latest",
        rpo="0s",
        truth_path=directory / "truth.json",
        keep=False,
        say=lambda _m: None,
    )
    assert result["verdict"] == "PASS", result["summary"]
    assert f"id={target['max_id']} present; id={target['absent_id']} absent" in result["summary"]
    expected = [b["backup_id"] for b in truth["backups"] if b["after_batch"] <= target["batch"]][-1]
    assert result["coordinate"]["backup_id"] == expected
    assert result["coordinate"]["backup"]["tool"] == "barman-cloud"
    # No manifest in a barman-cloud backup: said honestly, and the checks carried the proof.
    codes = [f["code"] for f in result["sandbox"]["findings"]]
    assert codes == ["BACKUP_UNVERIFIABLE"]
    kinds = {r["kind"]: r["status"] for r in result["validation"]["results"]}
    assert kinds == {"pitr": "passed", "integrity": "passed"}


def test_interrupted_backup_is_listed_and_never_chosen(barman_damaged):
    _directory, truth, catalog = barman_damaged
    interrupted = truth["interrupted_backup"]
    coordinate = _select(catalog)
    assert coordinate["backup_id"] != interrupted
    row = next(c for c in coordinate["candidates"] if c["backup_id"] == interrupted)
    assert row["decision"] == "rejected" and row["code"] == "BACKUP_INCOMPLETE"
    assert "status STARTED" in row["reason"]
    with pytest.raises(NoRestorableBackupError) as refused:
        _select(catalog, policy="pinned", pinned=interrupted)
    assert refused.value.code == "BACKUP_INCOMPLETE"
    assert "status STARTED" in str(refused.value)


def test_deleted_wal_object_is_a_named_gap(barman_damaged):
    _directory, truth, catalog = barman_damaged
    oldest = truth["backups"][0]["backup_id"]
    missing = truth["batches"][1]["segment_after"]
    target = parse_target_time(truth["targets"][2]["target"])  # needs WAL past batch 1
    with pytest.raises(NoRestorableBackupError) as refused:
        _select(catalog, policy="pinned", pinned=oldest, target=target)
    assert refused.value.code == "WAL_GAP"
    assert missing in str(refused.value)
    # Before the gap the same backup still restores.
    early = _select(catalog, policy="pinned", pinned=oldest, target=parse_target_time(
        truth["targets"][0]["target"]
    ))  # fmt: skip
    assert early["backup_id"] == oldest
