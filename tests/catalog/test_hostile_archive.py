"""Damaged and hostile repositories: findings naming the file, never a traceback or a hang."""

from __future__ import annotations

import json
import struct
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fabricated import SEG, BackupInfo, at, linear, lsn, rec, seg, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drillkit.catalog.backups import read_backup
from drillkit.catalog.continuity import plan_wal
from drillkit.catalog.model import Verification
from drillkit.catalog.wal import list_archive
from drillkit.pitr import evaluate

pytestmark = pytest.mark.unit
SYSID = 7441234567890123456
HOUR = timedelta(hours=1)
LONG_HEADER = struct.Struct("<HHIQI4xQII")


def write_segment(directory: Path, name: str, *, pageaddr: int, sysid: int = SYSID) -> Path:
    path = directory / name
    with path.open("wb") as handle:
        handle.write(LONG_HEADER.pack(0xD118, 0x0002, 1, pageaddr, 0, sysid, SEG, 8192))
        handle.truncate(SEG)
    return path


def backup(bid: str, start: int, stop: int, *, sysid: int = 1, tli: int = 1) -> BackupInfo:
    return BackupInfo(  # start_time: a label time, so a restorable-from point is known
        backup_id=bid,
        path=f"/repo/base/{bid}",
        start_lsn=start,
        stop_lsn=stop,
        timeline=tli,
        stop_timeline=tli,
        start_time=at(0),
        stop_time=None,
        system_identifier=sysid,
        size_bytes=0,
        verification=Verification("verified"),
    )


