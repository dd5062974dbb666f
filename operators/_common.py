"""What every drillkit operator shares: core errors to Airflow failures, run identity, the key.

A deterministic DrillError becomes AirflowFailException (no retry); its finding is pushed to XCom
under ``error`` first, so the tier's gate can tell *why* the tier failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout

from drillkit.drill import drill_id_for
from drillkit.exceptions import DrillError

T = TypeVar("T")
SIGNING_CONN_ID = "drillkit_signing"


def run_core(context: Any, func: Callable[[], T], *, timeout_code: str = "TASK_TIMEOUT") -> T:
    """Call the core; record a DrillError or a task timeout for the gate, then fail the task."""
    ti = context["ti"]
    try:
        return func()
    except DrillError as exc:
        ti.xcom_push(key="error", value=_json_safe(exc.to_dict()))
        if exc.transient:
            raise
        raise AirflowFailException(f"{exc.code}: {exc}") from exc
    except AirflowTaskTimeout as exc:
        message = f"{ti.task_id} ran past its execution timeout"
        ti.xcom_push(key="error", value={"code": timeout_code, "message": message})
        raise AirflowFailException(f"{timeout_code}: {message}") from exc


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
