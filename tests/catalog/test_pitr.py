"""Unit tests of drillkit.pitr: restore coordinates under RPO rules, on fabricated catalogs.

The standard archive holds segments 1..8 on timeline 1 with one commit per segment at offset
0x1000, at minute 10*segno after BASE (08:10 ... 09:20). Backups b1, b2, b3 start and stop in
segments 2, 4 and 6; the WAL proves the newest commit before each (08:10, 08:30, 08:50), which is
when each becomes restorable.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from fabricated import NOW, Seg, at, linear, lsn, name, rec, seg, snapshot

from drillkit.catalog.model import BackupInfo, CatalogSnapshot, Verification
from drillkit.catalog.wal import TimelineHistory
from drillkit.catalog.walindex import TablespaceRecord, XactRecord
from drillkit.exceptions import InvalidInputError, NoRestorableBackupError
from drillkit.pitr import SCHEMA, evaluate, select_coordinate

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)


def iso(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


def backup(
    bid: str,
    segno: int,
    *,
    stop_min: float | None,
    start_min: float | None = None,
    status: str = "verified",
    tli: int = 1,
    problems: tuple[tuple[str, str], ...] = (),
) -> BackupInfo:
    """A backup starting at segno/0x28 and stopping at segno/0x800."""
    return BackupInfo(
        backup_id=bid,
        path=f"/repo/base/{bid}",
        start_lsn=lsn(segno, 0x28),
        stop_lsn=lsn(segno, 0x800),
        timeline=tli,
        stop_timeline=tli,
        start_time=None if start_min is None else at(start_min),
        stop_time=None if stop_min is None else at(stop_min),
        system_identifier=7441234567890123456,
        size_bytes=40 << 20,
        verification=Verification(status, f"pg_verifybackup said {status}"),
        problems=problems,
    )


B1 = backup("b1", 2, stop_min=19, start_min=18)
B2 = backup("b2", 4, stop_min=39, start_min=38)
B3 = backup("b3", 6, stop_min=59, start_min=58)


def standard(
    *, drop: tuple[int, ...] = (), backups: list[BackupInfo] | None = None, segs: list[Seg] = ()
) -> CatalogSnapshot:
    replaced = {s.segno for s in segs}
    base = [s for s in linear(1, 8) if s.segno not in drop and s.segno not in replaced]
    return snapshot(backups or [B1, B2, B3], sorted([*base, *segs], key=lambda s: s.segno))


def select(snap: CatalogSnapshot, target: datetime | None, **kwargs: Any) -> dict[str, Any]:
    return select_coordinate(snap, target=target, now=NOW, **kwargs)


def refuse(
    snap: CatalogSnapshot, target: datetime | None, **kwargs: Any
) -> NoRestorableBackupError:
    with pytest.raises(NoRestorableBackupError) as info:
        select(snap, target, **kwargs)
    return info.value


def decisions(
    candidates: list[dict[str, str]], snap: CatalogSnapshot
) -> dict[str, tuple[str, str]]:
    """Candidates by id, after checking each backup appears exactly once with a reason."""
    ids = [c["backup_id"] for c in candidates]
    assert sorted(ids) == sorted(b.backup_id for b in snap.backups)
    assert all(c["reason"] for c in candidates)
    return {c["backup_id"]: (c["decision"], c["code"]) for c in candidates}


def codes(error: NoRestorableBackupError) -> list[str]:
    return [f["code"] for f in error.details["findings"]]


# --- recovery to a time --------------------------------------------------------------------------


def test_latest_stops_before_the_first_commit_after_the_target() -> None:
    snap = standard()
    coord = select(snap, at(45))
    assert coord["schema"] == SCHEMA
    assert coord["backup_id"] == "b2"
    assert coord["target"] == {
        "requested": iso(45),
        "mode": "time",
        "time": "2026-11-21 08:45:00.000000+00",
        "lsn": None,
        "timeline": 1,
        "inclusive": True,
    }
    assert coord["wal"]["first_segment"] == name(4)
    assert coord["wal"]["last_segment"] == name(5)  # holds the 08:50 commit recovery stops at
    assert coord["wal"]["segments"] == 2
    assert coord["restorable_from"] == iso(30)
    assert coord["recovery_point"] == iso(40)
    assert coord["expected_data_loss_seconds"] == 0
    assert coord["findings"] == []
    assert iso(30) in coord["reason"]
    assert decisions(coord["candidates"], snap) == {
        "b3": ("rejected", "TOO_NEW"),
        "b2": ("chosen", "CHOSEN"),
        "b1": ("eligible", "NOT_NEEDED"),
    }


def test_coordinate_is_json_and_carries_the_contract_keys() -> None:
    coord = select(standard(), at(45))
    assert json.loads(json.dumps(coord)) == coord
    for key in ("mode", "time", "lsn", "timeline"):
        assert key in coord["target"]
    for key in ("first_segment", "last_segment", "segments"):
        assert key in coord["wal"]
    for key in ("expected_data_loss_seconds", "restorable_from", "recovery_point", "reason"):
        assert coord[key] is not None
    assert coord["backup"]["stop_lsn"] == "0/04000800"
    assert coord["selected_at"] == NOW.isoformat().replace("+00:00", "Z")


def test_a_commit_exactly_at_the_target_is_included() -> None:
    ev = evaluate(standard(), B2, target=at(50), rpo=timedelta(0))
    assert ev.recovery_point == at(50)
    assert ev.stop_lsn == lsn(6, 0x1000)  # stops before the 09:00 commit, not the 08:50 one


def test_an_abort_after_the_target_stops_recovery_too() -> None:
    snap = standard(segs=[seg(5, rec(5, 0x100, 46, "a"), rec(5, 0x1000, 50))])
    ev = evaluate(snap, B2, target=at(45), rpo=timedelta(0))
    assert (ev.eligible, ev.mode, ev.stop_lsn) == (True, "time", lsn(5, 0x100))
    assert ev.recovery_point == at(40)


def test_the_stop_record_is_the_first_in_lsn_order_not_the_earliest_in_time() -> None:
    # commit timestamps are taken before WAL insertion, so they need not grow with the LSN
    snap = standard(segs=[seg(5, rec(5, 0x100, 47), rec(5, 0x200, 44), rec(5, 0x1000, 50))])
    ev = evaluate(snap, B2, target=at(45), rpo=timedelta(0))
    assert (ev.mode, ev.stop_lsn) == ("time", lsn(5, 0x100))


def test_a_commit_inside_the_backup_is_never_the_stop_record() -> None:
    # recovery replays through the stop LSN before it may stop: a commit at 08:48 between start
    # and stop is applied whatever the target, so targets before it are TOO_NEW
    b2 = replace(B2, stop_lsn=lsn(4, 0x2000))
    snap = standard(backups=[B1, b2], segs=[seg(4, rec(4, 0x1000, 48))])
    early = evaluate(snap, b2, target=at(47), rpo=timedelta(0))
    assert (early.eligible, early.code, early.stop_lsn) == (False, "TOO_NEW", None)
    ev = evaluate(snap, b2, target=at(48), rpo=timedelta(0))
    assert ev.eligible and ev.stop_lsn == lsn(5, 0x1000)


# --- restorable from -----------------------------------------------------------------------------


LAST_US = timedelta(seconds=1) - timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("stop_min", "start_min", "start_off", "seg3", "seg4", "restorable"),
    [
        # the WAL proves the newest commit before the backup: label times are not needed
        (39, 38, 0x28, [rec(3, 0x1000, 30)], [], at(30)),
        (39, 38, 0x400, [rec(3, 0x1000, 30)], [rec(4, 0x100, 33)], at(33)),
        (39, 38, 0x400, [rec(3, 0x1000, 30)], [rec(4, 0x100, 33), rec(4, 0x600, 36)], at(36)),
        (39, 38, 0x400, [rec(3, 0x1000, 30)], [rec(4, 0x600, 36, "a")], at(36)),
        (None, None, 0x28, [rec(3, 0x1000, 31), rec(3, 0x2000, 32)], [], at(32)),
        (39, 38, 0x28, [], [], at(20)),  # segment 3 holds no transaction: segment 2 does
        # no proof from WAL: the label times, truncated to the second, stand in rounded up
        (39, 38, 0x28, None, [], at(39) + LAST_US),
        (None, 38, 0x28, None, [], at(38) + LAST_US),
        (37, 38, 0x28, None, [], at(38) + LAST_US),
        (39, 38, 0x400, None, [rec(4, 0x600, 42)], at(42)),
        (39, 38, 0x28, "error", [], at(39) + LAST_US),
    ],
)
def test_restorable_from_is_the_newest_transaction_before_the_stop(
    stop_min: float | None,
    start_min: float | None,
    start_off: int,
    seg3: list[XactRecord] | str | None,
    seg4: list[XactRecord],
    restorable: datetime,
) -> None:
    b2 = replace(
        backup("b2", 4, stop_min=stop_min, start_min=start_min), start_lsn=lsn(4, start_off)
    )
    third: list[Seg] = []
    if seg3 == "error":
        third = [seg(3, rec(3, 0x1000, 30), error="invalid record length at 0/3001100")]
    elif seg3 is not None:
        third = [seg(3, *seg3)]
    snap = standard(
        backups=[b2],
        drop=(3,),
        segs=[*third, seg(4, *seg4, rec(4, 0x1000, 40)), seg(2, rec(2, 0x1000, 20))],
    )
    early = evaluate(snap, b2, target=restorable - timedelta(microseconds=1), rpo=timedelta(0))
    assert (early.eligible, early.code) == (False, "TOO_NEW")
    assert early.restorable_from == restorable
    ok = evaluate(snap, b2, target=restorable, rpo=timedelta(0))
    assert ok.eligible and ok.code == "CHOSEN"
    assert ok.restorable_from == restorable


def test_backup_with_no_known_start_is_unverifiable() -> None:
    # label times in a zone abbreviation (None) and no earlier WAL to prove the start
    b2 = backup("b2", 4, stop_min=None)
    ev = evaluate(standard(backups=[b2], drop=(1, 2, 3)), b2, target=at(45), rpo=timedelta(0))
    assert (ev.eligible, ev.code) == (False, "BACKUP_UNVERIFIABLE")
    assert "b2" in ev.reason


def test_target_before_every_backup_names_the_oldest_restorable_point() -> None:
    snap = standard()
    error = refuse(snap, at(9))
    assert error.code == "TARGET_BEFORE_OLDEST_RESTORABLE"
    assert iso(10) in str(error)
    assert set(decisions(error.details["candidates"], snap).values()) == {("rejected", "TOO_NEW")}


def test_previous_without_a_second_eligible_backup_is_not_target_before_oldest() -> None:
    error = refuse(standard(), at(25), policy="previous")
    assert error.code != "TARGET_BEFORE_OLDEST_RESTORABLE"


def test_pinned_too_new_backup_names_its_own_restorable_point() -> None:
    error = refuse(standard(), at(45), policy="pinned", pinned="b3")
    assert error.code == "TARGET_BEFORE_OLDEST_RESTORABLE"
    assert iso(50) in str(error)


# --- WAL continuity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damaged", "code"),
    [
        (None, "WAL_GAP"),
        (
            seg(4, problem="has 8 bytes, a segment has 16777216 (truncated copy?)"),
            "WAL_SEGMENT_DAMAGED",
        ),
        (
            seg(4, problem="belongs to database system 42, not to 7 (another cluster's WAL)"),
            "WAL_FOREIGN_SYSTEM",
        ),
        (seg(4, error="invalid magic number 0000 in WAL segment"), "WAL_SEGMENT_DAMAGED"),
    ],
)
def test_unusable_segment_before_the_stop_rejects_the_backup(
    damaged: Seg | None, code: str
) -> None:
    snap = standard(drop=(4,), segs=[damaged] if damaged else [])
    coord = select(snap, at(45), rpo=HOUR)
    cands = {c["backup_id"]: c for c in coord["candidates"]}
    assert (cands["b2"]["decision"], cands["b2"]["code"]) == ("rejected", code)
    assert "000000010000000000000004" in cands["b2"]["reason"]
    assert cands["b3"]["code"] == "TOO_NEW"
    # b1 still reaches 08:30, 15 minutes short: within an hour's RPO, with a warning
    assert coord["backup_id"] == "b1"
    assert coord["target"]["mode"] == "lsn"
    assert coord["target"]["lsn"] == "0/03001000"
    assert coord["expected_data_loss_seconds"] == 15 * 60
    assert [(f["code"], f["severity"]) for f in coord["findings"]] == [(code, "warning")]
    assert "000000010000000000000004" in coord["findings"][0]["message"]

    error = refuse(snap, at(45), rpo=timedelta(minutes=14))
    assert error.code == code  # TOO_NEW is expected of newer backups; the gap is the cause
    assert "DATA_LOSS_OVER_RPO" in codes(error)


def test_target_whose_stop_commit_is_in_a_missing_segment_is_not_provable() -> None:
    snap = standard(drop=(7,))
    coord = select(snap, at(65), rpo=timedelta(minutes=10))
    assert coord["backup_id"] == "b3"
    assert (coord["target"]["mode"], coord["target"]["time"]) == ("lsn", None)
    assert coord["target"]["lsn"] == "0/06001000"
    assert coord["recovery_point"] == iso(60)
    assert coord["expected_data_loss_seconds"] == 300
    assert coord["findings"][0]["code"] == "WAL_GAP"
    assert "000000010000000000000007" in coord["findings"][0]["message"]

    error = refuse(snap, at(65), rpo=timedelta(minutes=4))
    assert error.code == "WAL_GAP"
    assert "DATA_LOSS_OVER_RPO" in codes(error)
    cands = decisions(error.details["candidates"], snap)
    assert cands == {b: ("rejected", "WAL_GAP") for b in ("b1", "b2", "b3")}


def test_target_after_archive_end_within_rpo_recovers_to_the_last_commit() -> None:
    coord = select(standard(), at(95), rpo=timedelta(minutes=15))  # loss == RPO is allowed
    assert coord["backup_id"] == "b3"
    assert coord["target"]["mode"] == "lsn"
    assert coord["target"]["lsn"] == "0/08001000"
    assert coord["target"]["time"] is None
    assert coord["wal"]["last_segment"] == name(8)
    assert coord["recovery_point"] == iso(80)
    assert coord["expected_data_loss_seconds"] == 15 * 60
    assert [(f["code"], f["severity"], f["subject"]) for f in coord["findings"]] == [
        ("TARGET_AFTER_ARCHIVE_END", "warning", "b3")
    ]


def test_target_after_archive_end_over_rpo_is_refused() -> None:
    snap = standard()
    error = refuse(snap, at(95), rpo=timedelta(minutes=14))
    assert error.code == "TARGET_AFTER_ARCHIVE_END"
    assert "DATA_LOSS_OVER_RPO" in codes(error)
    assert codes(error)[-1] == "NO_RESTORABLE_BACKUP"
    cands = decisions(error.details["candidates"], snap)
    assert cands == {b: ("rejected", "TARGET_AFTER_ARCHIVE_END") for b in ("b1", "b2", "b3")}


def test_no_commit_after_the_backup_recovers_immediately() -> None:
    snap = standard(drop=(7, 8), segs=[seg(6)])
    coord = select(snap, at(53), rpo=timedelta(minutes=5))
    assert coord["backup_id"] == "b3"
    assert (coord["target"]["mode"], coord["target"]["lsn"]) == ("immediate", None)
    assert coord["recovery_point"] == iso(50)  # what the backup holds when consistent
    assert coord["expected_data_loss_seconds"] == 180
    assert coord["findings"][0]["code"] == "TARGET_AFTER_ARCHIVE_END"


def test_backup_whose_wal_was_never_archived_is_rejected() -> None:
    b4 = backup("b4", 9, stop_min=89)
    snap = standard(backups=[B1, B2, B3, b4])
    coord = select(snap, at(95), rpo=HOUR)
    cands = {c["backup_id"]: c for c in coord["candidates"]}
    assert cands["b4"]["code"] == "WAL_GAP"
    assert "000000010000000000000009" in cands["b4"]["reason"]
    assert coord["backup_id"] == "b3"


def test_no_target_recovers_to_the_newest_archived_commit() -> None:
    coord = select(standard(), None)
    assert coord["backup_id"] == "b3"
    assert coord["target"]["mode"] == "lsn"
    assert coord["target"]["lsn"] == "0/08001000"
    assert coord["target"]["requested"] is None
    assert coord["expected_data_loss_seconds"] == 0
    assert coord["findings"] == []


def test_no_target_with_a_gap_counts_what_lies_beyond_it() -> None:
    snap = standard(drop=(7,))
    coord = select(snap, None, rpo=timedelta(minutes=20))
    assert coord["recovery_point"] == iso(60)
    assert coord["expected_data_loss_seconds"] == 20 * 60  # 09:20 is archived beyond the gap
    assert coord["findings"][0]["code"] == "WAL_GAP"
    error = refuse(snap, None, rpo=timedelta(minutes=19))
    assert "DATA_LOSS_OVER_RPO" in codes(error)


# --- verification and problems -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("checksum_mismatch", "BACKUP_CHECKSUM_MISMATCH"),
        ("incomplete", "BACKUP_INCOMPLETE"),
        ("unverifiable", "BACKUP_UNVERIFIABLE"),
        ("not_run", "BACKUP_UNVERIFIABLE"),
    ],
)
@pytest.mark.parametrize("require_verified", [True, False])
def test_failed_verification_rejects_the_backup(
    status: str, code: str, require_verified: bool
) -> None:
    snap = standard(backups=[B1, B2, replace(B3, verification=Verification(status, "bad"))])
    coord = select(snap, at(75), require_verified=require_verified)
    cands = decisions(coord["candidates"], snap)
    if status == "not_run" and not require_verified:
        assert coord["backup_id"] == "b3"
        return
    assert cands["b3"] == ("rejected", code)
    assert coord["backup_id"] == "b2"


def test_backup_problem_from_the_catalog_rejects_it() -> None:
    broken = replace(B3, problems=(("BACKUP_INCOMPLETE", "backup b3 has no backup_label"),))
    snap = standard(backups=[B1, B2, broken])
    coord = select(snap, at(75))
    cand = next(c for c in coord["candidates"] if c["backup_id"] == "b3")
    assert (cand["code"], cand["reason"]) == ("BACKUP_INCOMPLETE", "backup b3 has no backup_label")
    assert coord["backup_id"] == "b2"


# --- policies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "exclude", "chosen", "expected"),
    [
        (
            "latest",
            (),
            "b3",
            {
                "b3": ("chosen", "CHOSEN"),
                "b2": ("eligible", "NOT_NEEDED"),
                "b1": ("eligible", "NOT_NEEDED"),
            },
        ),
        (
            "latest",
            ("b3",),
            "b2",
            {
                "b3": ("rejected", "EXCLUDED"),
                "b2": ("chosen", "CHOSEN"),
                "b1": ("eligible", "NOT_NEEDED"),
            },
        ),
        (
            "previous",
            (),
            "b2",
            {
                "b3": ("eligible", "SKIPPED_BY_POLICY"),
                "b2": ("chosen", "CHOSEN"),
                "b1": ("eligible", "NOT_NEEDED"),
            },
        ),
        (
            "previous",
            ("b2",),
            "b1",
            {
                "b3": ("eligible", "SKIPPED_BY_POLICY"),
                "b2": ("rejected", "EXCLUDED"),
                "b1": ("chosen", "CHOSEN"),
            },
        ),
        (
            "previous",
            ("b3",),
            "b2",
            {
                "b3": ("rejected", "EXCLUDED"),
                "b2": ("chosen", "CHOSEN"),
                "b1": ("eligible", "NOT_NEEDED"),
            },
        ),
        (
            "oldest",
            (),
            "b1",
            {
                "b3": ("eligible", "NOT_NEEDED"),
                "b2": ("eligible", "NOT_NEEDED"),
                "b1": ("chosen", "CHOSEN"),
            },
        ),
        (
            "oldest",
            ("b1",),
            "b2",
            {
                "b3": ("eligible", "NOT_NEEDED"),
                "b2": ("chosen", "CHOSEN"),
                "b1": ("rejected", "EXCLUDED"),
            },
        ),
    ],
)
def test_policies(
    policy: str, exclude: tuple[str, ...], chosen: str, expected: dict[str, tuple[str, str]]
) -> None:
    snap = standard()
    coord = select(snap, at(75), policy=policy, exclude=exclude)
    assert coord["backup_id"] == chosen
    assert coord["policy"] == policy
    assert decisions(coord["candidates"], snap) == expected


def test_oldest_skips_an_ineligible_oldest_backup() -> None:
    snap = standard(backups=[replace(B1, verification=Verification("incomplete")), B2, B3])
    coord = select(snap, at(75), policy="oldest")
    assert coord["backup_id"] == "b2"
    assert decisions(coord["candidates"], snap)["b1"] == ("rejected", "BACKUP_INCOMPLETE")


def test_pinned_considers_only_that_backup() -> None:
    snap = standard()
    coord = select(snap, at(75), policy="pinned", pinned="b2")
    assert coord["backup_id"] == "b2"
    assert decisions(coord["candidates"], snap) == {
        "b3": ("not_considered", "NOT_PINNED"),
        "b2": ("chosen", "CHOSEN"),
        "b1": ("not_considered", "NOT_PINNED"),
    }


def test_pinned_unknown_backup_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as info:
        select(standard(), at(75), policy="pinned", pinned="b9")
    assert "b9" in str(info.value)
    assert all(bid in str(info.value) for bid in ("b1", "b2", "b3"))


def test_pinned_and_excluded_is_refused() -> None:
    snap = standard()
    error = refuse(snap, at(75), policy="pinned", pinned="b2", exclude=["b2"])
    assert decisions(error.details["candidates"], snap)["b2"] == ("rejected", "EXCLUDED")


def test_every_eligible_backup_excluded_is_refused() -> None:
    snap = standard()
    error = refuse(snap, at(75), exclude=["b1", "b2", "b3"])
    assert codes(error)[-1] == "NO_RESTORABLE_BACKUP"
    assert set(decisions(error.details["candidates"], snap).values()) == {("rejected", "EXCLUDED")}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"policy": "newest"}, "newest"),
        ({"policy": "pinned"}, "pinned"),
    ],
)
def test_bad_policy_arguments(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        select(standard(), at(75), **kwargs)


def test_empty_catalog_has_no_restorable_backup() -> None:
    error = refuse(snapshot([], linear(1, 3)), at(15))
    assert error.code == "NO_RESTORABLE_BACKUP"
    assert error.details["candidates"] == []


# --- target validation ---------------------------------------------------------------------------


def test_target_in_the_future_is_invalid() -> None:
    with pytest.raises(InvalidInputError) as info:
        select(standard(), NOW + timedelta(minutes=1))
    assert info.value.code == "TARGET_INVALID"


def test_target_now_is_accepted() -> None:
    coord = select(standard(), NOW, rpo=timedelta(days=2))
    assert coord["backup_id"] == "b3"
    assert coord["target"]["requested"] == NOW.isoformat().replace("+00:00", "Z")


# --- timelines -----------------------------------------------------------------------------------


TL2 = TimelineHistory(2, ((1, 0x5000100),))


def tl2_snapshot() -> CatalogSnapshot:
    """TL1 segments 1..6 (the old primary kept writing), TL2 5..7 branched at 0/5000100."""
    tl1 = [*linear(1, 4), seg(5, rec(5, 0x80, 50), rec(5, 0x9000, 51)), seg(6, rec(6, 0x1000, 61))]
    tl2 = [seg(5, rec(5, 0x80, 50), rec(5, 0x2000, 52), tli=2), *linear(6, 7, tli=2)]
    late = backup("late", 6, stop_min=60.5)  # taken on TL1 after TL2 branched off
    return snapshot([B1, late], tl1 + tl2, {2: TL2})


def test_recovery_across_a_timeline_switch_reads_the_new_timelines_files() -> None:
    snap = tl2_snapshot()
    coord = select(snap, at(51.5), policy="pinned", pinned="b1")
    assert coord["target"]["timeline"] == 2
    assert coord["target"]["mode"] == "time"
    assert coord["wal"]["first_segment"] == "000000010000000000000002"
    assert coord["wal"]["last_segment"] == "000000020000000000000005"
    assert coord["wal"]["segments"] == 4
    assert coord["recovery_point"] == iso(50)  # TL1's 08:51 commit is not in TL2's history


def test_stop_record_before_the_switch_is_still_read_from_the_new_timeline() -> None:
    ev = evaluate(tl2_snapshot(), B1, target=at(45), rpo=timedelta(0))
    assert ev.stop_lsn == lsn(5, 0x80)
    assert ev.plan is not None and ev.plan.timeline.tli == 2


def test_backup_on_the_old_timeline_after_the_branch_does_not_follow_it() -> None:
    snap = tl2_snapshot()
    coord = select(snap, at(60.75), policy="pinned", pinned="late", rpo=HOUR)
    assert coord["target"]["timeline"] == 1
    assert coord["target"]["mode"] == "time"
    assert coord["wal"]["first_segment"] == "000000010000000000000006"
    assert coord["wal"]["last_segment"] == "000000010000000000000006"  # holds TL1's 09:01
    # restorable from TL1's 08:51 commit, which exists only in TL1's history
    assert coord["restorable_from"] == iso(51)


# A CREATE TABLESPACE in segment 5, after its commit at minute 50: replaying it would make the
# sandbox create production's tablespace directory on the drill host.
TABLESPACE = TablespaceRecord(lsn=lsn(5, 0x2000), oid=16409, location="/srv/pg/prod-space")
WITH_TABLESPACE = [seg(5, rec(5, 0x1000, 50), tablespaces=(TABLESPACE,))]


def test_wal_that_creates_a_tablespace_before_the_stop_is_refused() -> None:
    snap = standard(segs=WITH_TABLESPACE)
    error = refuse(snap, at(75), policy="previous")  # b2 and b1 would replay segment 5
    cands = decisions(error.details["candidates"], snap)
    assert cands["b2"] == ("rejected", "WAL_CREATES_TABLESPACE")
    assert cands["b1"] == ("rejected", "WAL_CREATES_TABLESPACE")
    reason = next(c["reason"] for c in error.details["candidates"] if c["backup_id"] == "b2")
    assert "/srv/pg/prod-space" in reason and "0/05002000" in reason and "outside" in reason


def test_a_tablespace_created_after_the_stop_record_or_before_the_backup_is_harmless() -> None:
    snap = standard(segs=WITH_TABLESPACE)
    before = select(snap, at(45))  # recovery stops at the commit of minute 50, before it
    assert before["backup_id"] == "b2"
    assert select(snap, at(75))["backup_id"] == "b3"  # b3 starts after it: nothing replays it
