"""The trigger form's recovery target: a text field, validated by Airflow when the run is created
(the schema pattern agrees with drillkit's own parser), refused in one line."""

from __future__ import annotations

import itertools
import re

import pytest
from drillkit.operators.dag_factory import TARGET_PATTERN, build_drill_dag
from drillkit.plugins.trigger_check import one_line

from drillkit.exceptions import InvalidInputError
from drillkit.spec import parse_spec
from drillkit.timeutil import parse_target_time

pytestmark = pytest.mark.unit

SPEC = {
    "drill": "form",
    "catalog": {"kind": "local", "path": "/tmp/repo"},
    "tiers": [{"name": "primary", "select": "latest", "sandbox": {"kind": "local"}}],
    "services": {"app-db": {"kind": "postgres", "database": "app"}},
    "checks": [
        {"name": "q", "kind": "sql", "target": "app-db", "query": "select 1", "expect": {"eq": 1}}
    ],
}


def _parses(value: str) -> bool:
    try:
        parse_target_time(value)
    except InvalidInputError:
        return False
    return True


def test_the_schema_pattern_accepts_exactly_what_the_drill_parses():
    """Every day of common, leap and century years, odd times and zones: no value the run would
    refuse gets past the form, and none it would accept is refused."""
    years = ("1900", "2000", "2024", "2026")
    months = [f"{m:02d}" for m in range(0, 14)]
    days = [f"{d:02d}" for d in range(0, 33)]
    times = ("08:00", "23:59:59", "24:00", "08:60", "08:00:60", "08:00:30.25", "08:00:30.1234567")
    zones = ("Z", " UTC", "+02:00", "-0530", "+16:00", "", "+02")
    seen = 0
    for year, month, day in itertools.product(years, months, days):
        for time, zone, sep in zip(
            itertools.cycle(times), zones, ("T", " ", "T", "T", " ", "T", "T"), strict=False
        ):
            value = f"{year}-{month}-{day}{sep}{time}{zone}"
            assert bool(re.search(TARGET_PATTERN, value)) == _parses(value), value
            seen += 1
    assert seen > 7000
    for value in ("2026-02-30T10:00:00Z", "2026-02-29T10:00Z", "1900-02-29T10:00Z"):
        assert not re.search(TARGET_PATTERN, value) and not _parses(value)
    assert re.search(TARGET_PATTERN, "2024-02-29T10:00:00.123456+01:00")


def _airflow_refusal(conf: dict) -> str:
    """The 400 detail Airflow's API gives for ``conf`` (create_dagrun validates the serialized
    DAG's params exactly like this)."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_drill_dag(parse_spec(SPEC, source="form.yaml"))
    served = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with pytest.raises(ParamValidationError) as refused:
        served.params.deep_merge(conf).validate()
    return str(refused.value)


def test_the_form_field_is_text_with_a_format_hint_not_a_minute_picker():
    dag = build_drill_dag(parse_spec(SPEC, source="form.yaml"))
    schema = dag.params.get_param("target_time").schema
    assert "format" not in schema  # a date-time format makes the form a minutes-only picker
    description = dag.params.get_param("target_time").description
    assert "2026-11-21 08:00:30.25+02:00" in description and "UTC" in description


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("2026-02-30T10:00:00Z", "day is out of range for month"),
        ("tomorrow morning", "is not a timestamp"),
        ("2026-11-21T08:00:30", "is not a timestamp"),  # no zone
    ],
)
def test_an_invalid_target_is_refused_at_creation_in_one_line(value, needle):
    detail = _airflow_refusal({"target_time": value})
    assert "Failed validating" in detail  # what Airflow itself answers: a schema dump
    line = one_line(detail, {"target_time": value})
    assert line is not None and "\n" not in line
    assert line.startswith("target_time ") and value in line and needle in line, line
    assert "2026-11-21T08:00:00Z" in line  # an example of what to type
    assert len(line) < 300


def test_other_params_keep_the_validators_first_line_only():
    detail = _airflow_refusal({"dry_run": "yes"})
    line = one_line(detail, {"dry_run": "yes"})
    assert line == "Invalid input for param dry_run: 'yes' is not of type 'boolean'"
    assert one_line("DAG with dag_id: 'x' not found", {}) is None
