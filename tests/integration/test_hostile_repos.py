"""Real repositories damaged the way archives get damaged: compressed WAL, a foreign backup,
a history file with no WAL, unreadable files. Each gets a true diagnosis, never a traceback."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from datetime import timedelta
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from restorekit import assert_every_target_restores_exactly

from drillkit.catalog import LocalCatalog
from drillkit.catalog.wal import format_lsn
from drillkit.cli import catalog_rows
from drillkit.pitr import evaluate

pytestmark = pytest.mark.integration
COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".lz4": lz4.frame.compress,
}


def _segments(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "wal").iterdir() if len(p.name) == 24)


def _compress(path: Path, suffix: str, *, pgbackrest: bool = False) -> Path:
    """Replace ``path`` by a compressed copy, as archive_command pipes or pgBackRest write it."""
    data = path.read_bytes()
    name = path.name + ("-" + "ab" * 20 if pgbackrest else "") + suffix
    target = path.with_name(name)
    target.write_bytes(COMPRESSORS[suffix](data))
    path.unlink()
    return target


def _windows(repo: Path) -> dict[str, tuple]:
    return {
        r["backup_id"]: (r["usable"], r["restorable_to"], r["code"])
        for r in catalog_rows(str(repo), verify=False)
    }


def test_compressed_segments_are_read_and_restored_from(damaged_scenario):
    """Every form archive tools write, mixed in one archive: the window is the clean one, and
    restores to every ground-truth target replay through them (restore_command decompresses,
    as the PostgreSQL OS user)."""
    repo, truth = damaged_scenario()
    clean = _windows(repo)
    segments = _segments(repo)
    forms = [(".gz", False), (".bz2", False), (".zst", True), (".lz4", False), (".gz", True)]
    for index, path in enumerate(segments[1:]):
        suffix, pgbackrest = forms[index % len(forms)]
        _compress(path, suffix, pgbackrest=pgbackrest)
    assert not [p for p in _segments(repo)[1:]]  # all but the first are compressed now
    assert _windows(repo) == clean
    assert_every_target_restores_exactly(repo, truth, name="compressed")


def test_a_truncated_or_corrupt_compressed_segment_is_named(damaged_scenario):
    repo, _truth = damaged_scenario()
    segments = _segments(repo)
    victim = _compress(segments[3], ".gz")
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # cut short
    rows = catalog_rows(str(repo), verify=False)
    first = next(r for r in rows if r["backup_id"] == min(r["backup_id"] for r in rows))
    assert first["wal_gap"] == segments[3].name
    text = json.dumps(rows)
    assert victim.name in text  # the compressed file itself is named, not "missing"


def test_an_unsupported_compression_is_a_finding_naming_segment_and_fix(damaged_scenario):
    repo, _truth = damaged_scenario()
    segments = _segments(repo)
    brotli = segments[3].with_name(segments[3].name + ".br")
    segments[3].rename(brotli)
    rows = catalog_rows(str(repo), verify=False)
    oldest = min(rows, key=lambda r: r["backup_id"])
    assert oldest["wal_gap"] == segments[3].name
    assert oldest["code"] == "WAL_COMPRESSION_UNSUPPORTED"
    assert brotli.name in oldest["problem"] and "decompress it" in oldest["problem"]


def test_a_foreign_backup_sorting_first_is_refused_alone(damaged_scenario):
    repo, _truth = damaged_scenario()
    clean = _windows(repo)
    real = sorted((repo / "base").iterdir())[0]
    foreign = repo / "base" / "0000-another-cluster"
    shutil.copytree(real, foreign)
    manifest = json.loads((foreign / "backup_manifest").read_text())
    manifest["System-Identifier"] = 1234567890123456789
    (foreign / "backup_manifest").write_text(json.dumps(manifest))

    windows = _windows(repo)
    assert windows.pop(foreign.name)[::2] == (False, "BACKUP_FOREIGN_SYSTEM")
    assert windows == clean  # the real backups are not poisoned


def test_a_history_file_whose_timeline_has_no_wal_is_reported(damaged_scenario):
    """A promoted server's 00000002.history reached the archive, its WAL never did: the window
    is the WAL actually present (timeline 1), with a warning naming the history file."""
    repo, _truth = damaged_scenario()
    clean = _windows(repo)
    last_stop = max(b.stop_lsn for b in LocalCatalog(repo).snapshot(verify=False).backups)
    switch = format_lsn(last_stop + 0x100)  # after every backup: each could follow timeline 2
    (repo / "wal" / "00000002.history").write_text(f"1\t{switch}\tno recovery target specified\n")
    assert _windows(repo) == clean
    snapshot = LocalCatalog(repo).snapshot(verify=False)
    for backup in snapshot.backups:
        ev = evaluate(snapshot, backup, target=None, rpo=timedelta(0), require_verified=False)
        assert [f.code for f in ev.findings] == ["WAL_TIMELINE_WITHOUT_WAL"]
        assert "00000002.history" in ev.findings[0].message
        assert ev.plan is not None and ev.plan.timeline.tli == 1


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("00000002.history", b"\xff\xfe not a history\n", "WAL_HISTORY_UNREADABLE"),
        ("00000002.history", b"garbage garbage\n", "WAL_HISTORY_UNREADABLE"),
    ],
)
def test_an_unreadable_history_file_is_a_finding_naming_it(damaged_scenario, name, content, code):
    repo, _truth = damaged_scenario()
    (repo / "wal" / name).write_bytes(content)
    rows = catalog_rows(str(repo), verify=False)
    assert {r["code"] for r in rows} == {code}
    assert all(name in r["problem"] for r in rows)


def test_non_utf8_backup_history_and_label_name_the_file(damaged_scenario):
    repo, _truth = damaged_scenario()
    history = sorted((repo / "wal").glob("*.backup"))[0]
    history.write_bytes(b"STOP TIME: \xff\xff\n")
    label = sorted((repo / "base").iterdir())[-1] / "backup_label"
    label.write_bytes(b"START WAL LOCATION: \xff\n")
    rows = {r["backup_id"]: r for r in catalog_rows(str(repo), verify=False)}
    assert rows[label.parent.name]["code"] == "BACKUP_LABEL_UNREADABLE"
    assert "backup_label" in rows[label.parent.name]["problem"]
    assert sum(r["usable"] for r in rows.values()) == len(rows) - 1
