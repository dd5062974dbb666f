"""Unit tests of drillkit.catalog.continuity.plan_wal on fabricated archives (no files, no DB)."""

from __future__ import annotations

import pytest
from fabricated import Seg, linear, lsn, name, rec, seg, snapshot

from drillkit.catalog.continuity import describe_gap, plan_wal
from drillkit.catalog.model import BackupInfo, Verification
from drillkit.catalog.wal import TimelineHistory

pytestmark = pytest.mark.unit

TL2 = TimelineHistory(2, ((1, 0x5000100),))  # TL2 branched off TL1 at 0/5000100


def backup(bid: str, start: int, stop: int, *, tli: int = 1) -> BackupInfo:
    return BackupInfo(
        backup_id=bid,
        path=f"/repo/base/{bid}",
        start_lsn=start,
        stop_lsn=stop,
        timeline=tli,
        stop_timeline=tli,
        start_time=None,
        stop_time=None,
        system_identifier=1,
        size_bytes=0,
        verification=Verification("verified"),
    )


B2 = backup("b2", lsn(2, 0x28), lsn(2, 0x800))


def test_contiguous_archive_has_no_gap_and_every_record() -> None:
    plan = plan_wal(snapshot([B2], linear(1, 5)), B2)
    assert plan.gap is None and plan.end_lsn is None
    assert plan.timeline == TimelineHistory(1)
    assert plan.first_segment == name(2)
    assert plan.last_segment == name(5)
    assert plan.segment_count == 4
    assert [r.lsn for r in plan.records] == [lsn(n, 0x1000) for n in range(2, 6)]
    assert plan.archive_last_xact == rec(5, 0x1000, 50)


def test_records_before_the_backup_start_are_not_part_of_the_plan() -> None:
    segs = [seg(2, rec(2, 0x10, 1), rec(2, 0x400, 2, "a"), rec(2, 0x1000, 3)), *linear(3, 3)]
    plan = plan_wal(snapshot([B2], segs), B2)
    assert [r.lsn for r in plan.records] == [lsn(2, 0x400), lsn(2, 0x1000), lsn(3, 0x1000)]
    assert plan.records_before(B2.stop_lsn) == [rec(2, 0x400, 2, "a")]


def test_missing_segment_is_a_gap_at_its_first_byte() -> None:
    segs = [s for s in linear(1, 7) if s.segno != 4]
    plan = plan_wal(snapshot([B2], segs), B2)
    assert plan.gap is not None
    assert (plan.gap.segment, plan.gap.code, plan.gap.lsn) == (name(4), "WAL_GAP", lsn(4))
    assert plan.end_lsn == lsn(4)
    assert plan.last_segment == name(3)
    assert plan.segment_count == 2
    assert [r.lsn for r in plan.records] == [lsn(2, 0x1000), lsn(3, 0x1000)]
    # what the archive holds beyond the gap is still known (it measures the loss)
    assert plan.archive_last_xact == rec(7, 0x1000, 70)
    assert "000000010000000000000004 is missing" in describe_gap(plan.gap)
    assert "0/04000000" in describe_gap(plan.gap)


@pytest.mark.parametrize(
    ("damage", "code", "words"),
    [
        (
            {"problem": "has 8 bytes, a segment has 16777216 (truncated copy?)"},
            "WAL_SEGMENT_DAMAGED",
            "truncated",
        ),
        ({"problem": "does not start with a WAL page header"}, "WAL_SEGMENT_DAMAGED", "header"),
        (
            {
                "problem": "belongs to database system 42, not to 1 (another cluster's WAL in this "
                "archive)"
            },
            "WAL_FOREIGN_SYSTEM",
            "database system 42",
        ),
        ({"indexed": False}, "WAL_SEGMENT_DAMAGED", "not indexed"),
    ],
)
def test_unusable_segment_is_a_gap_naming_it(
    damage: dict[str, object], code: str, words: str
) -> None:
    segs = [s if s.segno != 3 else seg(3, rec(3, 0x1000, 30), **damage) for s in linear(1, 5)]
    plan = plan_wal(snapshot([B2], segs), B2)
    assert plan.gap is not None
    assert (plan.gap.segment, plan.gap.code, plan.gap.lsn) == (name(3), code, lsn(3))
    assert words in plan.gap.detail
    assert name(3) in plan.gap.detail
    assert plan.last_segment == name(2)


