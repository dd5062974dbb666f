"""parse_checks: every bad input is refused with the check, the field path and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from drillkit.checks import parse_checks
from drillkit.checks.spec import HttpConfig, PitrConfig, SqlConfig
from drillkit.exceptions import InvalidInputError

pytestmark = pytest.mark.unit


def sql_check(**overrides: Any) -> dict[str, Any]:
    check = {
        "name": "orders-count",
        "kind": "sql",
        "target": "orders-db",
        "query": "select count(*) from orders",
        "expect": {"gte": 1000},
    }
    check.update(overrides)
    return check


def refused(checks: Any, *fragments: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        parse_checks(checks, source="drills/orders.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert message.startswith("drills/orders.yaml: ")
    return message


def test_valid_checks_of_every_kind_parse_with_defaults() -> None:
    specs = parse_checks(
        [
            sql_check(),
            {"name": "api", "kind": "http", "target": "orders-api", "expect": {"status": 200}},
            {"name": "cache", "kind": "tcp", "target": "cache", "timeout": "2s", "warmup": True},
            {
                "name": "pitr",
                "kind": "pitr",
                "target": "orders-db",
                "truth": {"table": "public.orders", "id_column": "id", "before": 41, "after": 42},
            },
            {"name": "whole", "kind": "integrity", "target": "orders-db", "timeout": "5m"},
        ]
    )
    assert [s.kind for s in specs] == ["sql", "http", "tcp", "pitr", "integrity"]
    assert specs[0].timeout == 10.0 and specs[0].warmup is False
    assert isinstance(specs[0].config, SqlConfig) and specs[0].config.write is False
    assert specs[0].config.expect.describe() == ">= 1000"
    http = specs[1].config
    assert isinstance(http, HttpConfig) and (http.method, http.path, http.statuses) == (
        "GET",
        "/",
        (200,),
    )
    assert specs[2].timeout == 2.0 and specs[2].warmup is True
    pitr = specs[3].config
    assert isinstance(pitr, PitrConfig) and (pitr.mode, pitr.before, pitr.after) == (
        "truth",
        41,
        42,
    )
    assert specs[4].timeout == 300.0


def test_http_check_with_json_assertions_and_latency_budget() -> None:
    [spec] = parse_checks(
        [
            {
                "name": "create-order",
                "kind": "http",
                "target": "orders-api",
                "method": "post",
                "path": "/orders?dry_run=1",
                "headers": {"Accept": "application/json"},
                "json": {"sku": "A-1"},
                "expect": {
                    "status": [200, 201],
                    "json": [{"path": "$.items[0]['id']", "gte": 1}],
                    "latency_budget": "250ms",
                },
            }
        ]
    )
    config = spec.config
    assert isinstance(config, HttpConfig)
    assert config.method == "POST" and config.body == {"sku": "A-1"}
    assert config.json[0].steps == ("items", 0, "id")
    assert config.latency_budget == pytest.approx(0.25)


def test_empty_list_parses_so_the_engine_can_report_no_checks_ran() -> None:
    assert parse_checks([]) == []


def test_checks_must_be_a_list() -> None:
    refused({"name": "x"}, "checks must be a list")


def test_unknown_key_is_refused_with_a_suggestion() -> None:
    refused(
        [sql_check(qurey="select 1")],
        "check 'orders-count'",
        "checks[0].qurey",
        "did you mean 'query'?",
        "allow: expect, kind, name, query, target, timeout, warmup, write",
    )


def test_unknown_kind_lists_the_kinds() -> None:
    refused(
        [sql_check(kind="grpc")],
        "checks[0].kind",
        "'grpc' is not a check kind; use one of: http, integrity, pitr, sql, tcp",
    )


def test_missing_expectation_is_refused() -> None:
    check = sql_check()
    del check["expect"]
    refused([check], "check 'orders-count'", "checks[0].expect", "missing", "gte: 1000")


def test_empty_expectation_is_refused() -> None:
    refused([sql_check(expect={})], "checks[0].expect", "equals, gt, gte")


def test_non_numeric_comparison_names_the_field_path() -> None:
    checks = [sql_check(name="a"), sql_check(name="b"), sql_check(name="c", expect={"gte": "many"})]
    refused(checks, "check 'c'", "checks[2].expect.gte", "'many' is not a number", "gte: 1000")


def test_bool_is_not_a_number() -> None:
    refused([sql_check(expect={"lt": True})], "checks[0].expect.lt", "is not a number")


def test_bad_regex_is_refused() -> None:
    refused(
        [sql_check(expect={"regex": "([a-z"})],
        "checks[0].expect.regex",
        "not a valid regular expression",
    )


def test_between_needs_two_ordered_numbers() -> None:
    refused([sql_check(expect={"between": [5]})], "checks[0].expect.between", "[low, high]")
    refused([sql_check(expect={"between": [9, 1]})], "checks[0].expect.between", "low <= high")


def test_mixing_expectation_families_is_refused() -> None:
    refused(
        [sql_check(expect={"equals": 3, "gte": 1})],
        "checks[0].expect.",
        "combines equals and comparisons",
    )


def test_several_comparisons_and_rows_are_allowed() -> None:
    [spec] = parse_checks([sql_check(expect={"gt": 1, "lte": 9, "rows": 1})])
    assert spec.config.expect.describe() == "> 1 and <= 9; rows == 1"  # type: ignore[union-attr]


def test_unknown_expectation_key() -> None:
    refused([sql_check(expect={"atleast": 3})], "checks[0].expect.atleast", "unknown expectation")


def test_equals_takes_only_scalars() -> None:
    refused([sql_check(expect={"equals": [1, 2]})], "checks[0].expect.equals", "not a scalar")


def test_duplicate_names_are_refused() -> None:
    refused(
        [sql_check(), sql_check()],
        "checks[1].name",
        "'orders-count' is also the name of checks[0]",
        "unique",
    )


def test_unnamed_check_is_named_by_index() -> None:
    check = sql_check()
    del check["name"]
    refused([sql_check(name="ok"), check], "check #1 (unnamed)", "checks[1].name")


def test_missing_target_and_bad_timeout() -> None:
    check = sql_check()
    del check["target"]
    refused([check], "checks[0].target", "logical service")
    refused([sql_check(timeout="soon")], "checks[0].timeout", "not a duration")
    refused([sql_check(timeout="0s")], "checks[0].timeout", "more than 0")
    refused([sql_check(timeout="2d")], "checks[0].timeout", "at most 1h")
    refused([sql_check(warmup="yes")], "checks[0].warmup", "true or false")


def test_write_must_be_boolean() -> None:
    refused([sql_check(write="yes")], "checks[0].write", "true or false")


def http_check(**overrides: Any) -> dict[str, Any]:
    check = {"name": "api", "kind": "http", "target": "orders-api", "expect": {"status": 200}}
    check.update(overrides)
    return check


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"method": "BREW"}, ["checks[0].method", "GET"]),
        ({"path": "http://prod.example.com/x"}, ["checks[0].path", "single '/'"]),
        ({"path": "//prod.example.com/x"}, ["checks[0].path"]),
        (
            {"headers": {"X-Drill-Context": "forged"}},
            ["checks[0].headers.X-Drill-Context", "set by"],
        ),
        ({"headers": {"x-idempotency-key": "k"}}, ["headers.x-idempotency-key"]),
        ({"json": {"a": 1}}, ["checks[0].json", "GET request carries no body"]),
        ({"expect": {}}, ["checks[0].expect", "status: 200"]),
        ({"expect": {"status": "ok"}}, ["checks[0].expect.status", "HTTP status"]),
        ({"expect": {"status": 200, "body": "x"}}, ["checks[0].expect.body", "unknown key"]),
        ({"expect": {"status": 200, "json": {"path": "$"}}}, ["checks[0].expect.json", "list"]),
        (
            {"expect": {"status": 200, "json": [{"path": "a.b", "equals": 1}]}},
            ["checks[0].expect.json[0].path", "must start with $"],
        ),
        (
            {"expect": {"status": 200, "json": [{"path": "$.a..b", "equals": 1}]}},
            ["checks[0].expect.json[0].path", "cannot read"],
        ),
        (
            {"expect": {"status": 200, "json": [{"path": "$.a", "gte": "x"}]}},
            ["checks[0].expect.json[0].gte", "not a number"],
        ),
        (
            {"expect": {"status": 200, "json": [{"path": "$.a", "rows": 1}]}},
            ["checks[0].expect.json[0].rows", "unknown expectation"],
        ),
        (
            {"expect": {"status": 200, "latency_budget": "fast"}},
            ["checks[0].expect.latency_budget", "not a duration"],
        ),
    ],
)
def test_bad_http_checks(overrides: dict[str, Any], fragments: list[str]) -> None:
    refused([http_check(**overrides)], "check 'api'", *fragments)


def pitr_check(**overrides: Any) -> dict[str, Any]:
    check: dict[str, Any] = {"name": "rp", "kind": "pitr", "target": "orders-db"}
    check.update(overrides)
    return check


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({}, ["checks[0]", "exactly one of truth"]),
        (
            {"truth": {"table": "t", "id_column": "id"}, "marker_query": "select now()"},
            ["exactly one of truth"],
        ),
        ({"truth": "orders"}, ["checks[0].truth", "mapping"]),
        ({"truth": {"table": "t; drop", "id_column": "id"}}, ["checks[0].truth.table"]),
        ({"truth": {"table": "t", "id_column": "i d"}}, ["checks[0].truth.id_column"]),
        ({"truth": {"table": "t", "id_column": "id", "before": 1.5}}, ["truth.before", "an id"]),
        ({"truth": {"table": "t", "id_column": "id", "row": 1}}, ["truth.row", "unknown key"]),
        (
            {"truth": {"table": "t", "id_column": "id"}, "target_time": "2026-01-01T00:00:00Z"},
            ["checks[0].target_time", "only applies with marker_query"],
        ),
        (
            {"marker_query": "select 1", "target_time": "yesterday"},
            ["checks[0].target_time", "not a timestamp"],
        ),
        ({"marker_query": "select 1", "tolerance": "a while"}, ["checks[0].tolerance"]),
        ({"marker_query": ""}, ["checks[0].marker_query", "missing or empty"]),
    ],
)
def test_bad_pitr_checks(overrides: dict[str, Any], fragments: list[str]) -> None:
    refused([pitr_check(**overrides)], "check 'rp'", *fragments)


def test_pitr_marker_mode_parses_target_and_tolerance() -> None:
    [spec] = parse_checks(
        [
            pitr_check(
                marker_query="select max(created_at) from orders",
                target_time="2026-11-21 08:00:00+02:00",
                tolerance="5m",
            )
        ]
    )
    config = spec.config
    assert isinstance(config, PitrConfig) and config.mode == "marker"
    assert config.target_time is not None and config.target_time.isoformat() == (
        "2026-11-21T06:00:00+00:00"
    )
    assert config.tolerance == 300.0


def test_tcp_and_integrity_take_no_extra_keys() -> None:
    refused(
        [{"name": "c", "kind": "tcp", "target": "cache", "port": 1}], "checks[0].port", "tcp checks"
    )
    refused(
        [{"name": "i", "kind": "integrity", "target": "db", "tables": ["t"]}],
        "checks[0].tables",
    )


def test_refusal_carries_structured_details() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_checks([sql_check(expect={"gte": "x"})])
    assert info.value.code == "CHECK_SPEC_INVALID"
    assert info.value.details == {"check": "'orders-count'", "field": "checks[0].expect.gte"}
