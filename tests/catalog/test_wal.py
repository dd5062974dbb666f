"""Unit tests of drillkit.catalog.wal: LSNs, segment names, headers, histories, timelines."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from drillkit.catalog.wal import (
    DEFAULT_SEGMENT_SIZE,
    TimelineHistory,
    expected_tli,
    format_lsn,
    history_for,
    list_archive,
    parse_history_file,
    parse_lsn,
    parse_segment_name,
    read_segment_header,
    recovery_timeline,
    segment_name,
    segments_per_xlogid,
    segno_of,
)

pytestmark = pytest.mark.unit

SEG = DEFAULT_SEGMENT_SIZE
SYSID = 7441234567890123456
XLP_LONG_HEADER = 0x0002
PG18_MAGIC = 0xD118
# XLogLongPageHeaderData as PostgreSQL lays it out: 24-byte short header (MAXALIGNed) + 16 bytes
LONG_HEADER = struct.Struct("<HHIQI4xQII")


def header_bytes(
    *,
    pageaddr: int,
    sysid: int = SYSID,
    tli: int = 1,
    info: int = XLP_LONG_HEADER,
    seg_size: int = SEG,
    blcksz: int = 8192,
) -> bytes:
    return LONG_HEADER.pack(PG18_MAGIC, info, tli, pageaddr, 0, sysid, seg_size, blcksz)


def write_segment(directory: Path, name: str, *, size: int = SEG, **header: int) -> Path:
    """A sparse segment file: a real long page header, then zeros up to ``size``."""
    path = directory / name
    with path.open("wb") as handle:
        handle.write(header_bytes(**header))
        handle.truncate(size)
    return path


def test_long_header_is_forty_bytes_like_postgresql() -> None:
    assert LONG_HEADER.size == 40


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/5000100", 0x5000100),
        ("1/0", 1 << 32),
        ("A/FF000028", (0xA << 32) | 0xFF000028),
        ("  0/16B3D80 ", 0x16B3D80),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize("lsn", [0, 0x28, 0x5000100, (1 << 32) | 0x28, (0xFFFF << 32) | 0xFFFFFFFF])
def test_format_lsn_round_trips_and_pads_the_low_word(lsn: int) -> None:
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn
    assert len(text.split("/")[1]) == 8


def test_format_lsn_matches_postgresql_spelling() -> None:
    assert format_lsn(0x5000100) == "0/05000100"
    assert format_lsn((0x1A << 32) | 0xB) == "1A/0000000B"


@pytest.mark.parametrize(
    ("segment_size", "per_xlogid"),
    [(1 << 20, 4096), (16 << 20, 256), (64 << 20, 64), (1 << 30, 4)],
)
def test_segments_per_xlogid(segment_size: int, per_xlogid: int) -> None:
    assert segments_per_xlogid(segment_size) == per_xlogid


@pytest.mark.parametrize(
    ("tli", "segno", "segment_size", "name"),
    [
        (1, 1, SEG, "000000010000000000000001"),
        (2, 5, SEG, "000000020000000000000005"),
        (1, 255, SEG, "0000000100000000000000FF"),
        (1, 256, SEG, "000000010000000100000000"),  # 1/0: the next xlogid
        (0x1A, 0x1234, SEG, "0000001A0000001200000034"),
        (1, 64, 64 << 20, "000000010000000100000000"),
        (3, 5, 1 << 30, "000000030000000100000001"),
    ],
)
def test_segment_name_and_back(tli: int, segno: int, segment_size: int, name: str) -> None:
    assert segment_name(tli, segno, segment_size) == name
    assert parse_segment_name(name, segment_size) == (tli, segno)


@pytest.mark.parametrize(
    "name",
    [
        "00000002.history",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003.partial",
        "000000010000000000000003.gz",
        "00000001000000000000000a",  # PostgreSQL writes upper-case hex only
        "00000001000000000000003",
        "archive_status",
    ],
)
def test_parse_segment_name_ignores_non_segments(name: str) -> None:
    assert parse_segment_name(name, SEG) is None


def test_segno_of_is_the_segment_holding_the_lsn() -> None:
    assert segno_of(0x5000000, SEG) == 5
    assert segno_of(0x4FFFFFF, SEG) == 4
    assert segno_of((1 << 32) | 0x28, SEG) == 256
    assert segment_name(1, segno_of(parse_lsn("0/2000028"), SEG), SEG) == (
        "000000010000000000000002"
    )


def test_read_segment_header_reads_sysid_size_and_address(tmp_path: Path) -> None:
    path = tmp_path / "seg"
    path.write_bytes(header_bytes(pageaddr=0x3000000, seg_size=64 << 20) + b"\0" * 100)
    header = read_segment_header(path)
    assert header is not None
    assert header.system_identifier == SYSID
    assert header.segment_size == 64 << 20
    assert header.page_address == 0x3000000


@pytest.mark.parametrize(
    "raw",
    [
        header_bytes(pageaddr=0x3000000)[:39],  # shorter than a long header
        header_bytes(pageaddr=0x3000000, info=0),  # short header: not the first page
        header_bytes(pageaddr=0x3000000, seg_size=0),
        header_bytes(pageaddr=0x3000000, seg_size=3 * 1024 * 1024),  # not a power of two
        header_bytes(pageaddr=0x3000000, blcksz=0),
        b"",
    ],
    ids=["truncated", "no-long-flag", "zero-seg-size", "odd-seg-size", "zero-blcksz", "empty"],
)
def test_read_segment_header_refuses_what_is_not_a_segment_start(
    tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "seg"
    path.write_bytes(raw)
    assert read_segment_header(path) is None


def test_read_segment_header_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_segment_header(tmp_path / "nope") is None


def test_parse_history_file_as_postgresql_writes_it() -> None:
    text = (
        "1\t0/5000100\tno recovery target specified\n"
        "\n"
        "# a comment someone added\n"
        "2\t0/9000000\tbefore 2026-11-21 08:00:00+00\n"
    )
    history = parse_history_file(3, text)
    assert history.tli == 3
    assert history.entries == ((1, 0x5000100), (2, 0x9000000))
    assert history.ancestry() == [
        (1, 0, 0x5000100),
        (2, 0x5000100, 0x9000000),
        (3, 0x9000000, None),
    ]


def test_ancestry_of_timeline_without_history_is_itself_from_zero() -> None:
    assert TimelineHistory(tli=1).ancestry() == [(1, 0, None)]


def test_history_for_defaults_to_a_root_timeline() -> None:
    known = {2: TimelineHistory(2, ((1, 0x5000100),))}
    assert history_for(known, 2) is known[2]
    assert history_for(known, 7) == TimelineHistory(tli=7)


TL2 = TimelineHistory(2, ((1, 0x5000100),))
TL3 = TimelineHistory(3, ((1, 0x5000100), (2, 0x7000000)))
TL4_SIBLING = TimelineHistory(4, ((1, 0x8000000),))  # a second branch of TL1, later


@pytest.mark.parametrize(
    ("histories", "tli", "start", "expected"),
    [
        ({}, 1, 0x2000028, 1),
        ({2: TL2}, 1, 0x2000028, 2),  # started before the branch: follows it
        ({2: TL2}, 1, 0x50000FF, 2),
        ({2: TL2}, 1, 0x5000100, 1),  # at the switch point the WAL is already TL2's
        ({2: TL2}, 1, 0x6000028, 1),  # taken on TL1 after TL2 branched: must not follow TL2
        ({2: TL2, 3: TL3}, 1, 0x2000028, 3),  # grandchild through TL2
        ({2: TL2, 3: TL3}, 2, 0x6000028, 3),
        ({2: TL2, 3: TL3}, 2, 0x7000028, 2),  # TL3 left TL2 before this backup began
        ({2: TL2, 3: TL3}, 3, 0x7000028, 3),
        ({2: TL2, 4: TL4_SIBLING}, 1, 0x2000028, 4),  # newest qualifying timeline wins
        ({2: TL2, 4: TL4_SIBLING}, 1, 0x6000028, 4),  # only the later sibling still contains it
        ({2: TL2, 4: TL4_SIBLING}, 1, 0x9000028, 1),
    ],
)
def test_recovery_timeline(
    histories: dict[int, TimelineHistory], tli: int, start: int, expected: int
) -> None:
    chosen = recovery_timeline(histories, tli, start)
    assert chosen.tli == expected
    if expected != tli:
        assert chosen is histories[expected]


@pytest.mark.parametrize(
    ("timeline", "segno", "tli"),
    [
        (TimelineHistory(1), 9, 1),
        (TL2, 1, 1),
        (TL2, 4, 1),
        (TL2, 5, 2),  # the switch segment is read from the new timeline's file
        (TL2, 6, 2),
        (TL3, 4, 1),
        (TL3, 5, 2),
        (TL3, 6, 2),
        (TL3, 7, 3),  # TL3 begins exactly at 0/7000000: its first segment is 7
        (TL3, 300, 3),
    ],
)
def test_expected_tli(timeline: TimelineHistory, segno: int, tli: int) -> None:
    assert expected_tli(timeline, segno, SEG) == tli


def test_list_archive_classifies_every_file(tmp_path: Path) -> None:
    write_segment(tmp_path, "000000010000000000000001", pageaddr=1 * SEG)
    write_segment(tmp_path, "000000010000000000000002", pageaddr=2 * SEG, size=SEG // 2)
    write_segment(tmp_path, "000000010000000000000003", pageaddr=7 * SEG)  # renamed copy
    write_segment(tmp_path, "000000010000000000000004", pageaddr=4 * SEG, sysid=42)
    write_segment(tmp_path, "000000010000000000000005", pageaddr=5 * SEG, info=0)
    write_segment(tmp_path, "000000010000000000000006.partial", pageaddr=6 * SEG)
    (tmp_path / "00000002.history").write_text("1\t0/5000100\tno recovery target specified\n")
    backup_history = "000000010000000000000002.00000028.backup"
    (tmp_path / backup_history).write_text("STOP TIME: 2026-11-21 08:00:00 UTC\n")
    (tmp_path / "README").write_text("not WAL")

    listing = list_archive(tmp_path, system_identifier=SYSID)

    assert listing.segment_size == SEG
    assert set(listing.segments) == {f"00000001000000000000000{n}" for n in range(1, 6)}
    segs = listing.segments
    assert segs["000000010000000000000001"].problem is None
    assert (segs["000000010000000000000001"].tli, segs["000000010000000000000001"].segno) == (1, 1)
    assert "truncated" in (segs["000000010000000000000002"].problem or "")
    assert "0/07000000" in (segs["000000010000000000000003"].problem or "")
    assert "database system 42" in (segs["000000010000000000000004"].problem or "")
    assert "WAL page header" in (segs["000000010000000000000005"].problem or "")
    assert listing.system_identifiers == {SYSID, 42}
    assert listing.histories == {2: TimelineHistory(2, ((1, 0x5000100),))}
    assert listing.backup_histories == {backup_history: "STOP TIME: 2026-11-21 08:00:00 UTC\n"}


def test_list_archive_without_expected_sysid_accepts_any_system(tmp_path: Path) -> None:
    write_segment(tmp_path, "000000010000000000000004", pageaddr=4 * SEG, sysid=42)
    listing = list_archive(tmp_path)
    assert listing.segments["000000010000000000000004"].problem is None
    assert listing.system_identifiers == {42}


# Lines as pg_waldump 18 prints them (-r Transaction -r Tablespace), from a scenario archive.
WALDUMP = (
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        753, lsn: 0/01AFA798, prev "
    "0/01AFA750, desc: COMMIT 2026-11-21 22:13:25.231350 UTC; inval msgs: catcache 82\n"
    "rmgr: Tablespace  len (rec/tot):     61/    61, tx:        754, lsn: 0/01AFD770, prev "
    '0/01AFD6C0, desc: CREATE 16409 "/tmp/tsx/production tablespace"\n'
    "rmgr: Transaction len (rec/tot):     66/    66, tx:        754, lsn: 0/01AFD7B0, prev "
    "0/01AFD770, desc: COMMIT 2026-11-21 22:13:25.235745 UTC; inval msgs: catcache 69; sync\n"
    "rmgr: Tablespace  len (rec/tot):     34/    34, tx:        760, lsn: 0/01B00010, prev "
    "0/01AFFFD0, desc: DROP 16409\n"
)


def test_waldump_output_gives_commits_and_created_tablespaces() -> None:
    from drillkit.catalog.walindex import TablespaceRecord, parse_tablespaces, parse_waldump

    commits = parse_waldump(WALDUMP)
    assert [(format_lsn(r.lsn), r.kind) for r in commits] == [
        ("0/01AFA798", "c"),
        ("0/01AFD7B0", "c"),
    ]
    assert commits[1].time.isoformat() == "2026-11-21T22:13:25.235745+00:00"
    assert parse_tablespaces(WALDUMP) == [
        TablespaceRecord(
            lsn=parse_lsn("0/01AFD770"), oid=16409, location="/tmp/tsx/production tablespace"
        )
    ]
