"""Telemetry of a real drill run: one structured event per transition, metrics through Airflow's
Stats to a real StatsD socket, and the report written to an ObjectStoragePath URL."""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from drillkit.telemetry import LOGGER_NAME, SCHEMA

pytestmark = pytest.mark.integration


class _Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def telemetry_events():
    logger = logging.getLogger(LOGGER_NAME)
    handler, level = _Events(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def statsd_packets():
    """A StatsD server on a loopback UDP port, and Airflow's Stats pointed at it by config."""
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    try:
        import statsd  # noqa: F401
    except ImportError:
        pytest.fail("the statsd package is missing: it is Airflow's [statsd] extra")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    packets: list[str] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                packets.extend(server.recv(65536).decode().splitlines())
            except TimeoutError:
                continue

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    config = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(server.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in config.items():
            patch.setenv(key, value)
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
        try:
            yield packets
        finally:
            done.set()
            thread.join(timeout=2)
            server.close()
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)


def test_a_fallback_run_logs_every_transition_sends_metrics_and_writes_to_a_url(
    damaged_scenario,
    run_drill,
    make_spec,
    no_sandboxes_left,
    telemetry_events,
    statsd_packets,
    workdir: Path,
):
    repo, truth = damaged_scenario(corrupt_newest=True)
    spec = make_spec(repo, repo.parent)
    spec["report"] = {"path": f"file://{workdir}/url-reports"}
    run = run_drill("telemetry", spec, {"target_time": truth["targets"][-1]["target"]})
    assert run.verdict == "PASS"

    events = [
        r.drillkit_event
        for r in telemetry_events
        if r.drillkit_event["run_id"] == run.report["run_id"]
    ]
    for record in telemetry_events:
        assert json.loads(record.getMessage()) == record.drillkit_event  # one JSON line each
    assert [(e["tier"], e["event"]) for e in events] == [
        ("primary", "selected"),
        ("primary", "gate"),
        ("primary", "fallback"),
        ("secondary", "selected"),
        ("secondary", "provisioned"),
        ("secondary", "routed"),
        ("secondary", "checked"),
        ("secondary", "teardown"),
        ("secondary", "gate"),
        (None, "verdict"),
    ]
    for event in events:
        assert event["schema"] == SCHEMA
        assert event["drill_id"] == run.report["drill_id"]
        assert event["dag_id"] == "drill_telemetry"
        assert event["at"].endswith("Z") and event["duration_seconds"] >= 0
    by_name = {(e["tier"], e["event"]): e["figures"] for e in events}
    assert by_name[("primary", "fallback")]["backup_id"] == run.tier("primary")["backup_id"]
    assert by_name[("secondary", "provisioned")]["restore_seconds"] == run.report["rto_seconds"]
    assert by_name[("secondary", "checked")]["checks"] == {"passed": 3}
    assert by_name[(None, "verdict")]["verdict"] == "PASS"
    # The report's timeline is the same events, kept in XCom.
    assert [e["event"] for e in run.report["timeline"]] == [e["event"] for e in events]

    drillkit = [p for p in statsd_packets if p.startswith("airflow.drillkit.")]
    assert "airflow.drillkit.verdict.telemetry.pass:1|c" in drillkit
    assert "airflow.drillkit.fallback.telemetry:1|c" in drillkit
    rto = next(p for p in drillkit if p.startswith("airflow.drillkit.rto.telemetry:"))
    assert rto.endswith("|ms")
    assert float(rto.split(":")[1].split("|")[0]) == pytest.approx(
        run.report["rto_seconds"] * 1000, rel=1e-3
    )
    assert "airflow.drillkit.data_loss.telemetry:0.000000|ms" in drillkit

    files = run.report["files"]
    assert files["json"].startswith(f"file://{workdir}/url-reports/telemetry/")
    written = json.loads(Path(files["json"].removeprefix("file://")).read_text())
    assert written == {k: v for k, v in run.report.items() if k != "files"}
    suite = ET.parse(files["junit"].removeprefix("file://")).getroot()
    assert [c.get("name") for c in suite.iter("testcase") if "checks" in c.get("classname")] == [
        c["name"] for c in run.report["checks"]
    ]