def _within(seconds: float, call):
    """``call()``'s result, failing (not hanging) when it takes longer than ``seconds``."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    assert box, "raised instead of answering"
    return box[0], time.monotonic() - started


# --- one stray name must not make the catalog loop over every segment number -------------------


@pytest.mark.parametrize("far", [0xFFFFFFFF * 256 + 0xFF, 2**32, 10**9])
def test_a_far_off_stray_segment_name_is_answered_at_once(far: int):
    segs = [*linear(2, 5), seg(far, problem="has 0 bytes, a segment has 16777216 (truncated?)")]
    snap = snapshot([backup("b2", lsn(2, 0x28), lsn(2, 0x800))], segs)
    plan, took = _within(5, lambda: plan_wal(snap, snap.backups[0]))
    assert plan.segment_count == 4 and plan.gap is not None and plan.gap.code == "WAL_GAP"
    assert took < 1
    ev, _ = _within(5, lambda: evaluate(snap, snap.backups[0], target=None, rpo=HOUR))
    assert ev.eligible, ev.reason


def test_a_stray_on_another_timeline_is_answered_at_once():
    segs = [*linear(2, 5), seg(2**36, rec(2**36, 0x100, 999), tli=7)]
    snap = snapshot([backup("b2", lsn(2, 0x28), lsn(2, 0x800))], segs)
    plan, took = _within(5, lambda: plan_wal(snap, snap.backups[0]))
    assert plan.segment_count == 4 and took < 1


# --- foreign systems: judged per backup and per segment, from their own headers ---------------


def test_foreign_segments_stop_only_the_backups_of_another_system(tmp_path: Path):
    wal = tmp_path / "wal"
    wal.mkdir()
    for n in (2, 3):
        write_segment(wal, f"00000001000000000000000{n}", pageaddr=n * SEG)
    write_segment(wal, "000000010000000000000004", pageaddr=4 * SEG, sysid=42)
    listing = list_archive(wal)
    assert {s.system_identifier for s in listing.segments.values()} == {SYSID, 42}
    ours = backup("ours", lsn(2, 0x28), lsn(2, 0x800), sysid=SYSID)
    snap = snapshot([ours], linear(2, 4))
    snap.archive.segments.update(listing.segments)
    plan = plan_wal(snap, ours)
    assert plan.gap is not None and plan.gap.code == "WAL_FOREIGN_SYSTEM"
    assert plan.gap.segment == "000000010000000000000004" and plan.segment_count == 2


# --- unreadable history, backup-history, label and manifest files -----------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe garbage\n", "is not text (byte 0xff at offset 0)"),
        (b"this is not a history file\n", "line 1 is not 'parent-timeline LSN reason'"),
        (b"1\tzz/5000100\treason\n", "line 1 is not"),
        (b"5\t0/5000100\tparent after child\n", "timeline 5 cannot be an ancestor"),
    ],
)
def test_an_unreadable_history_file_is_named_and_refuses_backups_below_it(
    tmp_path: Path, content: bytes, words: str
):
    (tmp_path / "00000002.history").write_bytes(content)
    listing = list_archive(tmp_path)
    assert 2 not in listing.histories
    assert words in listing.unreadable["00000002.history"]
    snap = snapshot([backup("b2", lsn(2, 0x28), lsn(2, 0x800))], linear(2, 5))
    snap.archive.unreadable.update(listing.unreadable)
    ev = evaluate(snap, snap.backups[0], target=None, rpo=HOUR)
    assert not ev.eligible and ev.code == "WAL_HISTORY_UNREADABLE"
    assert "00000002.history" in ev.reason and "pg_wal" in ev.reason
    on_tl3 = backup("tl3", lsn(2, 0x28), lsn(2, 0x800), tli=3)
    assert evaluate(snap, on_tl3, target=None, rpo=HOUR).code != "WAL_HISTORY_UNREADABLE"


def test_a_non_utf8_backup_history_file_is_named_not_a_traceback(tmp_path: Path):
    name = "000000010000000000000002.00000028.backup"
    (tmp_path / name).write_bytes(b"STOP TIME: \xff\xff\n")
    (tmp_path / "00000001000000000000000A.00000028.backup").mkdir()  # a directory, not a file
    listing = list_archive(tmp_path)
    assert "is not text" in listing.unreadable[name]
    assert "cannot be read" in listing.unreadable["00000001000000000000000A.00000028.backup"]


def test_a_dangling_symlink_segment_is_a_damaged_segment(tmp_path: Path):
    (tmp_path / "000000010000000000000002").symlink_to(tmp_path / "gone")
    listing = list_archive(tmp_path)
    assert "cannot be read" in (listing.segments["000000010000000000000002"].problem or "")


MANIFEST = {
    "System-Identifier": SYSID,
    "Files": [],
    "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000120"}],
}


@pytest.mark.parametrize(
    ("label", "manifest", "code", "words"),
    [
        (b"START WAL LOCATION: \xff\n", MANIFEST, "BACKUP_LABEL_UNREADABLE", "is not text"),
        (b"START WAL LOCATION: nonsense\n", {"Files": []}, "BACKUP_INCOMPLETE", "WAL positions"),
        (b"START TIME: x\n", {**MANIFEST, "WAL-Ranges": "0/1"}, "BACKUP_INCOMPLETE", "WAL-Ranges"),
        (
            b"START TIME: x\n",
            {**MANIFEST, "WAL-Ranges": [{"Timeline": "one", "Start-LSN": "0/1", "End-LSN": "0/2"}]},
            "BACKUP_INCOMPLETE",
            "WAL positions",
        ),
        (b"START TIME: x\n", {**MANIFEST, "System-Identifier": "x"}, "BACKUP_INCOMPLETE", "WAL"),
        (b"START TIME: x\n", [1, 2, 3], "BACKUP_INCOMPLETE", "unreadable backup_manifest"),
        (b"START TIME: x\n", {**MANIFEST, "Files": 7}, None, None),
    ],
)
def test_garbage_label_and_manifest_are_problems_of_that_backup(
    tmp_path: Path, label: bytes, manifest, code: str | None, words: str | None
):
    path = tmp_path / "b1"
    path.mkdir()
    (path / "backup_label").write_bytes(label)
    (path / "backup_manifest").write_text(json.dumps(manifest))
    info = read_backup(path, backup_histories={}, segment_size=SEG)
    if code is None:
        assert info.problems == () and info.size_bytes == 0
        return
    assert info.problems[0][0] == code and "b1" in info.problems[0][1]
    assert words in info.problems[0][1]


def test_garbage_stop_location_in_a_backup_history_file_is_named(tmp_path: Path):
    path = tmp_path / "b1"
    path.mkdir()
    (path / "backup_label").write_text(
        "START WAL LOCATION: 0/2000028 (file x)\nSTART TIMELINE: 1\n"
    )
    (path / "backup_manifest").write_text(json.dumps({"Files": []}))
    history = {"000000010000000000000002.00000028.backup": "STOP WAL LOCATION: banana\n"}
    info = read_backup(path, backup_histories=history, segment_size=SEG)
    assert info.problems[0][0] == "BACKUP_HISTORY_UNREADABLE"
    assert "000000010000000000000002.00000028.backup" in info.problems[0][1]


# --- whatever lands in an archive or a backup directory: an answer, never an exception ---------

_names = st.one_of(
    st.from_regex(r"\A[0-9A-F]{8}(\.history|[0-9A-F]{16}(\.[0-9A-F]{8}\.backup)?)\Z"),
    st.from_regex(r"\A[0-9A-F]{24}(-[0-9a-f]{40})?\.(gz|bz2|xz|zst|lz4|br|partial)\Z"),
    st.text(alphabet="0123456789ABCDEF.-_xyz", min_size=1, max_size=30),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=st.dictionaries(_names, st.binary(max_size=200), max_size=6))
def test_list_archive_answers_any_files(tmp_path_factory, files: dict[str, bytes]):
    wal = tmp_path_factory.mktemp("wal")
    for name, content in files.items():
        if name not in (".", ".."):
            (wal / name).write_bytes(content)
    listing = list_archive(wal)
    for segment in listing.segments.values():
        assert segment.problem is not None  # 200 bytes are never a whole segment
    for name, sentence in listing.unreadable.items():
        assert name.split(".")[0] in sentence or name in sentence


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    label=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
    manifest=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=12),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "WAL-Ranges",
                            "Files",
                            "System-Identifier",
                            "Timeline",
                            "Start-LSN",
                            "End-LSN",
                            "Size",
                            "x",
                        ]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=10,
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_read_backup_answers_any_label_and_manifest(
    tmp_path_factory, label: bytes, manifest: bytes
):
    path = tmp_path_factory.mktemp("b")
    (path / "backup_label").write_bytes(label)
    (path / "backup_manifest").write_bytes(manifest)
    info = read_backup(path, backup_histories={}, segment_size=SEG)
    assert all(code.isupper() and sentence for code, sentence in info.problems)
