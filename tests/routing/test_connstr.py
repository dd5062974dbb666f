"""Unit tests of drillkit.routing.connstr: overrides, quoting, redaction, env and service files.

libpq's own parser (psycopg2.extensions.parse_dsn) and SQLAlchemy's make_url are the oracles.
"""

from __future__ import annotations

import pytest
from psycopg2.extensions import parse_dsn as libpq_parse
from sqlalchemy.engine import make_url

from drillkit.exceptions import InvalidInputError
from drillkit.routing.connstr import (
    PgTarget,
    build_url,
    env_vars,
    format_keyvalue,
    has_password,
    override_dsn,
    parse_dsn,
    parse_keyvalue,
    pg_service_entry,
    redact_dsn,
)

pytestmark = pytest.mark.unit

SOCKET = {"host": "/tmp/drill/run", "port": 5432, "database": "app"}
SECRET = "s3cr%40t-prod"


# --- URL overrides ---------------------------------------------------------------------------


def test_url_override_to_socket_keeps_driver_user_and_params_and_drops_password() -> None:
    dsn = (
        f"postgresql+psycopg2://app:{SECRET}@db.prod.internal:6432/prod"
        "?sslmode=require&application_name=orders%20api&hostaddr=10.0.0.1&password=x"
    )
    out = override_dsn(dsn, SOCKET)
    assert out == (
        "postgresql+psycopg2://app@/app?host=/tmp/drill/run&port=5432"
        "&sslmode=require&application_name=orders%20api"
    )
    assert libpq_parse(out.replace("+psycopg2", "")) == {
        "user": "app",
        "dbname": "app",
        "host": "/tmp/drill/run",
        "port": "5432",
        "sslmode": "require",
        "application_name": "orders api",
    }
    url = make_url(out)
    assert (url.drivername, url.username, url.password, url.database) == (
        "postgresql+psycopg2",
        "app",
        None,
        "app",
    )
    assert url.query["host"] == "/tmp/drill/run"


def test_url_override_keep_password_keeps_both_spellings() -> None:
    dsn = f"postgresql://app:{SECRET}@db.prod/prod?password=q"
    out = override_dsn(dsn, SOCKET, keep_password=True)
    assert out == f"postgresql://app:{SECRET}@/app?host=/tmp/drill/run&port=5432&password=q"
    assert libpq_parse(out)["password"] == "q"  # libpq: the query parameter wins


def test_url_override_to_ipv6_tcp_brackets_the_host() -> None:
    out = override_dsn("postgres://app@db.prod:5432/prod", {"host": "[::1]", "port": 6543})
    assert out == "postgres://app@[::1]:6543/prod"
    assert libpq_parse(out)["host"] == "::1"


def test_url_override_without_database_keeps_path_and_dbname_param() -> None:
    out = override_dsn("postgresql://u@h/orig?dbname=other", {"host": "127.0.0.1", "port": 5433})
    assert out == "postgresql://u@127.0.0.1:5433/orig?dbname=other"


def test_url_override_replaces_multi_host_lists() -> None:
    out = override_dsn(
        "postgresql://u@p1:5432,p2:5433/db?target_session_attrs=read-write",
        {"host": "10.99.0.1", "port": 5432},
    )
    assert out == "postgresql://u@10.99.0.1:5432/db?target_session_attrs=read-write"
    assert parse_dsn(out).hosts == (("10.99.0.1", 5432),)


def test_url_override_replaces_percent_encoded_socket_in_netloc() -> None:
    out = override_dsn("postgresql://%2Fvar%2Frun%2Fpostgresql/db", SOCKET)
    assert out == "postgresql:///app?host=/tmp/drill/run&port=5432"
    assert libpq_parse(out)["host"] == "/tmp/drill/run"


@pytest.mark.parametrize(
    ("directory", "database"),
    [
        ("/tmp/a b/run", "my db"),
        ("/tmp/x+y&z=1/run", "d&b?#"),
        ("/tmp/per%cent/run", "ünï"),
    ],
)
def test_url_override_percent_encodes_special_characters(directory: str, database: str) -> None:
    out = override_dsn("postgresql://u%40corp@h/prod", {"host": directory, "database": database})
    parsed = libpq_parse(out)
    assert (parsed["host"], parsed["dbname"], parsed["user"]) == (directory, database, "u@corp")
    url = make_url(out)
    assert (url.query["host"], url.database, url.username) == (directory, database, "u@corp")


def test_url_override_of_url_without_user() -> None:
    out = override_dsn("postgresql://h/db", {"host": "h2", "port": 1})
    assert out == "postgresql://h2:1/db"


# --- key=value overrides and quoting ---------------------------------------------------------


