"""Unit tests of backup reading (backup_label, backup_manifest, history) and verification."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drillkit.catalog.backups import (
    history_file_name,
    parse_label,
    parse_label_time,
    read_backup,
)
from drillkit.catalog.model import BackupInfo, Verification
from drillkit.catalog.tarformat import backup_format, parse_tablespace_map, tar_layout
from drillkit.catalog.verify import classify
from drillkit.catalog.wal import DEFAULT_SEGMENT_SIZE

pytestmark = pytest.mark.unit

SEG = DEFAULT_SEGMENT_SIZE
SYSID = 7441234567890123456
HISTORY_NAME = "000000010000000000000002.00000028.backup"

LABEL = """\
START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000080
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-21 19:26:59 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
"""

HISTORY = """\
START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
STOP WAL LOCATION: 0/2000120 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000080
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-21 19:26:59 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
STOP TIME: 2026-11-21 19:27:01 UTC
STOP TIMELINE: 1
"""


def manifest(
    ranges: list[dict[str, Any]] | None = None, *, sizes: tuple[int, ...] = (227, 8192, 16384)
) -> dict[str, Any]:
    if ranges is None:
        ranges = [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000120"}]
    return {
        "PostgreSQL-Backup-Manifest-Version": 2,
        "System-Identifier": SYSID,
        "Files": [
            {"Path": f"base/5/{n}", "Size": size, "Last-Modified": "2026-11-21 19:27:00 GMT"}
            for n, size in enumerate(sizes)
        ],
        "WAL-Ranges": ranges,
        "Manifest-Checksum": "0" * 64,
    }


def make_backup(
    root: Path,
    name: str = "20261121T192659Z",
    *,
    label: str | None = LABEL,
    manifest_doc: dict[str, Any] | None = None,
    manifest_text: str | None = None,
) -> Path:
    path = root / name
    path.mkdir()
    if label is not None:
        (path / "backup_label").write_text(label)
    if manifest_text is not None:
        (path / "backup_manifest").write_text(manifest_text)
    elif manifest_doc is not None:
        (path / "backup_manifest").write_text(json.dumps(manifest_doc))
    return path


# --- parse_label_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21 19:26:59 UTC", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("2026-11-21 19:26:59 GMT", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("2026-11-21 21:26:59 +02", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("2026-11-21 16:26:59 -03", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("2026-11-22 00:56:59 +0530", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("2026-11-21 15:56:59 -03:30", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
        ("  2026-11-21 19:26:59 UTC\n", datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)),
    ],
)
def test_parse_label_time_unambiguous_zones(text: str, expected: datetime) -> None:
    parsed = parse_label_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21 19:26:59 CET",  # an abbreviation is never guessed
        "2026-11-21 19:26:59 IST",
        "2026-11-21 19:26:59 EST",
        "2026-11-21 19:26:59",
        "2026-11-21T19:26:59Z",
        "2026-13-21 19:26:59 UTC",
        "",
        "garbage",
    ],
)
def test_parse_label_time_refuses_what_it_cannot_pin_down(text: str) -> None:
    assert parse_label_time(text) is None


def test_parse_label_splits_on_the_first_colon_space_only() -> None:
    fields = parse_label(LABEL)
    assert fields["START WAL LOCATION"] == "0/2000028 (file 000000010000000000000002)"
    assert fields["START TIME"] == "2026-11-21 19:26:59 UTC"
    assert fields["START TIMELINE"] == "1"
    assert parse_label("no separator here\n") == {}


def test_history_file_name_is_start_segment_and_offset() -> None:
    assert history_file_name(1, 0x2000028, SEG) == HISTORY_NAME
    assert history_file_name(3, (1 << 32) | 0x5000060, SEG) == (
        "000000030000000100000005.00000060.backup"
    )


# --- read_backup ------------------------------------------------------------------------------


def test_read_backup_from_label_manifest_and_history(tmp_path: Path) -> None:
    path = make_backup(tmp_path, manifest_doc=manifest())
    info = read_backup(path, backup_histories={HISTORY_NAME: HISTORY}, segment_size=SEG)
    assert info.problems == ()
    assert info.backup_id == "20261121T192659Z"
    assert info.path == str(path)
    assert (info.start_lsn, info.stop_lsn) == (0x2000028, 0x2000120)
    assert (info.timeline, info.stop_timeline) == (1, 1)
    assert info.start_time == datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)
    assert info.stop_time == datetime(2026, 11, 21, 19, 27, 1, tzinfo=UTC)
    assert info.system_identifier == SYSID
    assert info.size_bytes == 227 + 8192 + 16384
    assert info.verification.status == "not_run"


def test_read_backup_without_history_has_no_stop_time(tmp_path: Path) -> None:
    path = make_backup(tmp_path, manifest_doc=manifest())
    info = read_backup(path, backup_histories={}, segment_size=SEG)
    assert info.problems == ()
    assert info.stop_time is None
    assert info.stop_lsn == 0x2000120  # the manifest still knows where it ended


def test_read_backup_does_not_guess_a_zone_abbreviation(tmp_path: Path) -> None:
    path = make_backup(tmp_path, label=LABEL.replace(" UTC", " CET"), manifest_doc=manifest())
    history = HISTORY.replace(" UTC", " CET")
    info = read_backup(path, backup_histories={HISTORY_NAME: history}, segment_size=SEG)
    assert info.start_time is None
    assert info.stop_time is None
    assert info.problems == ()


def test_read_backup_ignores_another_backups_history(tmp_path: Path) -> None:
    path = make_backup(tmp_path, manifest_doc=manifest())
    other = "000000010000000000000009.00000028.backup"
    info = read_backup(path, backup_histories={other: HISTORY}, segment_size=SEG)
    assert info.stop_time is None


def test_read_backup_label_only_takes_stop_from_history(tmp_path: Path) -> None:
    path = make_backup(tmp_path, manifest_doc=None)
    info = read_backup(path, backup_histories={HISTORY_NAME: HISTORY}, segment_size=SEG)
    assert (info.start_lsn, info.stop_lsn, info.timeline) == (0x2000028, 0x2000120, 1)
    assert info.stop_time == datetime(2026, 11, 21, 19, 27, 1, tzinfo=UTC)
    assert [code for code, _ in info.problems] == ["BACKUP_UNVERIFIABLE"]
    assert "backup_manifest" in info.problems[0][1]
    assert info.system_identifier is None


@pytest.mark.parametrize(
    ("setup", "codes", "words"),
    [
        ("tar-without-label", ["BACKUP_INCOMPLETE"], "no backup_label in base.tar"),
        ("tar-garbage", ["BACKUP_INCOMPLETE"], "no backup_label readable in base.tar.gz"),
        ("tar-lz4", ["BACKUP_UNVERIFIABLE"], "--compress=gzip"),
        ("no-label", ["BACKUP_INCOMPLETE"], "no backup_label"),
        ("bad-manifest", ["BACKUP_INCOMPLETE"], "unreadable backup_manifest"),
        ("no-manifest", ["BACKUP_UNVERIFIABLE"], "no backup_manifest"),
    ],
)
def test_read_backup_problems(tmp_path: Path, setup: str, codes: list[str], words: str) -> None:
    if setup == "tar-without-label":
        path = make_backup(tmp_path, label=None, manifest_doc=manifest())
        write_tar(path / "base.tar", {"PG_VERSION": b"18\n"})
    elif setup == "tar-garbage":
        path = make_backup(tmp_path, label=None, manifest_doc=manifest())
        (path / "base.tar.gz").write_bytes(b"not gzip at all")
    elif setup == "tar-lz4":
        path = make_backup(tmp_path, label=None, manifest_doc=manifest())
        (path / "base.tar.lz4").write_bytes(b"\x04\x22\x4d\x18")
    elif setup == "no-label":
        path = make_backup(tmp_path, label=None, manifest_doc=manifest())
    elif setup == "bad-manifest":
        path = make_backup(tmp_path, manifest_text='{"WAL-Ranges": [')
    else:
        path = make_backup(tmp_path)
    info = read_backup(path, backup_histories={HISTORY_NAME: HISTORY}, segment_size=SEG)
    assert [code for code, _ in info.problems] == codes
    assert any(words in sentence for _, sentence in info.problems)
    assert all(path.name in sentence for _, sentence in info.problems)


def write_tar(archive: Path, files: dict[str, bytes]) -> Path:
    """A tar (``.tar.gz``: gzip) archive holding ``files`` in order, as pg_basebackup -Ft would."""
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode, format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_read_backup_of_a_tar_format_backup(tmp_path: Path, fmt: str) -> None:
    path = make_backup(tmp_path, label=None, manifest_doc=manifest())
    write_tar(path / f"base.{fmt}", {"backup_label": LABEL.encode(), "PG_VERSION": b"18\n"})
    write_tar(path / f"pg_wal.{fmt}", {"000000010000000000000002": b"\0" * 512})
    info = read_backup(path, backup_histories={HISTORY_NAME: HISTORY}, segment_size=SEG)
    assert info.problems == ()
    assert info.format == fmt
    assert info.start_time == datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC)
    assert (info.start_lsn, info.stop_lsn, info.timeline) == (0x2000028, 0x2000120, 1)
    assert info.stop_time == datetime(2026, 11, 21, 19, 27, 1, tzinfo=UTC)
    assert info.summary()["format"] == fmt


def test_backup_format_and_tar_layout(tmp_path: Path) -> None:
    plain = make_backup(tmp_path, "plain", manifest_doc=manifest())
    assert backup_format(plain) == "plain"
    tar = make_backup(tmp_path, "tar", label=None, manifest_doc=manifest())
    for name in ("base.tar.gz", "pg_wal.tar.gz", "16384.tar.gz", "16390.tar.gz", "16384.tar"):
        (tar / name).write_bytes(b"")
    layout = tar_layout(tar)
    assert layout is not None and layout.format == "tar.gz" and layout.readable
    assert layout.wal == tar / "pg_wal.tar.gz"
    assert layout.tablespaces == {"16384": tar / "16384.tar.gz", "16390": tar / "16390.tar.gz"}
    assert backup_format(make_backup(tmp_path, "empty", label=None)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16384 /srv/ts1\n", {"16384": "/srv/ts1"}),
        ("16384 /srv/ts 1\r\n16390 /srv/two\n", {"16384": "/srv/ts 1", "16390": "/srv/two"}),
        # do_pg_backup_start escapes a newline or backslash in a path with a backslash
        ("16384 /srv/odd\\\nname\\\\x\n", {"16384": "/srv/odd\nname\\x"}),
        ("", {}),
    ],
)
def test_parse_tablespace_map(text: str, expected: dict[str, str]) -> None:
    assert parse_tablespace_map(text) == expected


@pytest.mark.parametrize("text", ["/srv/ts1\n", "abc /srv\n", "16384\n"])
def test_parse_tablespace_map_refuses_what_postgres_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="tablespace_map line"):
        parse_tablespace_map(text)


def test_read_backup_without_any_stop_location_is_incomplete(tmp_path: Path) -> None:
    path = make_backup(tmp_path, manifest_doc=manifest(ranges=[]))
    info = read_backup(path, backup_histories={}, segment_size=SEG)
    assert info.stop_lsn == 0
    assert info.start_lsn == 0x2000028  # from the label
    assert [code for code, _ in info.problems] == ["BACKUP_INCOMPLETE"]
    assert "where it ended" in info.problems[0][1]


def test_read_backup_multi_timeline_ranges_are_newest_first(tmp_path: Path) -> None:
    # A backup of a standby whose upstream switched from TL1 to TL2 at 0/5000100 mid-backup.
    ranges = [
        {"Timeline": 2, "Start-LSN": "0/5000100", "End-LSN": "0/6000120"},
        {"Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/5000100"},
    ]
    label = LABEL.replace("0/2000028", "0/4000028").replace("00000002)", "00000004)")
    path = make_backup(tmp_path, label=label, manifest_doc=manifest(ranges=ranges))
    info = read_backup(path, backup_histories={}, segment_size=SEG)
    assert (info.start_lsn, info.timeline) == (0x4000028, 1)
    assert (info.stop_lsn, info.stop_timeline) == (0x6000120, 2)


# --- verification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "status"),
    [
        (
            'pg_verifybackup: error: checksum mismatch for file "base/5/16384"\n',
            "checksum_mismatch",
        ),
        ('error: checksum mismatch for file "base/5/16384"', "checksum_mismatch"),
        (
            'pg_verifybackup: error: "base/5/1" has size 0 on disk but size 8192 in the manifest\n',
            "incomplete",
        ),
        ('error: "base/5/1" has size 0 on disk but size 8192 in the manifest', "incomplete"),
        (
            'pg_verifybackup: error: "base/5/1" is present in the manifest but not on disk',
            "incomplete",
        ),
        ('error: "base/5/1" is present in the manifest but not on disk', "incomplete"),
        (
            'pg_verifybackup: error: could not open file "/backups/base/b1/backup_manifest": '
            "No such file or directory\n",
            "unverifiable",
        ),
        ('could not open file "backup_manifest"', "unverifiable"),
        ("pg_verifybackup: error: could not parse backup manifest: parsing failed", "unverifiable"),
        ('Try "pg_verifybackup --help" for more information.', "unverifiable"),
        # tar format (messages of PostgreSQL 18's pg_verifybackup on damaged archives)
        (
            'pg_verifybackup: error: checksum mismatch for file "global/1262_fsm" in archive '
            '"base.tar"',
            "checksum_mismatch",
        ),
        ("pg_verifybackup: error: COPY stream ended before last file was finished", "incomplete"),
        (
            "pg_verifybackup: error: could not decompress data: incorrect header check",
            "checksum_mismatch",
        ),
        (
            "pg_verifybackup: error: input file does not appear to be a valid tar archive",
            "checksum_mismatch",
        ),
        (
            'pg_verifybackup: error: tar member has unsafe path name: "../../escape.txt"',
            "checksum_mismatch",
        ),
    ],
)
def test_classify_real_pg_verifybackup_messages(output: str, status: str) -> None:
    got, detail = classify(output)
    assert got == status
    assert "pg_verifybackup: " not in detail
    assert detail


def test_classify_reports_the_worst_problem_and_counts_the_rest() -> None:
    lines = [
        f'pg_verifybackup: error: "base/5/{n}" is present in the manifest but not on disk'
        for n in range(6)
    ]
    lines.insert(3, 'pg_verifybackup: error: checksum mismatch for file "base/5/16384"')
    lines.append('pg_verifybackup: hint: Try "pg_verifybackup --help" for more information.')
    status, detail = classify("\n".join(lines))
    assert status == "checksum_mismatch"
    assert detail.endswith("(+2 more)")
    assert detail.count("; ") == 4
    assert "hint" not in detail


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("verified", None),
        ("not_run", None),
        ("checksum_mismatch", "BACKUP_CHECKSUM_MISMATCH"),
        ("incomplete", "BACKUP_INCOMPLETE"),
        ("unverifiable", "BACKUP_UNVERIFIABLE"),
    ],
)
def test_verification_code(status: str, code: str | None) -> None:
    assert Verification(status).code == code


def test_backup_summary_is_json_safe() -> None:
    info = BackupInfo(
        backup_id="b1",
        path="/repo/base/b1",
        start_lsn=0x2000028,
        stop_lsn=0x2000120,
        timeline=1,
        stop_timeline=1,
        start_time=datetime(2026, 11, 21, 19, 26, 59, tzinfo=UTC),
        stop_time=None,
        system_identifier=SYSID,
        size_bytes=123,
        verification=Verification("verified"),
    )
    summary = info.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["start_lsn"] == "0/02000028"
    assert summary["stop_lsn"] == "0/02000120"
    assert summary["start_time"] == "2026-11-21T19:26:59Z"
    assert summary["stop_time"] is None
    assert summary["system_identifier"] == str(SYSID)  # 64-bit: a string survives JavaScript
    assert summary["verification"] == "verified"
    assert summary["format"] == "plain"
