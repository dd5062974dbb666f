"""The pgBackRest catalog's pure parts: config refusals, verify output, credentials, argv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drillkit.catalog.credentials import catalog_environment, pgbackrest_environment
from drillkit.catalog.model import BackupInfo, Verification
from drillkit.catalog.pgbackrest import command
from drillkit.catalog.pgbackrest.command import PgBackRestConfig
from drillkit.catalog.pgbackrest.repository import _refuse_broken_references
from drillkit.catalog.pgbackrest.verify import parse_verify
from drillkit.catalog.registry import open_catalog, open_repository
from drillkit.exceptions import InvalidInputError

# Captured from pgBackRest 2.45 (`verify --output=text --verbose`, console at info) after one
# byte of a full backup's file was flipped in the repository.
VERIFY_OUTPUT = """\
2026-12-02 06:24:05.260 P01   INFO: invalid checksum '20261202-062352F/pg_data/base/5/16384.gz'
stanza: demo
status: error
  archiveId: 15-1, total WAL checked: 4, total valid WAL: 4
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261202-062352F, status: invalid, total files checked: 966, total valid files: 965
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: 20261202-062352F_20261202-062357I, status: valid, total files checked: 966, \
total valid files: 966
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""


def test_verify_output_maps_to_statuses_and_names_the_damaged_file():
    verdicts = parse_verify(VERIFY_OUTPUT)
    status, detail = verdicts["20261202-062352F"]
    assert status == "checksum_mismatch"
    assert "20261202-062352F/pg_data/base/5/16384.gz" in detail
    assert verdicts["20261202-062352F_20261202-062357I"][0] == "verified"


_S = {"kind": "pgbackrest", "stanza": "s"}


def _backup(label: str, *, refs: tuple[str, ...] = (), status: str = "verified") -> BackupInfo:
    return BackupInfo(
        backup_id=label,
        path=label,
        start_lsn=1,
        stop_lsn=2,
        timeline=1,
        stop_timeline=1,
        start_time=None,
        stop_time=None,
        system_identifier=1,
        size_bytes=0,
        verification=Verification(status),
        type="incr" if refs else "full",
        depends_on=refs,
    )


def test_an_incremental_is_refused_when_a_set_it_references_failed_verification():
    full = _backup("20260101-000000F", status="checksum_mismatch")
    incr = _backup("20260101-000000F_20260101-010000I", refs=(full.backup_id,))
    _, checked = _refuse_broken_references([full, incr])
    ((code, sentence),) = checked.problems
    assert code == "BACKUP_REFERENCE_FAILED"
    assert full.backup_id in sentence and "failed verification" in sentence
    healthy = _refuse_broken_references([_backup(full.backup_id), incr])
    assert healthy[1].problems == ()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"kind": "pgbackrest"}, "stanza"),
        ({"kind": "pgbackrest", "stanza": "a b"}, "stanza"),
        ({"kind": "pgbackrest", "stanza": "s", "config": "rel.conf"}, "absolute"),
        ({"kind": "pgbackrest", "stanza": "s", "repo": 0}, "repository index"),
        (
            {"kind": "pgbackrest", "stanza": "s", "options": {"repo1-s3-key-secret": "x"}},
            "credential",
        ),
        (
            {"kind": "pgbackrest", "stanza": "s", "options": {"repo1-cipher-pass": "x"}},
            "credential",
        ),
        ({"kind": "pgbackrest", "stanza": "s", "options": {"delta": "y"}}, "set by drillkit"),
        ({"kind": "pgbackrest", "stanza": "s", "options": {"pg1-path": "/x"}}, "set by drillkit"),
        ({"kind": "pgbackrest", "stanza": "s", "options": {"repo1-path": "/a b"}}, "characters"),
        ({"kind": "nosuch"}, "not supported"),
    ],
)
def test_bad_catalog_configs_are_refused_with_the_fix(raw, words):
    with pytest.raises(InvalidInputError, match=words):
        open_catalog(raw)


