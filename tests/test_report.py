"""The report model's additions: redaction, achieved data loss, JUnit properties, file names."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from drillkit.redaction import redact
from drillkit.report import achieved_data_loss, report_documents

pytestmark = pytest.mark.unit
MAC = "A" * 43
CONTEXT = f"v1.6f1c1f9e-5d37-4c52-9a51-3d1f0c7b2a10.drill.1795000000.1795003600.{MAC}"


def test_redact_removes_passwords_tokens_and_context_macs_everywhere():
    value = {
        "password": "p1",
        "conn": {"api_key": "k1", "signing_key": "k2", "token": "", "backup_id": "b1"},
        "dsns": [
            "postgresql://app:p2@db.prod.internal/app",
            "host=db password='p 3' dbname=app",
            "postgresql://app@db/app?sslpassword=p4",
        ],
        "detail": f"header X-Drill-Context: {CONTEXT}",
    }
    clean = redact(value)
    text = repr(clean)
    for secret in ("p1", "k1", "k2", "p2", "p 3", "p4", MAC):
        assert secret not in text, secret
    assert clean["conn"]["backup_id"] == "b1"
    assert clean["conn"]["token"] == ""  # nothing to hide stays visibly empty
    assert clean["dsns"][0] == "postgresql://app:***@db.prod.internal/app"
    assert clean["detail"].endswith(".1795003600.***")
    assert redact(clean) == clean


@pytest.mark.parametrize(
    ("coordinate", "sandbox", "loss"),
    [
        # Replay reached the planned point: the loss is what the plan expected.
        (
            {"recovery_point": "2026-11-21T06:00:00Z", "expected_data_loss_seconds": 0.0},
            {"achieved_recovery_point": "2026-11-21T06:00:00Z"},
            0.0,
        ),
        # Replay stopped 30 s short of the planned point: that is lost too.
        (
            {"recovery_point": "2026-11-21T06:00:30Z", "expected_data_loss_seconds": 12.5},
            {"achieved_recovery_point": "2026-11-21T06:00:00Z"},
            42.5,
        ),
        ({"recovery_point": "2026-11-21T06:00:00Z", "expected_data_loss_seconds": 0.0}, {}, None),
        (
            {"recovery_point": "2026-11-21T06:00:00Z", "expected_data_loss_seconds": 0.0},
            {"achieved_recovery_point": "2026-11-21T06:00:00Z", "dry_run": True},
            None,
        ),
    ],
)
def test_achieved_data_loss(coordinate, sandbox, loss):
    assert achieved_data_loss(coordinate, sandbox) == loss


def _report() -> dict:
    return {
        "drill": "orders/eu",
        "run_id": "manual__2026-11-21T06:00:00+00:00",
        "dag_id": "drill_orders",
        "drill_id": "d-1",
        "verdict": "FAIL",
        "backup_id": "b1",
        "deciding_tier": "primary",
        "rto_seconds": 1.5,
        "data_loss_seconds": 0.0,
        "generated_at": "2026-11-21T06:01:00Z",
        "tiers": [{"tier": "primary", "status": "failed", "reason": "checks: 1 failed"}],
        "checks": [
            {"name": "count", "status": "passed", "latency_ms": 5},
            {"name": "pitr", "status": "failed", "observed": 1, "expectation": "0"},
        ],
    }


def test_junit_has_properties_and_counts_only_test_cases():
    suite = ET.fromstring(report_documents(_report())["junit"][1])
    assert suite.get("tests") == "3"
    assert suite.get("failures") == "2"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["verdict"] == "FAIL"
    assert properties["rto_seconds"] == "1.5"


def test_report_file_names_are_safe_on_any_store():
    documents = report_documents(_report())
    assert documents["json"][0] == "orders_eu/manual__2026-11-21T06_00_00_00_00.json"
    assert documents["junit"][0].endswith(".xml")
