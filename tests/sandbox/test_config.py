"""The sandbox configuration writer: what is kept from a backup, and a restore_command that no
path can turn into shell."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from drillkit.exceptions import InvalidInputError
from drillkit.sandbox import config


def _postgres_substitutes(command: str, *, f: str, p: str) -> str:
    """What the server does to restore_command before /bin/sh runs it (%f, %p, %r, %%)."""
    table = {"f": f, "p": p, "r": "000000010000000000000000", "%": "%"}
    return re.sub(r"%(.)", lambda m: table.get(m[1], m[0]), command)


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "with space",
        "$(touch pwned)",
        "`touch pwned`",
        "quote ' and \" both",
        "percent %p %f %% %r",
        "semi; touch pwned &",
        "-dash",
    ],
)
def test_restore_command_copies_from_any_quotable_path_and_runs_nothing_else(tmp_path, name):
    archive = tmp_path / name / "wal"
    archive.mkdir(parents=True)
    segment = "000000010000000000000003"
    (archive / segment).write_bytes(b"wal bytes")
    cwd = tmp_path / "data"
    (cwd / "pg_wal").mkdir(parents=True)
    command = _postgres_substitutes(
        config.restore_command(archive), f=segment, p="pg_wal/RECOVERYXLOG"
    )
    subprocess.run(["/bin/sh", "-c", command], cwd=cwd, check=True)
    assert (cwd / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"wal bytes"
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def test_a_path_the_configuration_cannot_hold_is_refused_by_name():
    with pytest.raises(InvalidInputError, match=r"control character.*rename"):
        config.restore_command(Path("/srv/repo\nwal"))


def test_only_presentation_settings_are_kept_and_includes_are_never_followed(tmp_path):
    (tmp_path / "postgresql.conf").write_text(
        "timezone = 'Europe/Paris'  # comment\n"
        "search_path = '\"$user\", public'\n"
        "include '/etc/postgresql/extra.conf'\n"
        "include_dir 'conf.d'\n"
        "archive_command = 'cp %p /backup/%f'\n"
        "shared_preload_libraries = 'pg_cron'\n"
    )
    (tmp_path / "postgresql.auto.conf").write_text(
        "timezone = 'UTC'\nrecovery_end_command = 'rm -rf /'\ndatestyle = 'iso; touch x'\n"
    )
    settings, seen = config.read_backup_settings(tmp_path)
    assert "include" not in settings and "include_dir" in seen and "include" in seen
    full, kept = config.sandbox_config(
        major=18,
        backup_settings=settings,
        control={"max_connections": "300"},
        socket_dir=tmp_path / "run",
        hba=tmp_path / "hba",
        ident=tmp_path / "ident",
        port=5432,
        tcp=False,
        shared_buffers="128MB",
        recovery={"recovery_target": "immediate"},
        restore=config.restore_command(tmp_path / "wal"),
    )
    # auto.conf wins, as in PostgreSQL; a value with shell or SQL punctuation is not kept.
    assert kept == {"timezone": "UTC", "search_path": '"$user", public'}
    for forced in ("archive_command", "recovery_end_command", "shared_preload_libraries"):
        assert full[forced] == ""
    assert full["max_logical_replication_workers"] == "0" and full["max_wal_senders"] == "0"
    assert full["max_connections"] == "300" and full["event_triggers"] == "off"
    described = config.describe(kept, {"max_connections": "300"}, seen)
    assert "archive_command" in described["ignored_from_backup"]
    assert "timezone" not in described["ignored_from_backup"]


def test_the_backups_files_are_replaced_never_written_through(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shared = tmp_path / "repository-copy.conf"
    shared.write_text("archive_command = 'x'\n")
    (data / "postgresql.auto.conf").hardlink_to(shared)  # a copy sharing storage
    (data / "standby.signal").write_text("")
    config.write_config(data, {"port": "5432"})
    assert shared.read_text() == "archive_command = 'x'\n"
    assert (data / "postgresql.conf").read_text().endswith("port = '5432'\n")
    assert not (data / "standby.signal").exists()


def test_pg_control_capacities_are_read_from_pg_controldata_output():
    text = (
        "max_connections setting:              250\n"
        "max_worker_processes setting:         8\n"
        "max_wal_senders setting:              10\n"
        "max_prepared_xacts setting:           5\n"
        "max_locks_per_xact setting:           64\n"
    )
    assert config.control_settings(text) == {
        "max_connections": "250",
        "max_worker_processes": "8",
        "max_prepared_transactions": "5",
        "max_locks_per_transaction": "64",
    }
