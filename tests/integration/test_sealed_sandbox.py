"""The sealed sandbox, on real PostgreSQL 18: a restored production's replication, configuration
and paths do nothing outside the sandbox. Every test hashes the repository before and after."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from restorekit import select, tree_digest
from sealkit import Production, Server, free_port

from drillkit import pgbin
from drillkit.sandbox.local import LocalSandboxBackend

pytestmark = pytest.mark.integration


def _sandbox_sql(record: dict, query: str, db: str = "postgres") -> list[tuple]:
    endpoint = record["endpoints"]["postgres"]
    host = endpoint["host"]
    if not host.startswith("/"):  # a TCP endpoint: drillkit itself goes through the socket
        host = str(Path(record["path"]) / "run")
    conn = psycopg2.connect(host=host, port=endpoint["port"], user="postgres", dbname=db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.mark.parametrize("network", ["namespace", "open"])
def test_a_restored_subscription_never_reaches_its_publisher(workdir, monkeypatch, network):
    """With the network open (no namespace) the publisher is reachable: the configuration and
    the sealing step alone must hold."""
    from drillkit.sandbox import local, netns
    from drillkit.sandbox import seal as sealing

    if network == "open":
        monkeypatch.setattr(
            local.netns, "available", lambda: netns.Namespace(None, "open (test)", tcp=False)
        )
    publisher = Server(workdir, "publisher", conf="wal_level = logical\n", port=free_port())
    production = Production(workdir)
    try:
        publisher.sql("create table items (id int primary key)")
        publisher.sql("create publication pub for table items")
        publisher.sql("insert into items select generate_series(1, 10)")
        production.sql("create table items (id int primary key)")
        production.sql(
            f"create subscription sub connection 'host=127.0.0.1 port={publisher.port} "
            "dbname=postgres user=postgres' publication pub"
        )
        deadline = time.monotonic() + 60
        while production.sql("select count(*) from items")[0][0] < 10:
            assert time.monotonic() < deadline, "the subscription never synced"
            time.sleep(0.1)
        production.basebackup()
        production.stop()  # the real subscriber is down: the publisher keeps rows for it
        publisher.sql("insert into items select generate_series(11, 20)")
        slot = "select confirmed_flush_lsn, active from pg_replication_slots where slot_name='sub'"
        before = publisher.sql(slot)
        digest = tree_digest(production.repo)

        # Widen the window between promotion and sealing: still enabled, the subscription must
        # not start an apply worker (there are no logical replication workers at all).
        in_window: list[tuple] = []
        seal = sealing.seal

        def slow_seal(connect, names):
            in_window.append(("slow_seal ran",))
            admin = connect("postgres")
            try:
                with admin.cursor() as cur:
                    cur.execute("select subenabled from pg_subscription")
                    assert cur.fetchall() == [(True,)]
            finally:
                admin.close()
            for _ in range(30):
                in_window.extend(publisher.sql("select application_name from pg_stat_replication"))
                time.sleep(0.1)
            return seal(connect, names)

        monkeypatch.setattr(sealing, "seal", slow_seal)  # what seal_for_checks calls
        backend = LocalSandboxBackend(root=workdir / "sandboxes")
        record = backend.provision(
            select(production.repo, None), drill_id="t", name="sub", ttl=timedelta(hours=1)
        )
        try:
            assert record["isolation"]["network"] == network
            assert in_window == [("slow_seal ran",)], (
                "an apply worker connected before the subscription was sealed (or the widened "
                "window never ran)"
            )
            assert record["sealed"]["subscriptions_disabled"] == ["postgres.sub"]
            assert _sandbox_sql(record, "select subenabled, subslotname from pg_subscription") == [
                (False, None)
            ]
            # Give an apply worker every chance to start and connect, as it did before.
            seen = []
            for _ in range(40):
                seen += publisher.sql(
                    "select application_name from pg_stat_replication "
                    "union all select 'active' from pg_replication_slots where active"
                )
                time.sleep(0.1)
            assert seen == [], f"the sandbox connected to the publisher: {seen}"
            assert _sandbox_sql(record, "select count(*) from items") == [(10,)]
            assert _sandbox_sql(record, "show max_logical_replication_workers") == [("0",)]
        finally:
            backend.teardown(record["id"])
        assert publisher.sql(slot) == before, "the publisher's slot moved"
        assert tree_digest(production.repo) == digest
    finally:
        production.stop()
        publisher.stop()


def test_the_backups_configuration_runs_nothing_and_writes_nowhere(workdir):
    outside = workdir / "outside"
    outside.mkdir()
    pgbin.give_to_server_user(outside)
    (outside / "extra.conf").write_text("cluster_name = 'from_an_include'\n")
    os.chmod(outside / "extra.conf", 0o644)
    hostile = (
        f"recovery_end_command = 'touch {outside}/recovery_end_command_ran'\n"
        f"archive_cleanup_command = 'touch {outside}/archive_cleanup_command_ran'\n"
        f"restore_command = 'touch {outside}/their_restore_command_ran'\n"
        f"external_pid_file = '{outside}/external.pid'\n"
        "shared_preload_libraries = 'pg_prewarm'\n"
        "logging_collector = on\n"
        f"log_directory = '{outside}/logs'\n"
        f"unix_socket_directories = '{outside}'\n"
        "synchronous_standby_names = '*'\n"
        "timezone = 'Asia/Tokyo'\n"
    )
    includes = f"include_if_exists = '{outside}/extra.conf'\ninclude_dir = '{outside}'\n"
    production = Production(workdir)
    try:
        # Written after start and never reloaded: production itself does not run them, but
        # pg_basebackup copies both files into the backup as they are.
        with (production.data / "postgresql.auto.conf").open("a") as handle:
            handle.write(hostile)
        with (production.data / "postgresql.conf").open("a") as handle:
            handle.write(includes)
        # -R: standby.signal and primary_conninfo (production's address) in the backup too.
        production.basebackup(standby=True)
    finally:
        production.stop()
    digest = tree_digest(production.repo)
    backend = LocalSandboxBackend(root=workdir / "sandboxes")
    record = backend.provision(
        select(production.repo, None), drill_id="t", name="conf", ttl=timedelta(hours=1)
    )
    try:
        config = record["configuration"]
        assert config["kept_from_backup"]["timezone"] == "Asia/Tokyo"
        for name in (
            "recovery_end_command",
            "archive_cleanup_command",
            "external_pid_file",
            "shared_preload_libraries",
            "log_directory",
            "include_if_exists",
            "include_dir",
            "restore_command",
            "archive_command",
            "primary_conninfo",
            "synchronous_standby_names",
        ):
            assert name in config["ignored_from_backup"], name
        assert not (Path(record["path"]) / "data" / "standby.signal").exists()
        assert set(config["kept_from_backup"]) <= {
            "timezone",
            "datestyle",
            "default_text_search_config",
        }
        shown = _sandbox_sql(
            record,
            "select current_setting('shared_preload_libraries'), current_setting('cluster_name'), "
            "current_setting('external_pid_file'), current_setting('TimeZone'), "
            "(select count(*) from pg_stat_activity where backend_type like 'autoprewarm%')",
        )
        assert shown == [("", "", "", "Asia/Tokyo", 0)]
    finally:
        backend.teardown(record["id"])
    assert sorted(p.name for p in outside.iterdir()) == ["extra.conf"]
    assert tree_digest(production.repo) == digest


@pytest.mark.parametrize("name", ["repo $(touch pwned) `touch pwned2` 'q\" %p %f %% ;"])
def test_a_repository_path_with_shell_syntax_restores_and_runs_nothing(workdir, name):
    production = Production(workdir, repo_name=name)
    try:
        production.sql("create table t (id int)")
        production.sql("insert into t select generate_series(1, 5)")
        production.basebackup()
        production.sql("insert into t select generate_series(6, 9)")  # needs WAL from the archive
        production.switch()
    finally:
        production.stop()
    digest = tree_digest(production.repo)
    backend = LocalSandboxBackend(root=workdir / "sandboxes")
    record = backend.provision(
        select(production.repo, None), drill_id="t", name="shell", ttl=timedelta(hours=1)
    )
    try:
        assert _sandbox_sql(record, "select count(*) from t") == [(9,)]
        assert not list(Path(record["path"]).rglob("pwned*"))  # restore_command's cwd
    finally:
        backend.teardown(record["id"])
    for leftover in ("pwned", "pwned2"):
        assert not list(Path("/").glob(leftover)) and not (workdir / leftover).exists()
        assert not list(workdir.rglob(leftover))
    assert tree_digest(production.repo) == digest


def _manifest(record: dict, database: str) -> dict:
    endpoint = {**record["endpoints"]["postgres"], "database": database}
    entry = {"kind": "postgres", "resolved_by": "provisioned", "endpoint": endpoint}
    return {
        "schema": "drillkit.routing_manifest/v1",
        "drill_id": "00000000-0000-4000-8000-000000000011",
        "environment": "drill",
        "context": {"header": "X-Drill-Context", "value": "unused", "expires_at": None},
        "services": {"app-db": entry},
        "production": {"hosts": [], "cidrs": [], "dsns": []},
    }


def test_hostile_checks_neither_pass_nor_change_anything(workdir):
    """Every way a check could leave read-only, reach files, programs, other roles or servers."""
    from drillkit.checks import run_checks

    elsewhere = Server(workdir, "elsewhere", port=free_port())  # another server on loopback
    production = Production(workdir)
    marks = workdir / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)  # the server OS user could write here, if anything let it
    try:
        elsewhere.sql("create table precious (id int); insert into precious values (1)")
        production.sql("create table t (id int); insert into t select generate_series(1, 5)")
        production.sql("create extension dblink; create extension postgres_fdw")
        production.sql(
            f"create server other foreign data wrapper postgres_fdw options (host '127.0.0.1', "
            f"port '{elsewhere.port}', dbname 'postgres'); create user mapping for public server "
            "other options (user 'postgres', password 'x'); create foreign table remote "
            "(id int) server other options (table_name 'precious')"
        )
        production.basebackup()
    finally:
        production.stop()
    digest = tree_digest(production.repo)
    conninfo = f"host=127.0.0.1 port={elsewhere.port} dbname=postgres user=postgres"
    hostile = {
        "commit-then-write": "COMMIT; INSERT INTO t VALUES (100)",
        "commit-alone": "COMMIT",
        "do-commit": "DO $$BEGIN COMMIT; INSERT INTO t VALUES (101); END$$",
        "read-write-mode": "SET TRANSACTION READ WRITE",
        "insert": "INSERT INTO t VALUES (102) RETURNING id",
        "multi": "SELECT 1; SELECT 2",
        "copy-program": f"COPY (SELECT 1) TO PROGRAM 'touch {marks}/program'",
        "copy-file": f"COPY (SELECT 1) TO '{marks}/file'",
        "lo-export": f"SELECT lo_export(lo_from_bytea(0, 'x'), '{marks}/lo')",
        "read-host-file": "SELECT pg_read_file('/etc/hostname')",
        "dblink": f"SELECT dblink_exec('{conninfo}', 'INSERT INTO precious VALUES (2)')",
        "fdw": "SELECT count(*) FROM remote",
        "set-role": "SET ROLE postgres",
        "session-auth": "SET SESSION AUTHORIZATION postgres",
        "alter-system": f"ALTER SYSTEM SET archive_command = 'touch {marks}/archive'",
    }
    checks = [
        {"name": name, "kind": "sql", "target": "app-db", "query": query, "expect": {"rows": 0}}
        for name, query in hostile.items()
    ]
    # write: true widens the role to pg_write_all_data, and nothing else.
    checks += [
        {
            "name": f"write-{name}",
            "kind": "sql",
            "target": "app-db",
            "query": hostile[name],
            "expect": {"rows": 0},
            "write": True,
        }
        for name in ("copy-program", "copy-file", "set-role", "alter-system", "multi", "dblink")
    ]
    backend = LocalSandboxBackend(root=workdir / "sandboxes")
    record = backend.provision(
        select(production.repo, None), drill_id="t", name="hostile", ttl=timedelta(hours=1)
    )
    try:
        document = run_checks(checks, _manifest(record, "postgres"), sandbox=record)
        results = {r["name"]: r for r in document["results"]}
        passed = [name for name, r in results.items() if r["status"] != "error"]
        assert passed == [], {name: results[name] for name in passed}
        assert document["status"] == "error"
        codes = {f["subject"]: f["code"] for f in document["findings"] if f.get("subject")}
        assert codes["commit-then-write"] == "CHECK_MULTIPLE_STATEMENTS"
        assert codes["commit-alone"] == "CHECK_ENDED_TRANSACTION"
        assert codes["insert"] == "WRITE_IN_READ_ONLY_CHECK"
        assert codes["copy-program"] == "CHECK_NOT_PERMITTED"
        assert codes["set-role"] == "CHECK_NOT_PERMITTED"
        assert codes["read-write-mode"] == "CHECK_ENDED_TRANSACTION"
        for name in ("copy-file", "lo-export", "read-host-file", "session-auth", "write-copy-file"):
            assert codes[name] == "CHECK_NOT_PERMITTED", name
        # Nothing happened: the sandbox's data, the other server, the marks directory.
        assert _sandbox_sql(record, "select count(*) from t") == [(5,)]
        assert _sandbox_sql(record, "select count(*) from pg_largeobject_metadata") == [(0,)]
        assert _sandbox_sql(
            record, "select count(*) from pg_file_settings where sourcefile like '%auto.conf'"
        ) == [(0,)]
        # A well-behaved check still reads, and a write check still writes, as non-superusers.
        fine = [
            {
                "name": "reads",
                "kind": "sql",
                "target": "app-db",
                "query": "SELECT count(*) FROM t WHERE id <= 5",
                "expect": {"equals": 5},
            },
            {
                "name": "who",
                "kind": "sql",
                "target": "app-db",
                "query": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                "expect": {"equals": False},
            },
            {
                "name": "writes",
                "kind": "sql",
                "target": "app-db",
                "write": True,
                "query": "INSERT INTO t VALUES (6) RETURNING id",
                "expect": {"equals": 6},
            },
            {"name": "integrity", "kind": "integrity", "target": "app-db", "timeout": "60s"},
        ]
        good = run_checks(fine, _manifest(record, "postgres"), sandbox=record)
        assert good["status"] == "passed", good
        integrity = next(r for r in good["results"] if r["name"] == "integrity")
        assert integrity["observed"]["amcheck"] == "passed", integrity
    finally:
        backend.teardown(record["id"])
        elsewhere_rows = elsewhere.sql("select count(*) from precious")
        elsewhere.stop()
    assert elsewhere_rows == [(1,)]
    assert list(marks.iterdir()) == []
    assert tree_digest(production.repo) == digest


@pytest.fixture
def small_repo(workdir):
    production = Production(workdir)
    try:
        production.sql("create table t (id int); insert into t select generate_series(1, 5)")
        production.sql("create extension dblink")
        production.basebackup()
    finally:
        production.stop()
    return production.repo


def test_the_sandbox_server_has_no_network(workdir, small_repo):
    elsewhere = Server(workdir, "elsewhere", port=free_port())
    digest = tree_digest(small_repo)
    backend = LocalSandboxBackend(root=workdir / "sandboxes")
    record = backend.provision(
        select(small_repo, None), drill_id="t", name="netns", ttl=timedelta(hours=1)
    )
    try:
        assert record["isolation"]["network"] == "namespace"
        assert record["isolation"]["warnings"] == []
        pid = int((Path(record["path"]) / "data" / "postmaster.pid").read_text().split()[0])
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        # Even the superuser, through dblink, reaches nothing: not the host's loopback server.
        conninfo = f"host=127.0.0.1 port={elsewhere.port} dbname=postgres user=postgres"
        with pytest.raises(psycopg2.OperationalError, match=r"refused|unreachable"):
            _sandbox_sql(record, f"select dblink_connect('{conninfo}')")
        # No TCP client ever reached it (this query comes through its unix socket).
        tcp_clients = "select count(*) from pg_stat_activity where client_port > 0"
        assert elsewhere.sql(tcp_clients) == [(0,)]
    finally:
        backend.teardown(record["id"])
        elsewhere.stop()
    assert tree_digest(small_repo) == digest


def test_a_tcp_port_is_relayed_into_the_namespace_and_asks_for_a_password(workdir, small_repo):
    from drillkit.checks import run_checks
    from drillkit.sandbox.readiness import sandbox_readiness
    from drillkit.sandbox.relay import start_time
    from drillkit.sandbox.roles import read_login

    digest = tree_digest(small_repo)
    backend = LocalSandboxBackend(root=workdir / "sandboxes", port="auto")
    record = backend.provision(
        select(small_repo, None), drill_id="t", name="tcp", ttl=timedelta(hours=1)
    )
    label = json.loads((Path(record["path"]) / "drillkit-sandbox.json").read_text())
    try:
        endpoint = record["endpoints"]["postgres"]
        assert endpoint["host"] == "127.0.0.1"
        assert record["isolation"]["tcp"] == {"auth": "scram-sha-256", "relayed": True}
        password_file = Path(record["check_roles"]["roles_file"])
        assert password_file.stat().st_mode & 0o777 == 0o600
        user, password = read_login(password_file, "read")
        assert password not in json.dumps(record) and password not in json.dumps(label)
        tcp = {"host": "127.0.0.1", "port": endpoint["port"], "dbname": "postgres"}
        for who in ("postgres", user):  # no password: refused, superuser or not
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(user=who, connect_timeout=5, **tcp).close()
        conn = psycopg2.connect(user=user, password=password, connect_timeout=5, **tcp)
        try:
            with conn.cursor() as cur:
                cur.execute("select rolsuper from pg_roles where rolname = current_user")
                assert cur.fetchone() == (False,)
        finally:
            conn.close()
        assert sandbox_readiness(record)["ready"] is True
        document = run_checks(
            [
                {
                    "name": "n",
                    "kind": "sql",
                    "target": "app-db",
                    "query": "select count(*) from t",
                    "expect": {"equals": 5},
                }
            ],
            _manifest(record, "postgres"),
            sandbox=record,
        )
        assert document["status"] == "passed", document
        assert start_time(label["relay"]["pid"]) == label["relay"]["start_time"]
    finally:
        backend.teardown(record["id"])
    assert start_time(label["relay"]["pid"]) is None, "the relay outlived its sandbox"
    assert tree_digest(small_repo) == digest


def test_without_a_namespace_every_report_says_the_network_is_open(
    workdir, small_repo, monkeypatch
):
    from drillkit.checks import run_checks
    from drillkit.sandbox import local, netns

    monkeypatch.setattr(
        local.netns, "available", lambda: netns.Namespace(None, "no namespace (test)", tcp=False)
    )
    digest = tree_digest(small_repo)
    backend = LocalSandboxBackend(root=workdir / "sandboxes")
    record = backend.provision(
        select(small_repo, None), drill_id="t", name="open", ttl=timedelta(hours=1)
    )
    try:
        assert record["isolation"]["network"] == "open"
        document = run_checks(
            [
                {
                    "name": "n",
                    "kind": "sql",
                    "target": "app-db",
                    "query": "select 1",
                    "expect": {"equals": 1},
                }
            ],
            _manifest(record, "postgres"),
            sandbox=record,
        )
        (finding,) = [f for f in document["findings"] if f["code"] == "SANDBOX_NETWORK_OPEN"]
        assert finding["severity"] == "warning" and "no namespace (test)" in finding["message"]
        assert document["status"] == "passed"  # a warning: the other layers still hold
    finally:
        backend.teardown(record["id"])
    assert tree_digest(small_repo) == digest
