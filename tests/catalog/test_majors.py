"""PostgreSQL majors in the catalog: page magic, PG_VERSION, the plan across an upgrade, and a
major this worker lacks (never WAL damage). Fabricated archives; real binaries for discovery."""

from __future__ import annotations

import io
import os
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from fabricated import NOW, at, linear, lsn, rec, seg, snapshot

from drillkit.catalog.backups import read_pg_major
from drillkit.catalog.continuity import plan_wal
from drillkit.catalog.model import BackupInfo, Verification
from drillkit.catalog.wal import read_segment_header
from drillkit.exceptions import InvalidInputError, NoRestorableBackupError, ToolMissingError
from drillkit.gate import ERROR, judge_tier
from drillkit.pgbin import PgSettings, for_major
from drillkit.pgmajors import WAL_PAGE_MAGIC, parse_bin_dirs
from drillkit.pitr import select_coordinate

pytestmark = pytest.mark.unit
PG15_BIN = "/usr/lib/postgresql/15/bin"
MISSING = ("PG_BINARIES_MISSING", "PostgreSQL 15's binaries are not on this worker ...")


def backup(bid: str, start: int, stop: int, major: int = 15, **kwargs) -> BackupInfo:
    return BackupInfo(
        backup_id=bid,
        path=f"/repo/base/{bid}",
        start_lsn=start,
        stop_lsn=stop,
        timeline=1,
        stop_timeline=1,
        start_time=at(0),
        stop_time=at(1),
        system_identifier=1,
        size_bytes=0,
        pg_major=major,
        **{"verification": Verification("verified"), **kwargs},
    )


def _long_header(magic: int, segno: int = 3) -> bytes:
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER), tli, pageaddr, rem_len, sysid,
    # seg_size, blcksz
    return struct.pack("<HHIQI4xQII", magic, 0x0002, 1, segno * 16 * 2**20, 0, 7, 16 * 2**20, 8192)


@pytest.mark.parametrize(("magic", "major"), [(0xD110, 15), (0xD118, 18), (0xD106, 13)])
def test_a_segments_page_magic_names_its_major(tmp_path: Path, magic: int, major: int) -> None:
    path = tmp_path / "000000010000000000000003"
    path.write_bytes(_long_header(magic) + bytes(64))
    header = read_segment_header(path)
    assert header is not None and header.major == major
    assert WAL_PAGE_MAGIC[magic] == major


def test_an_unknown_magic_has_no_major(tmp_path: Path) -> None:
    path = tmp_path / "000000010000000000000003"
    path.write_bytes(_long_header(0xD120) + bytes(64))  # master's, after 18
    assert read_segment_header(path).major is None  # type: ignore[union-attr]


