"""Redaction of raw text: generated passwords with quotes, backslashes, spaces and %xx, in every
form a connection string or a log line carries them, never survive."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drillkit.redaction import redact
from drillkit.routing.connstr import parse_keyvalue

pytestmark = pytest.mark.unit


def redact_text(text: str) -> str:
    """Raw text goes through the one path every reader uses: redact() of a string."""
    return redact(text)


# Pieces, so %xx sequences appear whole: quotes, backslashes, spaces, URL and DSN syntax.
passwords = (
    st.lists(
        st.sampled_from([*"abcXYZ019'\"\\ %@:/&=?#,;{}é", "%27", "%5C", "%20", "%2"]),
        min_size=6,
        max_size=20,
    )
    .map("".join)
    .filter(lambda p: p.strip() == p and len(set(p)) > 3)
)


def libpq_quote(value: str) -> str:
    """A key=value value as libpq reads it: quoted, with \\ and ' escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_bare(value: str) -> str:
    """An unquoted key=value value: every backslash, quote and space escaped."""
    return "".join("\\" + c if c in "\\' " else c for c in value)


FORMS = {
    "keyvalue_quoted": lambda pw: f"host=db.prod port=5432 password={libpq_quote(pw)} dbname=app",
    "keyvalue_bare": lambda pw: f"user=app password={libpq_bare(pw)} sslmode=require",
    "keyvalue_spaced": lambda pw: f"sslpassword = {libpq_quote(pw)} host=x",
    "url_userinfo": lambda pw: f"postgresql://app:{quote(pw, safe='')}@db.prod:5432/app",
    "url_query": lambda pw: f"postgresql://db.prod/app?sslmode=require&password={quote(pw)}&x=1",
    "url_encoded_key": lambda pw: f"postgresql://db.prod/app?pass%77ord={quote(pw, safe='')}",
    "env": lambda pw: f"PGPASSWORD={libpq_quote(pw)} psql -h db.prod",
    "json": lambda pw: json.dumps({"host": "db.prod", "password": pw, "port": 5432}),
    "repr": lambda pw: repr({"user": "app", "api_key": pw}),
    "log_line": lambda pw: f"connection failed: host=db.prod password={libpq_quote(pw)}: timeout",
}


def _secret_forms(pw: str) -> set[str]:
    """How the password may appear in text: raw, libpq-escaped, percent-encoded, JSON-escaped."""
    forms = {pw, quote(pw, safe=""), quote(pw), json.dumps(pw)[1:-1], repr(pw)[1:-1]}
    return {f for f in forms if len(f) >= 6}


@settings(max_examples=150, deadline=None)
@given(pw=passwords, form=st.sampled_from(sorted(FORMS)))
def test_no_generated_password_survives_in_any_form(pw: str, form: str):
    text = FORMS[form](pw)
    template = FORMS[form]("\x00")
    assume(not any(f in template for f in _secret_forms(pw)))  # the rest cannot hold it
    redacted = redact_text(text)
    for shown in _secret_forms(pw):
        assert shown not in redacted, (form, text, redacted)
    assert "***" in redacted
    assert redact_text(redacted) == redacted  # idempotent: readers apply it again
    assert redact({"message": text}) == {"message": redacted}


@settings(max_examples=100, deadline=None)
@given(pw=passwords)
def test_a_keyvalue_dsn_keeps_everything_but_the_password(pw: str):
    dsn = FORMS["keyvalue_quoted"](pw)
    assert parse_keyvalue(dsn)[2] == ("password", pw)  # the test writes what libpq reads
    assert parse_keyvalue(redact_text(dsn)) == [
        ("host", "db.prod"),
        ("port", "5432"),
        ("password", "***"),
        ("dbname", "app"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            r"host=h password='it\'s a secret' dbname=x",
            "host=h password='***' dbname=x",
        ),
        (r"password=a\ b\'c dbname=x", "password=*** dbname=x"),
        (
            "postgresql://h/app?pass%77ord=s3cr3t&sslmode=require",
            "postgresql://h/app?pass%77ord=***&sslmode=require",
        ),
        ("postgresql://h/app?%73slpassword=s3cr3t", "postgresql://h/app?%73slpassword=***"),
        ("PGPASSWORD='p w' psql", "PGPASSWORD='***' psql"),
        ('{"signing_key": "k\\"ey", "n": 1}', '{"signing_key": "***", "n": 1}'),
        ("password='never closed", "password='***'"),
    ],
)
def test_redact_text_examples(text: str, expected: str):
    assert redact_text(text) == expected
