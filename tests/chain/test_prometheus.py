"""The Prometheus fallback-rate query against a local fake answering real Prometheus JSON: a
missing, ambiguous or non-ratio answer is an error, never a zero."""

from __future__ import annotations

import socket

import pytest

from drillkit.chain.model import PrometheusConfig
from drillkit.chain.prometheus import prom_duration, query_fallback_rate
from drillkit.exceptions import CheckError, TransientDrillError

pytestmark = pytest.mark.unit


def config(url: str) -> PrometheusConfig:
    return PrometheusConfig(
        url=url, query="sum(rate(fb[${window}])) / sum(rate(all[${window}]))", timeout=2.0
    )


def test_ratio_is_read_exactly_and_the_window_substituted(prometheus):
    prometheus.value = "0.125"
    result = query_fallback_rate(config(prometheus.url), window=600)
    assert result["value"] == "0.125" and result["percent"] == 12.5
    assert prometheus.queries == ["sum(rate(fb[10m])) / sum(rate(all[10m]))"]
    assert result["evaluated_at"] == pytest.approx(1763700000.123)


@pytest.mark.parametrize(
    "value, series, code",
    [
        (None, 1, "PROMETHEUS_NO_DATA"),  # no series at all
        ("NaN", 1, "PROMETHEUS_NO_DATA"),  # 0/0: no traffic in the window
        ("0.2", 2, "PROMETHEUS_AMBIGUOUS"),
        ("12.5", 1, "PROMETHEUS_NOT_A_RATIO"),  # a percentage where a ratio belongs
    ],
)
def test_unusable_answers_are_errors(prometheus, value, series, code):
    prometheus.value, prometheus.series = value, series
    with pytest.raises(CheckError) as caught:
        query_fallback_rate(config(prometheus.url), window=300)
    assert caught.value.code == code


def test_refused_query_names_the_error(prometheus):
    prometheus.status = 400
    with pytest.raises(CheckError, match="bad_data: parse error") as caught:
        query_fallback_rate(config(prometheus.url), window=300)
    assert caught.value.code == "PROMETHEUS_QUERY_FAILED"


def test_unavailable_prometheus_is_transient(prometheus):
    prometheus.status = 503
    with pytest.raises(TransientDrillError):
        query_fallback_rate(config(prometheus.url), window=300)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with pytest.raises(TransientDrillError, match="cannot reach Prometheus"):
        query_fallback_rate(config(f"http://127.0.0.1:{dead}"), window=300)


def test_prometheus_durations():
    assert [prom_duration(s) for s in (600, 3600, 90, 0.2, 5400)] == [
        "10m",
        "1h",
        "90s",
        "1s",
        "90m",
    ]
