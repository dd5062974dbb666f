"""The barman_cloud catalog's pure parts: its config, backup.info, credentials, the gate's rule
for a backup no manifest verified, and the tools' reachability check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drillkit.barman import credentials, tools
from drillkit.barman.catalog import BarmanCloudCatalog, from_config, parse_backup_info
from drillkit.catalog.registry import open_catalog
from drillkit.exceptions import InvalidInputError
from drillkit.gate import ERROR, PASSED, judge_tier

pytestmark = pytest.mark.unit
GOOD = {"kind": "barman_cloud", "destination": "s3://drills/pg", "server_name": "orders-db"}


def test_registered_kind_opens_without_io():
    catalog = open_catalog({**GOOD, "endpoint_url": "http://127.0.0.1:9000", "aws_conn_id": "s3"})
    assert isinstance(catalog, BarmanCloudCatalog)
    assert catalog.descriptor() == {**GOOD, "endpoint_url": "http://127.0.0.1:9000",
                                    "aws_conn_id": "s3"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"destination": "/backups/pg"}, "is not an s3://bucket/path URL"),
        ({"destination": "s3://ab/pg"}, "is not a valid bucket name"),
        ({"server_name": "orders db"}, "is not a Barman server name"),
        ({"endpoint_url": "127.0.0.1:9000"}, "is not an http(s) URL"),
        ({"bucket": "x"}, "unknown keys ['bucket']"),
        ({"aws_conn_id": ""}, "must be an Airflow connection id"),
    ],
)
def test_bad_config_is_refused_with_the_fix(change, words):
    with pytest.raises(InvalidInputError) as refused:
        from_config({**GOOD, **change})
    assert words in str(refused.value)


def test_spec_validates_a_barman_cloud_catalog(tmp_path: Path):
    from drillkit.spec import SpecError, load_spec

    spec = tmp_path / "d.yaml"
    body = (
        "drill: d\ntiers: [{name: a, select: latest, sandbox: {kind: local}}]\n"
        "services: {db: {kind: postgres, database: app}}\n"
        "checks: [{name: c, kind: integrity, target: db}]\n"
    )
    spec.write_text(f"catalog: {GOOD}\n" + body)
    assert load_spec(spec).catalog == GOOD
    spec.write_text("catalog: {kind: barman_cloud, destination: s3://drills/pg}\n" + body)
    with pytest.raises(SpecError) as refused:
        load_spec(spec)
    assert "catalog" in str(refused.value) and "server_name" in str(refused.value)


def test_backup_info_lines_parse():
    info = parse_backup_info(
        "backup_label='START WAL LOCATION: 0/C000028'\nbegin_xlog=0/C000028\nstatus=STARTED\n"
        "end_xlog=None\nversion=180006\n"
    )
    assert info["status"] == "STARTED" and info["begin_xlog"] == "0/C000028"
    assert info["end_xlog"] == "None" and info["version"] == "180006"


def test_aws_conn_id_outside_airflow_is_refused_with_the_fix(monkeypatch):
    with pytest.raises(InvalidInputError) as refused:
        credentials.resolve("s3-backups")
    assert "AWS_ACCESS_KEY_ID" in str(refused.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    monkeypatch.setenv("UNRELATED", "x")
    assert credentials.resolve(None).get("AWS_SECRET_ACCESS_KEY") == "from-env"
    assert "UNRELATED" not in credentials.resolve(None)
    with credentials.using_resolver(lambda conn: {"AWS_ACCESS_KEY_ID": f"key-of-{conn}"}):
        assert credentials.resolve("s3") == {"AWS_ACCESS_KEY_ID": "key-of-s3"}


def test_tools_get_only_credential_variables():
    with pytest.raises(InvalidInputError):
        tools.tool_env({"LD_PRELOAD": "/tmp/x.so"})
    env = tools.tool_env({"AWS_ACCESS_KEY_ID": "k"})
    assert env["AWS_ACCESS_KEY_ID"] == "k" and "LD_PRELOAD" not in env


@pytest.mark.skipif(os.geteuid() != 0, reason="the OS user split exists only when run as root")
def test_tools_under_a_private_directory_are_named_with_the_fix(tmp_path: Path, monkeypatch):
    from drillkit import pgbin

    private = tmp_path / "private"  # pytest's tmp_path sits under a 0700 directory
    (private / "bin").mkdir(parents=True)
    script = private / "bin" / "barman-cloud-wal-restore"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    os.chmod(private, 0o700)
    user = pgbin.os_user()
    assert user is not None and not tools._runs_as(script, user)
    monkeypatch.setenv(tools.BIN_ENV, str(private / "bin"))
    tools.bin_dir.cache_clear()
    try:
        with pytest.raises(InvalidInputError) as refused:
            tools.bin_dir()
    finally:
        tools.bin_dir.cache_clear()
    assert "cannot be run by the PostgreSQL OS user" in str(refused.value)
    assert tools.BIN_ENV in str(refused.value)


def _judge(results, findings):
    return judge_tier(
        "t",
        selected=True,
        coordinate={"backup_id": "b1", "findings": []},
        sandbox={"restore_seconds": 1.0, "findings": findings},
        validation={"status": "passed", "results": results, "findings": []},
        errors=[],
        rto_seconds=60,
        dry_run=False,
    )


def test_a_backup_no_manifest_verified_passes_only_on_integrity_and_pitr():
    unverified = [{"code": "BACKUP_UNVERIFIABLE", "severity": "warning", "message": "m"}]
    sql_only = [{"name": "n", "kind": "sql", "status": "passed"}]
    both = [
        {"name": "p", "kind": "pitr", "status": "passed"},
        {"name": "i", "kind": "integrity", "status": "passed"},
    ]
    assert _judge(sql_only, unverified).status == ERROR  # never PASS on a count(*) alone
    assert "integrity and pitr" in _judge(sql_only, unverified).reason
    assert _judge(both, unverified).status == PASSED
    assert _judge(sql_only, []).status == PASSED  # verified backups keep today's rule


def test_an_unreachable_store_is_transient_and_names_it(monkeypatch):
    from drillkit.exceptions import TransientDrillError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unreachable-secret")
    catalog = from_config({**GOOD, "endpoint_url": "http://127.0.0.1:9"})  # discard port
    with pytest.raises(TransientDrillError) as refused:
        catalog.snapshot()
    assert refused.value.code == "STORE_UNREACHABLE"
    assert "s3://drills/pg" in str(refused.value)
    assert "unreachable-secret" not in str(refused.value)


def test_scenario_create_barman_cloud_refuses_bad_options_with_the_fix(tmp_path: Path):
    import subprocess
    import sys

    drillkit = str(Path(sys.executable).parent / "drillkit")
    base = [drillkit, "scenario", "create", str(tmp_path / "s"), "--tool", "barman-cloud"]
    missing = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "needs --endpoint-url URL" in missing.stderr
    wrong = subprocess.run(
        [*base, "--endpoint-url", "http://127.0.0.1:9", "--backup-format", "tar"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and "are pg_basebackup options" in wrong.stderr
    assert not (tmp_path / "s").exists()
