"""A refused run configuration: the report says so, tried no tier, and blames no backup."""

from __future__ import annotations

import pytest

from drillkit.report import build_report

pytestmark = pytest.mark.unit

CONF_ERROR = {
    "code": "CONF_INVALID",
    "message": "unknown run configuration key(s) taget_time: a drill accepts only dry_run, "
    "keep_sandbox, pinned_backup, target_time, tiers (a misspelt key would silently change "
    "nothing)",
}
# What the gates record when check_conf failed: each tier's tasks were upstream_failed.
UPSTREAM_FAILED = [
    {
        "decision": {
            "tier": name,
            "decision": "fall_back" if name != "tertiary" else "exhausted",
            "status": "failed",
            "reason": "pitr_select: upstream_failed",
            "findings": [],
        },
        "coordinate": None,
        "sandbox": None,
        "manifest": None,
        "validation": None,
        "teardown": None,
    }
    for name in ("primary", "secondary", "tertiary")
]


def _report():
    return build_report(
        drill="orders",
        dag_id="drill_orders",
        run_id="manual__1",
        tiers=UPSTREAM_FAILED,
        dry_run=False,
        run_error=CONF_ERROR,
    )


def test_a_refused_conf_tried_no_tier_and_names_key_and_allowed_keys():
    report = _report()
    assert report["verdict"] == "COULD NOT VERIFY"
    assert report["tiers"] == []
    assert report["deciding_tier"] is None
    assert "tiers tried: " not in report["summary"]
    assert "refused before any tier ran" in report["summary"]
    assert "CONF_INVALID" in report["summary"] and "taget_time" in report["summary"]
    assert "target_time" in report["summary"]  # the allowed keys
    assert report["findings"] == [{**CONF_ERROR, "severity": "error"}]


def test_a_refused_conf_never_advises_fixing_the_backups():
    escalation = _report()["escalation"]
    assert "fix the backups" not in escalation
    assert "fix the run configuration" in escalation
    assert "Tiers tried: none" in escalation


def test_the_terminal_report_of_a_refused_conf_lists_no_tier():
    from drillkit.operators.runner import format_report

    text = format_report(_report())
    assert "tiers tried:\n  (none)" in text
    assert "primary" not in text
