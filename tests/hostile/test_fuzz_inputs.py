"""Random and hostile input to every parser a user feeds: a value or an InvalidInputError, fast.

Bounded example counts keep the whole file well under a minute in the default `make test`.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drillkit.exceptions import InvalidInputError
from drillkit.routing.connstr import has_password, override_dsn, parse_dsn, redact_dsn
from drillkit.spec import parse_spec, read_spec_file
from drillkit.timeutil import parse_duration, parse_target_time

pytestmark = pytest.mark.unit
ORDERS = Path(__file__).resolve().parents[2] / "dags" / "drills" / "orders.yaml"
BOUND_S = 2.0  # any single answer, on a loaded 2-core machine
FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_N", "150")),
    deadline=timedelta(seconds=BOUND_S),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["latest", "logical_date", "15m", "local", "pinned", "postgres", "sql", "1h"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _answers(call, *args):
    """Run ``call``: it returns a value or raises InvalidInputError, within BOUND_S."""
    started = time.monotonic()
    try:
        call(*args)
    except InvalidInputError as exc:
        assert str(exc), "an error with no message helps nobody"
    assert time.monotonic() - started < BOUND_S


@FUZZ
@given(st.text(max_size=400))
def test_spec_loader_answers_any_text(text: str):
    from drillkit.specfile import load_spec_text

    def load(text: str) -> None:
        parse_spec(load_spec_text(text, source="fuzz.yaml"), source="fuzz.yaml")

    _answers(load, text)


@FUZZ
@given(st.binary(max_size=400))
def test_spec_decoder_answers_any_bytes(raw: bytes):
    from drillkit.specfile import decode_spec, load_spec_text

    _answers(lambda r: load_spec_text(decode_spec(r, source="f.yaml"), source="f.yaml"), raw)


@FUZZ
@given(values)
def test_spec_loader_answers_any_yaml_document(document):
    """Random YAML (dumped from random data, anchors included when a node repeats)."""
    from drillkit.specfile import load_spec_text

    text = yaml.safe_dump({"drill": "x", "doc": document, "again": document})
    _answers(lambda t: parse_spec(load_spec_text(t, source="f.yaml"), source="f.yaml"), text)


@FUZZ
@given(values)
def test_spec_validator_answers_any_document(document):
    _answers(lambda d: parse_spec(d, source="fuzz.yaml"), document)


@FUZZ
@given(st.data())
def test_spec_validator_answers_a_real_spec_with_one_field_replaced(data):
    """Mutations of the shipped spec reach deep validation (tiers, checks, services)."""
    document = yaml.safe_load(ORDERS.read_text())
    node = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = data.draw(values)
        break
    _answers(lambda d: parse_spec(copy.deepcopy(d), source="fuzz.yaml"), document)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=60),
        st.from_regex(
            r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
            r"(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)\Z"
        ),
        st.datetimes(timezones=st.timezones() | st.none()),
    )
)
def test_target_parser_answers_anything(value):
    _answers(parse_target_time, value)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    ],
)
def test_a_target_at_the_edge_of_the_calendar_is_an_input_error(value):
    with pytest.raises(InvalidInputError, match="outside the calendar") as err:
        parse_target_time(value)
    assert err.value.code == "TARGET_INVALID"


@FUZZ
@given(
    st.one_of(
        st.text(max_size=40),
        st.integers(),
        st.floats(),
        st.from_regex(r"\A[0-9]{1,400}(\.[0-9]{1,30})?(ms|s|m|h|d|w)\Z"),
    )
)
def test_duration_parser_answers_anything(value):
    _answers(parse_duration, value)


@pytest.mark.parametrize("value", [10**30, 1e300, "99999999999999999w"])
def test_a_huge_duration_is_an_input_error(value):
    with pytest.raises(InvalidInputError, match="too large"):
        parse_duration(value, field="rpo")


dsn_text = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda user, pw, host, rest: f"postgresql://{user}:{pw}@{host}/{rest}",
        st.text(max_size=12),
        st.text(max_size=12),
        st.text(max_size=20),
        st.text(max_size=30),
    ),
    st.builds(
        lambda pairs: " ".join(f"{k}={v}" for k, v in pairs),
        st.lists(
            st.tuples(
                st.sampled_from(["host", "port", "dbname", "user", "password", "sslmode", "x"]),
                st.text(max_size=12),
            ),
            max_size=5,
        ),
    ),
)


@FUZZ
@given(dsn_text)
def test_dsn_parsers_answer_anything(dsn: str):
    _answers(parse_dsn, dsn)
    _answers(redact_dsn, dsn)
    _answers(has_password, dsn)
    _answers(lambda d: override_dsn(d, {"host": "/tmp/s", "port": 5432, "database": "db"}), dsn)


def test_huge_scalar_and_long_line_spec_is_answered_fast(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("drill: " + "x" * (1024 * 1024 - 100) + "\n")
    started = time.monotonic()
    with pytest.raises(InvalidInputError):
        parse_spec(read_spec_file(big), source=str(big))
    assert time.monotonic() - started < BOUND_S
