"""What every drillkit operator shares: core errors to Airflow outcomes, run identity, the key.

A core error's finding is pushed to XCom under ``error`` first, so the tier's gate can tell *why*
the tier failed. Then, for a stage of a restore-drill tier (``fall_back=True``), the task is
*skipped*: a tier that fails its gate is data for the gate, not an Airflow failure, so the only
task that fails a drill run is ``escalate`` (FAIL or COULD NOT VERIFY) and Airflow's failure
alerts mean exactly "the drill failed". Elsewhere a deterministic DrillError becomes
AirflowFailException (no retry). A transient error is raised as is while retries remain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from airflow.sdk import DAG
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
)

from drillkit.drill import drill_id_for
from drillkit.exceptions import DrillError
from drillkit.spec import ScheduledSpec

T = TypeVar("T")
SIGNING_CONN_ID = "drillkit_signing"
# A worker fleet says once where each PostgreSQL major's binaries are: the extra
# {"postgres_bin_dirs": {"15": "/usr/lib/postgresql/15/bin"}} of this connection, or
# [drillkit] postgres_bin_dirs (AIRFLOW__DRILLKIT__POSTGRES_BIN_DIRS) as JSON; a spec's own wins.
POSTGRES_CONN_ID = "drillkit_postgres"
_log = logging.getLogger(__name__)


def run_core(
    context: Any,
    func: Callable[[], T],
    *,
    timeout_code: str = "TASK_TIMEOUT",
    undo: Callable[[T], Any] | None = None,
    fall_back: bool = False,
) -> T:
    """Call the core; record a DrillError or a task timeout for the gate, then end the task.

    ``fall_back``: the task is a stage of a fallback tier. Its final outcome (a deterministic
    DrillError, a timeout, a transient error or a crash on the last try) is recorded and the task
    is skipped (so is the rest of its tier); the gate judges the tier from the record. Without it
    a deterministic DrillError or a timeout fails the task (AirflowFailException, no retry).
    A transient DrillError, or with ``fall_back`` any other exception, is raised as is while
    the task has retries left, so Airflow retries it.

    Airflow's execution timeout is one SIGALRM: when it lands inside a finalizer or an
    ``except Exception`` of a library, it is lost and the task runs on. A result that arrives
    after the task's ``execution_timeout`` is therefore still a timeout: ``undo`` (say, tearing
    down a late sandbox) runs first, so nothing is left behind by a task that failed.
    """
    ti = context["ti"]
    limit: timedelta | None = context["task"].execution_timeout
    started = time.monotonic()
    from drillkit.operators.aws import aws_connection_env

    from drillkit.barman.credentials import using_resolver

    try:
        # A catalog's aws_conn_id resolves through Airflow's connections inside the core call.
        with using_resolver(aws_connection_env):
            result = func()
    except DrillError as exc:
        ti.xcom_push(key="error", value=_json_safe(exc.to_dict()))
        if exc.transient and _retries_left(context):
            raise
        _end(fall_back, exc.code, str(exc), exc)
    except AirflowTaskTimeout as exc:
        _timed_out(ti, timeout_code, f"{ti.task_id} ran past its execution timeout", exc, fall_back)
    except (AirflowFailException, AirflowSkipException):
        raise
    except Exception as exc:
        if not fall_back or _retries_left(context):
            raise
        # A crash on the last try: the tier could not be judged (an error, never a pass).
        _log.exception("%s crashed; recorded for the gate", ti.task_id)
        message = (
            f"{ti.task_id} crashed: {type(exc).__name__}: {exc} (a fault of drillkit or its "
            "environment, not a finding about the backup: see this task's log)"
        )
        ti.xcom_push(key="error", value={"code": "STAGE_CRASHED", "message": message})
        _end(fall_back, "STAGE_CRASHED", message, exc)
    took = time.monotonic() - started
    if limit is not None and took > limit.total_seconds():
        if undo is not None:
            undo(result)
        _timed_out(
            ti,
            timeout_code,
            f"{ti.task_id} took {took:.1f} s, past its execution timeout of "
            f"{limit.total_seconds():g} s (the timeout signal was lost; the late result is "
            "discarded)",
            None,
            fall_back,
        )
    return result


def _retries_left(context: Any) -> bool:
    """Whether Airflow will run this task again if this try raises (try_number counts from 1)."""
    retries = int(getattr(context["task"], "retries", 0) or 0)
    return int(getattr(context["ti"], "try_number", 1) or 1) <= retries


def _end(fall_back: bool, code: str, message: str, cause: BaseException | None) -> NoReturn:
    """A recorded stage outcome: skip the task (a fallback tier's stage) or fail it."""
    if fall_back:
        raise AirflowSkipException(
            f"{code}: {message} (recorded for the tier's gate; the tier falls back)"
        ) from cause
    raise AirflowFailException(f"{code}: {message}") from cause


def _timed_out(
    ti: Any, code: str, message: str, cause: BaseException | None = None, fall_back: bool = False
) -> NoReturn:
    ti.xcom_push(key="error", value={"code": code, "message": message})
    _end(fall_back, code, message, cause)


def scheduled_dag(
    spec: ScheduledSpec, *, what: str, tag: str, doc_md: str, fileloc: str | None, **extra: Any
) -> DAG:
    """The DAG of a drill spec of either kind: its id, schedule, start, catchup, pause state and
    tags from the spec; ``what`` names the kind in the default description."""
    dag = DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"{what} {spec.name}",
        schedule=spec.schedule,
        start_date=spec.start_date,
        catchup=spec.catchup,
        is_paused_upon_creation=spec.paused,
        tags=["drillkit", tag, *spec.tags],
        default_args={"retries": 0},
        doc_md=doc_md,
        **extra,
    )
    if fileloc:
        dag.fileloc = fileloc
    return dag


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def run_identity(context: Any) -> tuple[str, str, str]:
    """``(dag_id, run_id, drill_id)`` of the running task."""
    dag_id = context["dag"].dag_id
    run_id = context["run_id"]
    return dag_id, run_id, drill_id_for(dag_id, run_id)