def test_keyvalue_override_keeps_everything_but_target_and_password() -> None:
    dsn = (
        "host=db.prod.internal hostaddr=10.0.0.1 port=5432 dbname=prod user=app "
        r"password='p w\'x' options='-c search_path=orders' sslmode=verify-full"
    )
    out = override_dsn(dsn, {"host": "/tmp/x y/run", "port": 5433, "database": "app"})
    assert out == (
        "host='/tmp/x y/run' port=5433 dbname=app user=app "
        "options='-c search_path=orders' sslmode=verify-full"
    )
    assert libpq_parse(out) == {
        "host": "/tmp/x y/run",
        "port": "5433",
        "dbname": "app",
        "user": "app",
        "options": "-c search_path=orders",
        "sslmode": "verify-full",
    }


def test_override_drops_the_ssl_key_password_too() -> None:
    out = override_dsn("host=h sslkey=/k sslpassword=kp", {"host": "/tmp/s"})
    assert out == "host=/tmp/s sslkey=/k"
    url = override_dsn("postgresql://h/d?sslpassword=kp&sslkey=/k", {"host": "/tmp/s"})
    assert url == "postgresql:///d?host=/tmp/s&sslkey=/k"


def test_keyvalue_override_keep_password() -> None:
    out = override_dsn(r"host=h password='a\\b'", {"host": "::1"}, keep_password=True)
    assert libpq_parse(out) == {"host": "::1", "password": "a\\b"}


ROUND_TRIP_VALUES = [
    "",
    "plain",
    "a b",
    "it's",
    "back\\slash",
    "tab\there",
    "=eq=",
    "'",
    "\\'",
    "é",
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES)
def test_keyvalue_quoting_round_trips_through_libpq(value: str) -> None:
    pairs = [("application_name", value), ("host", "/tmp/s")]
    text = format_keyvalue(pairs)
    assert parse_keyvalue(text) == pairs
    assert libpq_parse(text) == dict(pairs)


@pytest.mark.parametrize(
    "text",
    [
        "host = h   port= 5432 dbname =db",
        r"application_name='a\'b' host=h",
        r"application_name=a\ b host=h",
        "host= port=5",  # libpq reads "port=5" as the value of host
        "host=''",
        "\thost=h\n",
        "application_name=ab\\",  # a trailing lone backslash is dropped
        "application_name=a\u00a0b",  # a non-ASCII space is not a separator
    ],
)
def test_parse_keyvalue_matches_libpq(text: str) -> None:
    assert dict(parse_keyvalue(text)) == libpq_parse(text)


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("host='unterminated", "closing quote"),
        ("host", "write key=value pairs"),
        ("host=h secret", "write key=value pairs"),
        ("9bad=1", "not a libpq parameter name"),
        ("   ", "give a connection string"),
    ],
)
def test_bad_keyvalue_dsn_is_refused_with_a_fix(text: str, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=fix) as info:
        override_dsn(text, SOCKET)
    assert info.value.code == "INVALID_INPUT"


def test_error_messages_never_echo_dsn_text() -> None:
    for dsn in (
        "host=h password=hunter2 dangling",
        "password='hunter2",
        "postgresql://u:hunter2/x@h/db",
        "postgresql://u:hunter2@h:port/db",
        "postgresql://u:hunter2@h/db?bad%zz=1",
    ):
        with pytest.raises(InvalidInputError) as info:
            redact_dsn(dsn)
        assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "fix"),
    [
        ("mysql://u@h/db", "postgresql://"),
        ("postgresql://u@h/db#frag", "%23"),
        ("postgresql://u@h/db?sslmode", "separate parameters"),
        ("postgresql://u@h/d%zzb", "%25"),
        ("postgresql://u@[::1/db", "closing ']'"),
        ("postgresql://u:p/w@h/db", "%2F"),
        ("postgresql://u@h:abc/db", "1-65535"),
        ("host=a,b,c port=1,2", "one port or one per host"),
        ("host=a port=70000", "1 to 65535"),
    ],
)
def test_bad_url_dsn_is_refused_with_a_fix(dsn: str, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=fix):
        parse_dsn(dsn)


@pytest.mark.parametrize(
    "dsn", ["service=orders user=app", "postgresql://app@/db?service=orders&sslmode=require"]
)
def test_override_refuses_service_files_that_could_set_hostaddr(dsn: str) -> None:
    with pytest.raises(InvalidInputError, match="pg_service_entry") as info:
        override_dsn(dsn, SOCKET)
    assert "spell the parameters out" in str(info.value)


@pytest.mark.parametrize(
    ("endpoint", "fix"),
    [
        ({"port": 5432}, "non-empty string"),
        ({"host": "a,b"}, "exactly one host"),
        ({"host": "bad host"}, "e.g. db.internal"),
        ({"host": "db/evil"}, "e.g. db.internal"),
        ({"host": "h", "port": 0}, "1 to 65535"),
        ({"host": "h", "port": True}, "1 to 65535"),
        ({"host": "h", "database": ""}, "non-empty string"),
    ],
)
def test_override_validates_the_endpoint(endpoint: dict, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=fix):
        override_dsn("host=h", endpoint)


