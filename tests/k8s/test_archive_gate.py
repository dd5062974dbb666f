"""Before the recovery Cluster exists: the source's archive must have passed the target
(TARGET_AFTER_ARCHIVE_END at once otherwise); after: a failed full-recovery Job ends the wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from k8s_scenario import COORDINATE, DRILL_ID, provision_sandbox, sandbox_backend
from test_readiness import TaskInstance, sensor

from drillkit.exceptions import BackupError
from drillkit.k8s.archiving import archive_timeout, check_archive_reaches
from drillkit.k8s.client import Kube
from drillkit.k8s.sandbox import cluster_readiness

CNPG = "postgresql.cnpg.io/v1"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _archiving(cluster, status: str, since: datetime, message: str = "") -> None:
    """The source Cluster's ContinuousArchiving condition, written through /status as the
    instance manager does."""
    reason = "ContinuousArchivingSuccess" if status == "True" else "ContinuousArchivingFailing"
    path = cluster.path(CNPG, "clusters", "orders-db", "orders") + "/status"
    condition = {
        "type": "ContinuousArchiving",
        "status": status,
        "reason": reason,
        "message": message or "Continuous archiving is working",
        "lastTransitionTime": _iso(since),
    }
    code, body = cluster.request(
        "PATCH",
        path,
        {"status": {"conditions": [condition]}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body


def _provision(cluster, target: datetime, **waits: float) -> dict[str, Any]:
    coordinate = {**COORDINATE, "target": {"requested": _iso(target)}}
    backend = sandbox_backend(cluster)
    backend.archive_wait = waits.get("archive_wait", 0.0)
    backend.upload_allowance = waits.get("upload_allowance", 60.0)
    return backend.provision(
        coordinate,
        drill_id=DRILL_ID,
        name="orders",
        ttl=timedelta(hours=2),
        sandbox_id="orders-abc123",
    )


def test_a_target_after_archiving_broke_fails_before_anything_is_created(production):
    broke = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    _archiving(production, "False", broke, "unexpected failure invoking barman-cloud-wal-archive")
    with pytest.raises(BackupError) as refused:
        _provision(production, broke + timedelta(minutes=30))
    assert refused.value.code == "TARGET_AFTER_ARCHIVE_END"
    assert "barman-cloud-wal-archive" in str(refused.value)
    assert production.stored("v1", "namespaces", "drill-orders-abc123") is None


def test_a_target_well_before_archiving_broke_is_restored(production):
    broke = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    _archiving(production, "False", broke, "exit status 2")
    record = _provision(production, broke - timedelta(hours=1))
    assert record["archive_check"]["verified"] is True


def test_a_target_of_about_now_is_not_archived_yet(production):
    _archiving(production, "True", datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(BackupError) as refused:
        _provision(production, datetime.now(UTC) - timedelta(seconds=30))
    assert refused.value.code == "TARGET_AFTER_ARCHIVE_END"
    assert "archive_timeout (300 s)" in str(refused.value)
    assert production.stored("v1", "namespaces", "drill-orders-abc123") is None


def test_a_recent_target_waits_for_the_next_archived_segment(production):
    """A scheduled drill's target (its logical date) is about now: with archiving working,
    provisioning waits for the forced WAL switch instead of failing every run."""
    code, body = production.request(
        "PATCH",
        production.path(CNPG, "clusters", "orders-db", "orders"),
        {"spec": {"postgresql": {"parameters": {"archive_timeout": "2s"}}}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    _archiving(production, "True", datetime(2026, 11, 1, tzinfo=UTC))
    started = datetime.now(UTC)
    record = _provision(production, started, archive_wait=30, upload_allowance=0.5)
    waited = (datetime.now(UTC) - started).total_seconds()
    assert record["archive_check"]["verified"] is True
    assert waited >= 1.5  # the wait was real: archive_timeout + allowance after the target


def test_an_older_target_with_working_archiving_is_verified(production):
    _archiving(production, "True", datetime(2026, 11, 1, tzinfo=UTC))
    record = _provision(production, datetime.now(UTC) - timedelta(minutes=10))
    assert record["archive_check"]["verified"] is True


def test_without_the_condition_the_check_says_it_is_unverified(production):
    record = provision_sandbox(production)  # the scenario's source has no status at all
    assert record["archive_check"]["verified"] is False
    assert "not verified" in record["archive_check"]["detail"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 300), ("10min", 600), ("90s", 90), ("120", 120), ("1h", 3600), ("2000ms", 2)],
)
def test_archive_timeout_is_read_in_postgresql_units(value, seconds):
    params = {} if value is None else {"archive_timeout": value}
    cluster = {"spec": {"postgresql": {"parameters": params}}}
    assert archive_timeout(cluster).total_seconds() == seconds


def test_a_longer_archive_timeout_moves_the_line():
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    cluster = {
        "metadata": {"name": "c"},
        "spec": {"postgresql": {"parameters": {"archive_timeout": "30min"}}},
        "status": {
            "conditions": [
                {"type": "ContinuousArchiving", "status": "True", "lastTransitionTime": _iso(now)}
            ]
        },
    }
    with pytest.raises(BackupError):
        check_archive_reaches(cluster, target=now - timedelta(minutes=20), now=now)
    assert check_archive_reaches(cluster, target=now - timedelta(minutes=40), now=now)["verified"]


def _failed_job(cluster, namespace: str, log: str | None = None) -> None:
    """CloudNativePG's full-recovery Job, failed (status as the Job controller writes it), and
    with ``log`` its pod (labelled by the Job controller) whose container wrote it."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "sandbox-1-full-recovery",
            "labels": {"cnpg.io/cluster": "sandbox", "cnpg.io/jobRole": "full-recovery"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "full-recovery"}]}}},
    }
    path = cluster.path("batch/v1", "jobs", None, namespace)
    code, body = cluster.request("POST", path, job)
    assert code == 201, body
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    cluster.patch_status(
        "batch/v1",
        "jobs",
        "sandbox-1-full-recovery",
        namespace,
        {"failed": 7, "conditions": [failed]},
    )
    if log is None:
        return
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "sandbox-1-full-recovery-x7k2p",
            # https://kubernetes.io/docs/concepts/workloads/controllers/job/ (job-name labels)
            "labels": {
                "batch.kubernetes.io/job-name": "sandbox-1-full-recovery",
                "job-name": "sandbox-1-full-recovery",
            },
        },
        "spec": {"containers": [{"name": "full-recovery", "image": "postgres"}]},
    }
    code, body = cluster.request("POST", cluster.path("v1", "pods", None, namespace), pod)
    assert code == 201, body
    cluster.emulator.store.pod_logs[(namespace, pod["metadata"]["name"])] = log