def test_cnpg_is_a_catalog_but_not_a_local_repository():
    with pytest.raises(InvalidInputError, match="kubernetes"):
        open_repository({"kind": "cnpg", "cluster": "c", "namespace": "n"})


def test_connection_fields_become_pgbackrest_variables():
    env = pgbackrest_environment(
        login="AKIA",
        password="s3cret",
        extra={"repo1-s3-region": "eu-west-1", "PGBACKREST_REPO1_CIPHER_PASS": "p"},
        repo=1,
    )
    assert env == {
        "PGBACKREST_REPO1_S3_KEY": "AKIA",
        "PGBACKREST_REPO1_S3_KEY_SECRET": "s3cret",
        "PGBACKREST_REPO1_S3_REGION": "eu-west-1",
        "PGBACKREST_REPO1_CIPHER_PASS": "p",
    }
    with pytest.raises(InvalidInputError, match="neither a pgBackRest option"):
        pgbackrest_environment(login=None, password=None, extra={"Bad Key": "x"}, repo=1)


def test_credentials_reach_pgbackrest_by_environment_never_argv(monkeypatch, tmp_path: Path):
    seen: dict = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, env=kwargs["env"])
        return subprocess.CompletedProcess(argv, 0, "[]", "")

    monkeypatch.setattr(command.subprocess, "run", fake_run)
    monkeypatch.setattr(command, "binary", lambda: "/usr/bin/pgbackrest")
    config = PgBackRestConfig.parse({"stanza": "demo", "options": {"repo1-type": "s3"}})
    with catalog_environment({"PGBACKREST_REPO1_S3_KEY_SECRET": "hunter2"}):
        command.run(config, "info", ["--output=json"], workdir=tmp_path)
    assert seen["env"]["PGBACKREST_REPO1_S3_KEY_SECRET"] == "hunter2"
    assert not any("hunter2" in arg for arg in seen["argv"])
    assert "--repo1-type=s3" in seen["argv"]
    assert f"--lock-path={tmp_path}/lock" in seen["argv"]


def test_only_read_only_commands_run():
    config = PgBackRestConfig.parse({"stanza": "demo"})
    for verb in ("backup", "expire", "stanza-create", "archive-push", "stanza-delete"):
        with pytest.raises(Exception, match="never runs"):
            command.run(config, verb, [], workdir=Path("/tmp"))


def _spec(catalog: dict) -> dict:
    return {
        "drill": "pgbr",
        "catalog": catalog,
        "tiers": [{"name": "primary", "select": "latest", "sandbox": {"kind": "local"}}],
        "services": {"db": {"kind": "postgres", "database": "app"}},
        "checks": [
            {"name": "c", "kind": "sql", "target": "db", "query": "select 1", "expect": {"eq": 1}}
        ],
    }


def test_a_drill_spec_takes_a_pgbackrest_catalog_and_names_what_is_wrong():
    from drillkit.spec import SpecError, parse_spec

    spec = parse_spec(_spec({"kind": "pgbackrest", "stanza": "main", "pgbackrest_conn_id": "s3"}))
    assert spec.catalog["kind"] == "pgbackrest"
    with pytest.raises(SpecError, match=r"catalog\.stanzza: unknown key"):
        parse_spec(_spec({"kind": "pgbackrest", "stanzza": "main"}))
    with pytest.raises(SpecError, match="credential"):
        parse_spec(_spec({**_S, "options": {"repo1-s3-key": "AKIA"}}))


def test_the_readme_pgbackrest_example_is_a_valid_catalog():
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```yaml pgbackrest\n(.*?)```", readme, flags=re.S)
    catalog = yaml.safe_load(block)["catalog"]
    from drillkit.spec import parse_spec

    assert parse_spec(_spec(catalog)).catalog["pgbackrest_conn_id"] == "pgbackrest_s3"