# --- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app:pw@h:5432/db", "postgresql://app:***@h:5432/db"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://app@h/db?password=pw&sslmode=require",
            "postgresql://app@h/db?password=***&sslmode=require",
        ),
        ("postgresql+psycopg2://a:p%40ss@/db?host=/s", "postgresql+psycopg2://a:***@/db?host=/s"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
        ("host=h password=pw user=u", "host=h password=*** user=u"),
        (r"password='a b\'c' host=h", "password=*** host=h"),
        ("host=h", "host=h"),
        ("host=h sslpassword=k", "host=h sslpassword=***"),
        ("postgresql://h/d?sslpassword=k", "postgresql://h/d?sslpassword=***"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert not has_password(expected) or "***" in expected


def test_has_password() -> None:
    assert has_password("postgresql://a:b@h/d")
    assert has_password("postgresql://a@h/d?password=x")
    assert has_password("host=h password=''")
    assert not has_password("postgresql://a@h/d?passwordless=1")
    assert not has_password("host=h user=password")


# --- parse_dsn -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://app@db.prod.internal/app",
            PgTarget((("db.prod.internal", 5432),), "app", "app"),
        ),
        ("postgresql://[::1]:5433,h2/db", PgTarget((("::1", 5433), ("h2", 5432)), "db", None)),
        ("postgresql://h1/db?host=h2&port=7", PgTarget((("h2", 7),), "db", None)),
        ("postgresql://u@/db?host=/run/pg", PgTarget((("/run/pg", 5432),), "db", "u")),
        ("host=a,b port=1,2 dbname=x", PgTarget((("a", 1), ("b", 2)), "x", None)),
        (
            "host=db hostaddr=10.0.0.1 port=6432",
            PgTarget((("db", 6432), ("10.0.0.1", 6432)), None, None),
        ),
        ("user=u", PgTarget((), None, "u")),
    ],
)
def test_parse_dsn(dsn: str, expected: PgTarget) -> None:
    assert parse_dsn(dsn) == expected


def test_parse_dsn_refuses_mismatched_hostaddr_list() -> None:
    with pytest.raises(InvalidInputError, match="one hostaddr per host"):
        parse_dsn("host=a,b hostaddr=10.0.0.1")


# --- building ------------------------------------------------------------------------------


def test_build_url_matches_the_contract_example() -> None:
    endpoint = {"host": "/tmp/x/run", "port": 5432}
    assert build_url(endpoint, user="postgres", database="app") == (
        "postgresql://postgres@/app?host=/tmp/x/run&port=5432"
    )


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ({"host": "127.0.0.1", "port": 5432}, "postgresql+psycopg2://u%40x@127.0.0.1:5432/my%20db"),
        ({"host": "::1", "port": 5432}, "postgresql+psycopg2://u%40x@[::1]:5432/my%20db"),
        ({"host": "/tmp/a b"}, "postgresql+psycopg2://u%40x@/my%20db?host=/tmp/a%20b"),
    ],
)
def test_build_url_encodes_and_parses_back(endpoint: dict, expected: str) -> None:
    out = build_url(endpoint, user="u@x", database="my db", driver="psycopg2")
    assert out == expected
    url = make_url(out)
    assert (url.username, url.database) == ("u@x", "my db")
    assert libpq_parse(out.replace("+psycopg2", ""))["host"] == endpoint["host"]


def test_build_url_refuses_a_bad_driver() -> None:
    with pytest.raises(InvalidInputError, match="such as psycopg2"):
        build_url({"host": "h"}, user="u", database="d", driver="psycopg2;x")


def test_env_vars_for_a_socket_sandbox() -> None:
    env = env_vars({"host": "/tmp/x/run", "port": 5432}, user="postgres", database="app")
    assert env == {
        "PGHOST": "/tmp/x/run",
        "PGPORT": "5432",
        "PGDATABASE": "app",
        "PGUSER": "postgres",
        "DATABASE_URL": "postgresql+psycopg2://postgres@/app?host=/tmp/x/run&port=5432",
    }
    assert make_url(env["DATABASE_URL"]).get_driver_name() == "psycopg2"


def test_env_vars_for_tcp() -> None:
    env = env_vars({"host": "10.1.2.3", "port": 6543}, user="u", database="d")
    assert env["DATABASE_URL"] == "postgresql+psycopg2://u@10.1.2.3:6543/d"
    assert (env["PGHOST"], env["PGPORT"]) == ("10.1.2.3", "6543")


def test_pg_service_entry_is_a_valid_section() -> None:
    text = pg_service_entry("orders-drill", SOCKET, user="postgres", database="app")
    assert text == "[orders-drill]\nhost=/tmp/drill/run\nport=5432\ndbname=app\nuser=postgres\n"
    lines = text.splitlines()
    assert all("=" in line and " " not in line for line in lines[1:])


@pytest.mark.parametrize(
    ("name", "user", "fix"),
    [
        ("bad]name", "u", "letters, digits"),
        ("ok", "u\nhost=prod", "cannot hold"),
        ("ok", " u", "cannot hold"),
        ("ok", "", "cannot hold"),
    ],
)
def test_pg_service_entry_refuses_unrepresentable_values(name: str, user: str, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=fix):
        pg_service_entry(name, SOCKET, user=user, database="app")