NOT_FOUND_LOG = (
    '{"level":"info","msg":"Recovering from external cluster","sourceName":"origin"}\n'
    '{"level":"error","msg":"Error while restoring a backup","error":"no target backup found"}\n'
)
DENIED_LOG = (
    '{"level":"error","msg":"barman-cloud-backup-list","stderr":"ERROR: Barman cloud backup '
    "list exception: An error occurred (InvalidAccessKeyId) when calling the ListObjectsV2 "
    'operation: The AWS Access Key Id you provided does not exist in our records."}\n'
)


@pytest.mark.parametrize(
    ("log", "code"),
    [
        (NOT_FOUND_LOG, "BACKUP_NOT_IN_STORE"),
        (DENIED_LOG, "RECOVERY_SOURCE_UNREACHABLE"),
        ('{"level":"error","msg":"OOMKilled?"}\n', "K8S_RECOVERY_JOB_FAILED"),
        (None, "K8S_RECOVERY_JOB_FAILED"),
    ],
)
def test_a_failed_recovery_job_ends_the_wait_with_the_cause_its_log_names(production, log, code):
    """Only a cause in the backup is a finding against it; a store the drill cannot read, an
    unnamed cause or an unreadable log is COULD NOT VERIFY, never blamed on the backup."""
    from drillkit.gate import FAILURE_CODES

    record = provision_sandbox(production)
    _failed_job(production, record["namespace"], log)
    readiness = cluster_readiness(Kube(production.api), record)
    assert readiness["ready"] is False
    assert readiness["failed"]["code"] == code
    assert "BackoffLimitExceeded" in readiness["failed"]["message"]
    assert (code in FAILURE_CODES) is (code == "BACKUP_NOT_IN_STORE")
    if log is not None:  # the log's last lines are in the message
        assert log.strip().splitlines()[-1][:40] in readiness["failed"]["message"]


def test_the_sensor_fails_fast_on_a_failed_recovery_job(production):
    from airflow.sdk.exceptions import AirflowSkipException

    record = provision_sandbox(production)
    _failed_job(production, record["namespace"], NOT_FOUND_LOG)
    context = {"ti": TaskInstance(record)}
    started = datetime.now(UTC)
    with pytest.raises(AirflowSkipException, match="BACKUP_NOT_IN_STORE"):
        sensor(production.conn_id, deferrable=False, timeout=60, rto=60).execute(context)
    assert (datetime.now(UTC) - started).total_seconds() < 30  # not the RTO of 60 s
    assert context["ti"].pushed["error"]["code"] == "BACKUP_NOT_IN_STORE"
