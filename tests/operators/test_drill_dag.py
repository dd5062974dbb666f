"""The fallback-chain drill DAG, run for real (dag.test) on real backups and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_pass_on_the_first_tier(clean_scenario, run_drill, make_spec, no_sandboxes_left):
    repo, truth = clean_scenario
    target = truth["targets"][2]
    run = run_drill("first-tier", make_spec(repo, repo.parent), {"target_time": target["target"]})
    assert run.state == "success"
    assert run.verdict == "PASS"
    assert run.tier("primary")["status"] == "passed"
    assert [t["tier"] for t in run.report["tiers"]] == ["primary"]
    # The passing gate skips every later tier (gates included) and `exhausted` itself, at once.
    later = {t: s for t, s in run.tasks.items() if t.split(".")[0] in ("secondary", "tertiary")}
    assert len(later) >= 7 and set(later.values()) == {"skipped"}, later
    assert run.tasks["exhausted"] == "skipped"
    assert run.tasks["report"] == "success"
    assert run.tasks["escalate"] == "skipped"
    pitr = next(c for c in run.report["checks"] if c["kind"] == "pitr")
    assert pitr["status"] == "passed"
    assert pitr["observed"] == {"before_present": True, "after_present": False}
    assert run.report["target"]["requested"].startswith(target["target"][:19])


def test_fallback_to_the_second_tier_skips_the_failed_backup(
    damaged_scenario, run_drill, make_spec, no_sandboxes_left
):
    repo, truth = damaged_scenario(corrupt_newest=True)
    newest = truth["backups"][-1]["backup_id"]
    target = truth["targets"][-1]
    run = run_drill("fallback", make_spec(repo, repo.parent), {"target_time": target["target"]})
    assert run.verdict == "PASS"
    assert run.state == "success"
    primary, secondary = run.tier("primary"), run.tier("secondary")
    assert primary["status"] == "failed"
    assert primary["backup_id"] == newest
    assert primary["findings"][0]["code"] == "BACKUP_CHECKSUM_MISMATCH"
    assert secondary["status"] == "passed"
    assert secondary["backup_id"] != newest
    assert run.report["backup_id"] == secondary["backup_id"]
    # A planned fallback is no Airflow failure: the failed tier's stages are skipped.
    assert run.tasks["primary.provision_sandbox"] == "skipped"
    assert run.tasks["primary.teardown"] == "skipped"
    assert run.tasks["secondary.teardown"] == "success"
    assert run.failed_tasks() == []


def test_all_tiers_failing_escalates_with_fail(
    clean_scenario, run_drill, make_spec, no_sandboxes_left
):
    repo, truth = clean_scenario
    spec = make_spec(repo, repo.parent)
    spec["checks"].append(
        {
            "name": "impossible",
            "kind": "sql",
            "target": "app-db",
            "query": "select count(*) from orders",
            "expect": {"lt": 0},
        }
    )
    run = run_drill("all-fail", spec, {"target_time": truth["targets"][-1]["target"]})
    assert run.verdict == "FAIL"
    assert run.state == "failed"
    assert run.tasks["exhausted"] == "success"
    assert run.tasks["escalate"] == "failed"
    assert run.failed_tasks() == ["escalate"]  # the one task that fails: an alert means FAIL
    assert [t["status"] for t in run.report["tiers"]] == ["failed", "failed", "failed"]
    used = [t["backup_id"] for t in run.report["tiers"]]
    assert len(set(used)) == len(used), f"a later tier retried a failed backup: {used}"
    assert "impossible" in run.report["escalation"] or "checks:" in run.report["escalation"]


def test_provisioning_timeout_falls_back(clean_scenario, run_drill, make_spec, no_sandboxes_left):
    repo, truth = clean_scenario
    spec = make_spec(repo, repo.parent)
    spec["tiers"][0]["timeout"] = "100ms"  # restoring takes longer than that on any machine
    run = run_drill("timeout", spec, {"target_time": truth["targets"][-1]["target"]})
    primary = run.tier("primary")
    assert run.tasks["primary.provision_sandbox"] == "skipped"
    assert primary["status"] == "failed"
    assert primary["findings"][0]["code"] == "PROVISION_TIMEOUT"
    assert run.tier("secondary")["status"] == "passed"
    assert run.verdict == "PASS"
    assert run.failed_tasks() == []


def test_dry_run_restores_nothing(clean_scenario, run_drill, make_spec, no_sandboxes_left):
    repo, truth = clean_scenario
    root = Path(os.environ["DRILLKIT_SANDBOX_ROOT"])
    run = run_drill(
        "dry",
        make_spec(repo, repo.parent),
        {"target_time": truth["targets"][0]["target"], "dry_run": True},
    )
    assert run.verdict == "DRY RUN"
    assert run.state == "success"
    primary = run.tier("primary")
    assert primary["status"] == "dry_run"
    sandbox_id = run.report["sandbox"]["id"]
    assert run.report["sandbox"]["dry_run"] is True
    assert not (root / sandbox_id).exists()
    assert run.report["manifest"]["services"]["app-db"]["resolved_by"] == "provisioned"
    assert all(c["status"] == "skipped" for c in run.report["checks"])


def test_keep_sandbox_leaves_it_for_investigation_with_a_ttl(clean_scenario, run_drill, make_spec):
    from drillkit.sandbox.gc import collect_local
    from drillkit.timeutil import parse_iso

    repo, truth = clean_scenario
    run = run_drill(
        "keep",
        make_spec(repo, repo.parent),
        {"target_time": truth["targets"][0]["target"], "keep_sandbox": True},
    )
    assert run.verdict == "PASS"
    kept = run.tier("primary")["teardown"]
    assert kept["removed"] is False
    expires = parse_iso(kept["kept_until"])
    assert collect_local(dry_run=True) == []  # not expired yet
    removed = collect_local(now=expires)
    assert [r["id"] for r in removed] == [run.report["sandbox"]["id"]]


def test_unknown_conf_keys_are_refused(clean_scenario, run_drill, make_spec, no_sandboxes_left):
    repo, _ = clean_scenario
    run = run_drill("conf", make_spec(repo, repo.parent), {"taget_time": "2026-01-01T00:00:00Z"})
    assert run.tasks["check_conf"] == "skipped"
    assert run.verdict == "COULD NOT VERIFY"
    assert run.state == "failed"
    assert run.failed_tasks() == ["escalate"]
    assert run.report["findings"][0]["code"] == "CONF_INVALID"
    assert "taget_time" in run.report["findings"][0]["message"]


@pytest.mark.parametrize(
    ("conf", "needle"),
    [
        ({"dry_run": "yes"}, "dry_run"),
        ({"tiers": ["quaternary"]}, "quaternary"),
        ({"target_time": "tomorrow morning"}, "tomorrow"),
    ],
)
def test_invalid_params_are_refused_before_anything_runs(
    clean_scenario, run_drill, make_spec, conf, needle
):
    repo, _ = clean_scenario
    with pytest.raises(Exception) as caught:
        run_drill("params", make_spec(repo, repo.parent), conf)
    assert needle in str(caught.value)


def test_bad_spec_is_an_import_error_for_that_dag_only(
    clean_scenario, spec_writer, make_spec, airflow_db
):
    from airflow.dag_processing.dagbag import DagBag

    repo, _ = clean_scenario
    spec_writer("good-one", make_spec(repo, repo.parent))
    bad = make_spec(repo, repo.parent)
    bad["tiers"][1]["selekt"] = "latest"
    spec_writer("bad-one", bad)
    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert "drill_good_one" in bag.dag_ids
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert "drill_bad_one.py" in errors
    assert "drill_good_one.py" not in errors
    message = errors["drill_bad_one.py"]
    assert "bad-one.yaml" in message and "tiers[1].selekt" in message and "unknown key" in message
