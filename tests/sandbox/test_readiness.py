"""Merging the readiness sensor's restore time into a sandbox record (what the gate and report
read): it fills what provisioning could not measure, and never overrides what it did."""

from __future__ import annotations

import pytest

from drillkit.sandbox.readiness import with_readiness

pytestmark = pytest.mark.unit

KUBERNETES = {"backend": "kubernetes", "id": "orders-abc123", "restore_seconds": None}
MEASURED = {
    "schema": "drillkit.readiness/v1",
    "ready": True,
    "restore_seconds": 95.0,
    "restore_seconds_source": "cluster_conditions",
}


def test_the_sensors_measurement_fills_a_kubernetes_record():
    merged = with_readiness(KUBERNETES, MEASURED)
    assert merged == {
        **KUBERNETES,
        "restore_seconds": 95.0,
        "restore_seconds_source": "cluster_conditions",
    }
    assert KUBERNETES["restore_seconds"] is None  # the XCom value is not mutated


def test_a_measurement_taken_while_provisioning_is_never_overridden():
    local = {"backend": "local", "id": "orders-3f9c2a1b", "restore_seconds": 1.23}
    assert with_readiness(local, MEASURED) == local


@pytest.mark.parametrize(
    "readiness",
    [None, {"ready": True, "restore_seconds": None, "restore_seconds_source": None}],
    ids=["sensor-left-nothing", "nothing-measured"],
)
def test_without_a_measurement_the_record_stays_as_provisioned(readiness):
    assert with_readiness(KUBERNETES, readiness) == KUBERNETES


def test_no_record_stays_no_record():
    assert with_readiness(None, MEASURED) is None