def test_unreadable_tail_of_a_segment_keeps_what_was_read() -> None:
    segs = [
        *linear(1, 2),
        seg(3, rec(3, 0x1000, 30), error="invalid record length at 0/3002000"),
        *linear(4, 5),
    ]
    plan = plan_wal(snapshot([B2], segs), B2)
    assert plan.gap is not None
    assert plan.gap.code == "WAL_SEGMENT_DAMAGED"
    assert plan.gap.segment == name(3)
    assert plan.gap.lsn == lsn(3, 0x1001)  # just past the last record pg_waldump could read
    assert "invalid record length" in plan.gap.detail
    assert plan.records[-1] == rec(3, 0x1000, 30)
    assert plan.last_segment == name(2)


def test_backup_whose_own_segment_is_missing_has_a_gap_at_its_start() -> None:
    b5 = backup("b5", lsn(5, 0x28), lsn(5, 0x800))
    segs = [s for s in linear(1, 7) if s.segno != 5]
    plan = plan_wal(snapshot([b5], segs), b5)
    assert plan.gap is not None
    assert plan.gap.segment == name(5)
    assert plan.gap.lsn <= b5.stop_lsn
    assert plan.last_segment is None
    assert plan.segment_count == 0


@pytest.mark.parametrize("last_archived", [0, 4, 5])
def test_archive_ending_before_the_backup_stop_is_a_gap(last_archived: int) -> None:
    b = backup("b", lsn(5, 0x28), lsn(6, 0x800))  # needs segments 5 and 6
    plan = plan_wal(snapshot([b], linear(1, last_archived)), b)
    assert plan.gap is not None
    assert plan.gap.code == "WAL_GAP"
    assert plan.gap.segment == name(max(last_archived + 1, 5))
    assert plan.gap.lsn <= b.stop_lsn


# --- timelines -----------------------------------------------------------------------------------


def tl2_archive() -> list[Seg]:
    """TL1 1..6 (the old primary went on after the branch), TL2 5..7 (the promoted one)."""
    tl1 = [*linear(1, 4), seg(5, rec(5, 0x80, 50), rec(5, 0x9000, 51)), seg(6, rec(6, 0x1000, 61))]
    tl2 = [seg(5, rec(5, 0x80, 50), rec(5, 0x2000, 52), tli=2), *linear(6, 7, tli=2)]
    return tl1 + tl2


def test_plan_follows_a_timeline_switch() -> None:
    b = backup("b", lsn(2, 0x28), lsn(2, 0x800))
    plan = plan_wal(snapshot([b], tl2_archive(), {2: TL2}), b)
    assert plan.timeline is TL2
    assert plan.gap is None
    assert plan.first_segment == name(2)
    assert plan.last_segment == name(7, tli=2)
    assert plan.segment_count == 6
    lsns = [r.lsn for r in plan.records]
    assert lsn(5, 0x2000) in lsns  # TL2's commit, read from 000000020000000000000005
    assert lsn(5, 0x9000) not in lsns  # TL1's commit after the branch is not in TL2's history
    assert lsn(6, 0x1000) in lsns and rec(6, 0x1000, 61) not in plan.records


def test_plan_demands_the_new_timelines_switch_segment() -> None:
    b = backup("b", lsn(2, 0x28), lsn(2, 0x800))
    segs = [s for s in tl2_archive() if (s.tli, s.segno) != (2, 5)]
    plan = plan_wal(snapshot([b], segs, {2: TL2}), b)
    assert plan.gap is not None
    assert plan.gap.segment == "000000020000000000000005"  # TL1's 5 is there but wrong
    assert plan.last_segment == "000000010000000000000004"


def test_backup_taken_on_tl1_after_the_branch_stays_on_tl1() -> None:
    b = backup("late", lsn(6, 0x28), lsn(6, 0x800))
    plan = plan_wal(snapshot([b], tl2_archive(), {2: TL2}), b)
    assert plan.timeline.tli == 1
    assert plan.first_segment == "000000010000000000000006"
    assert plan.records[0] == rec(6, 0x1000, 61)
    assert all(r != rec(6, 0x1000, 60) for r in plan.records)  # TL2's segment 6 is not read