def signing_key() -> bytes:
    """The HMAC key from the ``drillkit_signing`` connection, else $DRILLKIT_SIGNING_KEY."""
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    from drillkit.routing.context import load_signing_key

    password, extra = None, None
    try:
        conn = BaseHook.get_connection(SIGNING_CONN_ID)
        password, extra = conn.password, conn.extra_dejson
    except Exception:  # no such connection: fall back to the environment
        pass
    key = load_signing_key(password=password, conn_extra=extra)
    mask_secret(key.hex())
    if password:
        mask_secret(password)
    return key


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@contextmanager
def catalog_credentials(catalog: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the core with the catalog connection's credentials in the tools' environment only.

    ``pgbackrest_conn_id`` names an Airflow connection: login/password (the S3 key and secret
    unless its extra says ``login_option``/``password_option``) and extra options reach
    pgBackRest as ``PGBACKREST_*`` variables, never argv, logs or XCom (values are masked).
    """
    from drillkit.catalog.credentials import catalog_environment, pgbackrest_environment

    conn_id = (catalog or {}).get("pgbackrest_conn_id")
    if not conn_id:
        yield
        return
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    conn = BaseHook.get_connection(str(conn_id))
    env = pgbackrest_environment(
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson or {},
        repo=int((catalog or {}).get("repo") or 1),
    )
    for value in env.values():
        mask_secret(value)
    with catalog_environment(env):
        yield


def pg_settings(spec_bin_dirs: Any = None) -> Any:
    """Where each PostgreSQL major's binaries are for this task (``drillkit.pgbin.PgSettings``):
    the spec's ``postgres_bin_dirs`` over the ``drillkit_postgres`` connection's over the
    ``[drillkit] postgres_bin_dirs`` config; discovery and the environment come after these."""
    from airflow.sdk import BaseHook, conf

    from drillkit.pgbin import PgSettings

    layers = [
        PgSettings.from_mapping(
            conf.get("drillkit", "postgres_bin_dirs", fallback=None),
            where="[drillkit] postgres_bin_dirs",
        )
    ]
    try:
        extra = BaseHook.get_connection(POSTGRES_CONN_ID).extra_dejson
    except Exception:  # no such connection: nothing configured there
        extra = {}
    layers.append(
        PgSettings.from_mapping(
            extra.get("postgres_bin_dirs"),
            where=f"connection {POSTGRES_CONN_ID} extra postgres_bin_dirs",
        )
    )
    layers.append(PgSettings.from_mapping(spec_bin_dirs, where="spec postgres_bin_dirs"))
    settings = layers[0]
    for layer in layers[1:]:
        settings = layer.merged(settings)
    return settings
