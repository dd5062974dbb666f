"""Drills in a real Airflow deployment: REST-triggered, backfilled, refused, concurrent.

Every run is created up front and the services work through them together (parallelism 4 on two
cores); each test then waits for its own runs and reads their reports over the REST API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drillkit.timeutil import parse_iso

pytestmark = pytest.mark.e2e

BACKFILL_FROM, BACKFILL_TO = "2026-01-05", "2026-01-07T23:59:59+00:00"


@dataclass
class Launched:
    manual: str
    concurrent: list[tuple[str, dict[str, Any]]]
    unknown_key: str
    backfill: Any
    fallback: str
    fail: str


def _truth_ids(truth: dict[str, Any], target: str) -> dict[str, int]:
    """The last id committed at ``target`` and the first one after it, from the ground truth."""
    moment = parse_iso(target)
    committed = [b for b in truth["batches"] if parse_iso(b["committed_at"]) <= moment]
    later = [b for b in truth["batches"] if parse_iso(b["committed_at"]) > moment]
    return {"present": committed[-1]["last_id"], "absent": later[0]["first_id"]}


def _triggered(services, dag_id: str, conf: dict[str, Any]) -> str:
    status, run = services.trigger(dag_id, conf)
    assert status == 200, run
    return str(run["dag_run_id"])


@pytest.fixture(scope="module")
def launched(services) -> Launched:
    manual = services.dag_ids["manual"]
    targets = services.truth["targets"]
    backfill = services.cli(
        "backfill", "create", "--dag-id", services.dag_ids["daily"],
        "--from-date", BACKFILL_FROM, "--to-date", BACKFILL_TO,
    )  # fmt: skip
    return Launched(
        manual=_triggered(services, manual, {"target_time": targets[4]["target"]}),
        unknown_key=_triggered(services, manual, {"taget_time": targets[4]["target"]}),
        # Three drills at once, each to its own recovery target.
        concurrent=[
            (_triggered(services, manual, {"target_time": t["target"]}), t) for t in targets[1:4]
        ],
        backfill=backfill,
        fallback=_triggered(services, services.dag_ids["fallback"], {}),
        fail=_triggered(services, services.dag_ids["fail"], {}),
    )


def _task_states(services, dag_id: str, run_id: str) -> dict[str, str]:
    status, tasks = services.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert status == 200, tasks
    return {t["task_id"]: t["state"] for t in tasks["task_instances"]}


def _failed(states: dict[str, str]) -> list[str]:
    """The task instances Airflow counts as failed (what its failure alerts fire on)."""
    return sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))


def _assert_pitr_proven(report: dict[str, Any], truth: dict[str, Any], target: str) -> None:
    pitr = next(c for c in report["checks"] if c["kind"] == "pitr")
    assert pitr["status"] == "passed", pitr
    assert pitr["observed"] == {"before_present": True, "after_present": False}
    ids = _truth_ids(truth, target)
    assert f"id={ids['present']} present" in pitr["expectation"], pitr
    assert f"id={ids['absent']} absent" in pitr["expectation"], pitr


def test_the_example_drills_load_with_their_paused_state(services):
    status, errors = services.api("GET", "/api/v2/importErrors")
    assert status == 200 and errors["total_entries"] == 0, errors
    status, dags = services.api("GET", "/api/v2/dags?tags=drillkit&limit=100")
    assert status == 200, dags
    paused = {d["dag_id"]: d["is_paused"] for d in dags["dags"]}
    # The spec decides (is_paused_upon_creation): the shipped examples wait to be unpaused,
    # the drills written for this deployment run as soon as they are triggered.
    assert paused["drill_orders"] is True
    assert paused[services.dag_ids["manual"]] is False
    assert paused[services.dag_ids["daily"]] is False


def test_a_drill_triggered_through_the_rest_api_passes(services, launched):
    dag_id = services.dag_ids["manual"]
    target = services.truth["targets"][4]["target"]
    run = services.wait_run(dag_id, launched.manual)
    report = services.report(dag_id, launched.manual)
    assert run["state"] == "success", report.get("escalation")
    assert report["verdict"] == "PASS", report["escalation"]
    assert parse_iso(report["target"]["requested"]) == parse_iso(target)
    _assert_pitr_proven(report, services.truth, target)


def test_a_backfill_over_three_days_drills_each_day(services, launched):
    assert launched.backfill.returncode == 0, launched.backfill.stderr[-2000:]
    dag_id = services.dag_ids["daily"]
    status, listing = services.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=logical_date")
    assert status == 200, listing
    runs = listing["dag_runs"]
    assert [r["run_type"] for r in runs] == ["backfill"] * 3
    requested = []
    for run in runs:
        finished = services.wait_run(dag_id, run["dag_run_id"])
        report = services.report(dag_id, run["dag_run_id"])
        assert finished["state"] == "success", report.get("escalation")
        assert report["verdict"] == "PASS", report["escalation"]
        target = report["target"]["requested"]
        # The recovery target of a backfilled run is its logical date: 06:00 of that day.
        assert parse_iso(target) == parse_iso(run["logical_date"]).astimezone(UTC)
        _assert_pitr_proven(report, services.truth, target)
        requested.append(target)
    assert [t[:16] for t in requested] == [
        "2026-01-05T06:00",
        "2026-01-06T06:00",
        "2026-01-07T06:00",
    ]
    assert len(set(requested)) == 3


def test_an_invalid_config_is_refused_with_the_validation_message(services, launched):
    dag_id = services.dag_ids["manual"]
    status, body = services.trigger(dag_id, {"dry_run": "yes"})
    assert status == 400, body
    assert "dry_run" in str(body["detail"]) and "boolean" in str(body["detail"]), body
    status, body = services.trigger(dag_id, {"target_time": "tomorrow morning"})
    assert status == 400 and "tomorrow morning" in str(body["detail"]), body
    # A misspelt key passes Airflow's validation: the drill itself fails the run at once.
    run = services.wait_run(dag_id, launched.unknown_key)
    report = services.report(dag_id, launched.unknown_key)
    assert run["state"] == "failed"
    assert report["verdict"] == "COULD NOT VERIFY"
    assert report["findings"][0]["code"] == "CONF_INVALID"
    assert "taget_time" in report["findings"][0]["message"]
    states = _task_states(services, dag_id, launched.unknown_key)
    assert states["check_conf"] == "skipped"
    assert states["primary.provision_sandbox"] != "success"  # nothing was restored
    assert _failed(states) == ["escalate"]


def test_a_planned_fallback_leaves_no_failed_task_instance(services, launched):
    """A PASS after a fallback raises no Airflow failure: the tier that failed its gate is
    skipped, with its reason in the report, and `escalate` is skipped too."""
    dag_id = services.dag_ids["fallback"]
    run = services.wait_run(dag_id, launched.fallback)
    report = services.report(dag_id, launched.fallback)
    assert report["verdict"] == "PASS", report["escalation"]
    assert run["state"] == "success"
    primary, secondary = report["tiers"]
    assert primary["status"] == "failed" and primary["findings"][0]["code"] == "PROVISION_TIMEOUT"
    assert secondary["status"] == "passed"
    states = _task_states(services, dag_id, launched.fallback)
    assert states["primary.provision_sandbox"] == "skipped"
    assert states["escalate"] == "skipped"
    assert _failed(states) == [], states


def test_a_failed_drill_fails_only_escalate(services, launched):
    dag_id = services.dag_ids["fail"]
    run = services.wait_run(dag_id, launched.fail)
    report = services.report(dag_id, launched.fail)
    assert report["verdict"] == "FAIL"
    assert run["state"] == "failed"
    assert _failed(_task_states(services, dag_id, launched.fail)) == ["escalate"]


def test_three_drills_at_once_never_share_a_sandbox(services, launched):
    dag_id = services.dag_ids["manual"]
    runs, reports = [], []
    for run_id, target in launched.concurrent:
        runs.append(services.wait_run(dag_id, run_id))
        report = services.report(dag_id, run_id)
        assert report["verdict"] == "PASS", report["escalation"]
        _assert_pitr_proven(report, services.truth, target["target"])
        reports.append(report)
    # They really overlapped: each started before any of them ended.
    starts = [parse_iso(r["start_date"]) for r in runs]
    ends = [parse_iso(r["end_date"]) for r in runs]
    assert max(starts) < min(ends)
    sandboxes = [r["sandbox"] for r in reports]
    assert len({s["id"] for s in sandboxes}) == 3
    assert len({s["path"] for s in sandboxes}) == 3
    assert len({s["endpoints"]["postgres"]["host"] for s in sandboxes}) == 3
    assert len({r["drill_id"] for r in reports}) == 3
    assert all(t["teardown"]["removed"] for r in reports for t in r["tiers"])


# docs/deployment.md: "an edited spec shows up within about 10 s".
SPEC_EDIT_SHOWS_WITHIN = 10.0


def test_a_spec_edit_shows_in_airflow_within_the_documented_time(services, launched):
    """The loader .py does not change when its YAML does: the edit shows once the dag-processor
    parses the loader again (min_file_process_interval, 5 s under `make airflow`)."""
    import yaml

    dag_id = services.dag_ids["daily"]
    path = services.root / "dags" / "drills" / "e2e-daily.yaml"
    spec = yaml.safe_load(path.read_text())
    wanted = f"edited at {time.time():.0f}"
    path.write_text(yaml.safe_dump({**spec, "description": wanted}, sort_keys=False))
    edited = time.monotonic()
    while True:
        status, dag = services.api("GET", f"/api/v2/dags/{dag_id}")
        assert status == 200, dag
        if dag["description"] == wanted:
            break
        assert time.monotonic() - edited < 120, "the edit never showed"
        time.sleep(0.25)
    took = time.monotonic() - edited
    print(f"\ne2e: a spec edit showed in Airflow after {took:.1f} s")
    assert took <= SPEC_EDIT_SHOWS_WITHIN, f"{took:.1f} s"


def test_stopping_the_services_leaves_nothing_running(services, launched):
    from drillkit.sandbox.gc import collect_local

    stack = services.stack
    assert set(stack.processes) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    stack.stop()
    services.stopped = time.monotonic()
    left = services.launcher.processes_of(stack.home, [services.root])
    assert left == [], f"processes of this deployment still running: {left}"
    # Every drill tore its sandbox down: nothing for the garbage collector either.
    later = datetime.now(UTC) + timedelta(days=3650)
    assert collect_local(root=services.root / "sandboxes", now=later, dry_run=True) == []
