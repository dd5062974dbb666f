"""Space first: a sandbox root too small for the backup is COULD NOT VERIFY (SANDBOX_NO_SPACE, with
needed, free and the path), never a FAIL blamed on the backups; so is a disk that fills up during
the copy or the WAL replay. The sandbox root is a small tmpfs mounted for the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from restorekit import select, tree_digest

from drillkit import gate
from drillkit.catalog.links import scan_backup
from drillkit.sandbox import local as local_module
from drillkit.sandbox.gc import collect_local
from drillkit.sandbox.local import LocalSandboxBackend
from drillkit.sandbox.space import NoSpaceError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[callable]:
    """Mount tmpfs file systems of a given size; servers stopped and unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size_mb: int) -> Path:
        path = workdir / f"disk-{len(mounts)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
            check=True,
        )
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        collect_local(root=path, now=local_module.utcnow() + timedelta(days=3650))
        subprocess.run(["umount", str(path)], check=True)


def _judged(exc: NoSpaceError) -> tuple[str, str]:
    """What the gate and the report make of a provisioning task that raised ``exc``."""
    judgement = gate.judge_tier(
        "primary",
        selected=True,
        coordinate={"backup_id": "b"},
        sandbox=None,
        validation=None,
        errors=[exc.to_dict()],
        rto_seconds=3600,
        dry_run=False,
    )
    return judgement.status, gate.overall_verdict([judgement])


def test_a_backup_larger_than_the_free_space_is_not_copied(clean_scenario, small_disk):
    repo, truth = clean_scenario
    before = tree_digest(repo)
    root = small_disk(20)
    coordinate = select(repo, truth["targets"][-1]["target"])
    backend = LocalSandboxBackend(root=root)
    with pytest.raises(NoSpaceError) as caught:
        backend.provision(coordinate, drill_id="t", name="space", ttl=timedelta(hours=1))
    error = caught.value
    assert error.code == "SANDBOX_NO_SPACE"
    backup_bytes = scan_backup(Path(coordinate["backup_path"])).size_bytes
    assert error.details["needed_bytes"] >= backup_bytes
    assert error.details["free_bytes"] <= 20 * 2**20
    assert str(root) in error.details["path"]
    assert (
        "needed" in str(error)
        and "free" in str(error)
        and "Not a problem of the backup" in (str(error))
    )
    assert not any((d / "data").exists() for d in root.iterdir()), "nothing was copied"
    assert _judged(error) == ("error", "COULD NOT VERIFY")
    assert tree_digest(repo) == before


def test_the_command_line_exits_2_not_1(clean_scenario, small_disk):
    repo, truth = clean_scenario
    before = tree_digest(repo)
    root = small_disk(20)
    result = subprocess.run(
        [DRILLKIT, "restore", str(repo), "--target-time", truth["targets"][-1]["target"]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DRILLKIT_SANDBOX_ROOT": str(root)},
    )
    assert result.returncode == 2, result.stderr
    assert "SANDBOX_NO_SPACE" in result.stderr and "Traceback" not in result.stderr
    assert f"at {root}/" in result.stderr
    assert tree_digest(repo) == before


@pytest.mark.parametrize("spare_mb", [-10, 6])
def test_a_disk_that_fills_up_during_the_restore_is_not_blamed_on_the_backup(
    clean_scenario, small_disk, monkeypatch: pytest.MonkeyPatch, spare_mb: int
):
    """Another writer takes the space after the check (the check is passed over here): the copy
    (too small for the backup) or the replay (room for the copy, not for the WAL) hits ENOSPC."""
    repo, truth = clean_scenario
    before = tree_digest(repo)
    coordinate = select(repo, truth["targets"][-1]["target"])
    backup_mb = scan_backup(Path(coordinate["backup_path"])).size_bytes // 2**20
    root = small_disk(backup_mb + spare_mb)
    monkeypatch.setattr(local_module, "require_space", lambda *_a, **_k: 123 * 2**20)
    backend = LocalSandboxBackend(root=root)
    with pytest.raises(NoSpaceError) as caught:
        backend.provision(coordinate, drill_id="t", name="fills", ttl=timedelta(hours=1))
    error = caught.value
    assert error.code == "SANDBOX_NO_SPACE"
    assert error.details["needed_bytes"] is not None and error.details["free_bytes"] is not None
    assert "No space left on device" in str(error) or "filled up" in str(error)
    # Too small for the copy: cp hits ENOSPC; room for the copy only: restore_command does.
    assert ("while copying" if spare_mb < 0 else "while the server restored WAL") in str(error)
    assert _judged(error) == ("error", "COULD NOT VERIFY")
    assert tree_digest(repo) == before