def test_pg_version_of_plain_and_tar_backups(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "PG_VERSION").write_text("15\n")
    assert read_pg_major(plain) == 15
    tarred = tmp_path / "tar"
    tarred.mkdir()
    with tarfile.open(tarred / "base.tar.gz", "w:gz") as archive:
        for name, data in (
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("PG_VERSION", b"13\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert read_pg_major(tarred) == 13
    (plain / "PG_VERSION").write_text("9.6\n")
    assert read_pg_major(plain) == 9


def test_wal_of_a_newer_major_ends_the_plan_without_calling_it_damage() -> None:
    b = backup("b1", lsn(2, 0x28), lsn(2, 0x800))
    segs = [seg(n, rec(n, 0x1000, n * 10), major=15) for n in range(1, 5)]
    segs += [seg(n, rec(n, 0x1000, n * 10), major=18) for n in range(5, 7)]
    plan = plan_wal(snapshot([b], segs), b)
    assert plan.gap is not None
    assert plan.gap.code == "WAL_OTHER_MAJOR"
    assert plan.gap.lsn == lsn(5)
    assert "written by PostgreSQL 18" in plan.gap.detail
    # A target before the upgrade is fine; one after it is out of this backup's reach.
    before = select_coordinate(snapshot([b], segs), target=at(35), now=NOW)
    assert before["backup_id"] == "b1" and before["target"]["mode"] == "time"
    with pytest.raises(NoRestorableBackupError) as caught:
        select_coordinate(snapshot([b], segs), target=at(55), now=NOW)
    assert caught.value.code == "WAL_OTHER_MAJOR"


def test_unread_wal_of_a_missing_major_is_named_as_such() -> None:
    b = backup("b1", lsn(2, 0x28), lsn(2, 0x800))
    segs = [replace(s, major=15, indexed=False) for s in linear(1, 4)]
    snap = snapshot([b], segs)
    snap.missing_majors[15] = MISSING
    plan = plan_wal(snap, b)
    assert plan.gap is not None and plan.gap.code == "PG_BINARIES_MISSING"


def test_a_backup_this_worker_cannot_read_makes_selection_could_not_verify() -> None:
    unread = backup("b2", lsn(3, 0x28), lsn(3, 0x800), problems=(MISSING,))
    damaged = backup(
        "b1", lsn(2, 0x28), lsn(2, 0x800), verification=Verification("checksum_mismatch")
    )
    with pytest.raises(NoRestorableBackupError) as caught:
        select_coordinate(snapshot([unread, damaged], linear(1, 5)), target=at(45), now=NOW)
    assert caught.value.code == "PG_BINARIES_MISSING"
    judgement = judge_tier(
        "primary",
        selected=True,
        coordinate=None,
        sandbox=None,
        validation=None,
        errors=[caught.value.to_dict()],
        rto_seconds=60,
        dry_run=False,
    )
    assert judgement.status == ERROR


def test_the_coordinate_names_the_backups_major() -> None:
    b = backup("b1", lsn(2, 0x28), lsn(2, 0x800))
    coordinate = select_coordinate(snapshot([b], linear(1, 5)), target=at(35), now=NOW)
    assert coordinate["postgres"]["major"] == 15
    assert coordinate["backup"]["pg_major"] == 15


def test_bin_dirs_setting_parses_and_refuses_nonsense() -> None:
    assert parse_bin_dirs({15: PG15_BIN, "16": "/opt/pg16/bin"}) == {
        15: PG15_BIN,
        16: "/opt/pg16/bin",
    }
    assert parse_bin_dirs('{"15": "/usr/lib/postgresql/15/bin"}') == {15: PG15_BIN}
    for bad, words in (
        ({"fifteen": PG15_BIN}, "not a PostgreSQL major"),
        ({15: "relative/bin"}, "not an absolute path"),
        ("{15: ", "not a mapping"),
        (["/usr/bin"], "must map"),
    ):
        with pytest.raises(InvalidInputError) as caught:
            parse_bin_dirs(bad, where="postgres_bin_dirs")
        assert words in str(caught.value) and "postgres_bin_dirs" in str(caught.value)


def test_spec_refuses_a_bad_postgres_bin_dirs() -> None:
    from drillkit.spec import SpecError, parse_spec

    spec = {
        "drill": "x",
        "catalog": {"kind": "local", "path": "/backups/x"},
        "tiers": [{"name": "primary"}],
        "services": {"db": {"kind": "postgres", "database": "app"}},
        "checks": [
            {"name": "one", "kind": "sql", "target": "db", "query": "select 1", "expect": {"eq": 1}}
        ],
        "postgres_bin_dirs": {"15": "bin"},
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, source="x.yaml")
    assert "x.yaml: postgres_bin_dirs" in str(caught.value)
    spec["postgres_bin_dirs"] = {15: PG15_BIN}
    assert parse_spec(spec, source="x.yaml").postgres_bin_dirs == {"15": PG15_BIN}


def test_explicit_setting_beats_the_environment_which_beats_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRILLKIT_PG_BINDIR_15", str(tmp_path))  # empty: would be refused
    chosen = for_major(15, PgSettings(bin_dirs={15: PG15_BIN}))
    assert (chosen.source, str(chosen.bindir)) == ("postgres_bin_dirs", PG15_BIN)
    assert chosen.version.startswith("15.")
    with pytest.raises(ToolMissingError) as caught:
        for_major(15)
    assert caught.value.code == "PG_BINARIES_MISSING"
    assert "DRILLKIT_PG_BINDIR_15" in str(caught.value) and str(tmp_path) in str(caught.value)
    monkeypatch.delenv("DRILLKIT_PG_BINDIR_15")
    assert for_major(15).source in ("debian", "pg_config")


def test_discovery_off_leaves_only_explicit_and_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRILLKIT_PG_DISCOVER", "off")
    monkeypatch.delenv("DRILLKIT_PG_BINDIR_15", raising=False)
    with pytest.raises(ToolMissingError) as caught:
        for_major(15)
    for words in ("postgresql-15", "postgresql15-server", "postgres_bin_dirs", "PostgreSQL 15"):
        assert words in str(caught.value)
    assert for_major(18).source == "embedded"


def test_a_bin_dir_of_another_major_is_refused_with_its_path() -> None:
    with pytest.raises(ToolMissingError) as caught:
        for_major(16, PgSettings(bin_dirs={16: PG15_BIN}))
    assert caught.value.code == "PG_BINARIES_MISMATCH"
    assert PG15_BIN in str(caught.value) and "not 16" in str(caught.value)


def test_majors_before_13_are_not_drilled() -> None:
    with pytest.raises(ToolMissingError) as caught:
        for_major(12)
    assert caught.value.code == "PG_MAJOR_UNSUPPORTED"
    assert "PostgreSQL 12" in str(caught.value) and "13" in str(caught.value)


def test_doctor_names_what_is_usable_and_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from drillkit.doctor import diagnose, render

    monkeypatch.delenv("DRILLKIT_PG_DISCOVER", raising=False)
    found = diagnose(majors=(15, 18))
    assert found["usable_majors"] == [15, 18]
    rows = {r["major"]: r for r in found["majors"]}
    assert rows[15]["missing"] == [] and rows[15]["reachable_by_os_user"] is True
    assert "can drill PostgreSQL 15, 18" in render(found)
    assert found["sandbox_root"]["free_bytes"] > 0
    if os.geteuid() == 0:
        assert found["os_user"]["name"]
    absent = diagnose(PgSettings(discover=False), majors=(16,))  # 16 only where configured
    assert absent["majors"][0]["code"] == "PG_BINARIES_MISSING"
    assert "install `postgresql-16`" in render(absent)
    none = diagnose(PgSettings(discover=False), majors=(15,))
    assert none["usable_majors"] == []
    assert "can drill no PostgreSQL major" in render(none)


def test_a_postgresql_12_backup_is_could_not_verify_with_the_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    from drillkit.catalog import LocalCatalog

    backup_dir = tmp_path / "base" / "b12"
    backup_dir.mkdir(parents=True)
    (tmp_path / "wal").mkdir()
    (backup_dir / "PG_VERSION").write_text("12\n")
    (backup_dir / "backup_label").write_text(  # PostgreSQL 12 wrote no backup_manifest
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"
    )
    (info,) = LocalCatalog(tmp_path).snapshot().backups
    assert info.pg_major == 12
    code, sentence = info.problems[0]
    assert code == "PG_MAJOR_UNSUPPORTED" and "PostgreSQL 12" in sentence
    drillkit = str(Path(sys.executable).parent / "drillkit")
    result = subprocess.run([drillkit, "catalog", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "PG_MAJOR_UNSUPPORTED" in result.stdout


def test_the_manifest_version_must_agree_with_pg_version(tmp_path: Path) -> None:
    from test_backups import make_backup, manifest

    from drillkit.catalog.backups import read_backup

    backup_dir = make_backup(tmp_path, manifest_doc=manifest())  # version 2: written by 17+
    (backup_dir / "PG_VERSION").write_text("18\n")
    info = read_backup(backup_dir, backup_histories={}, segment_size=16 * 2**20)
    assert info.pg_major == 18 and info.problems == ()
    (backup_dir / "PG_VERSION").write_text("15\n")
    info = read_backup(backup_dir, backup_histories={}, segment_size=16 * 2**20)
    ((code, sentence),) = info.problems
    assert code == "BACKUP_INCOMPLETE" and "version 2" in sentence and "PostgreSQL 15" in sentence
