"""Refuse run configuration keys the drill does not know: Airflow accepts them silently.

The refusal is recorded for the report (COULD NOT VERIFY) and the task is skipped, which skips
every tier: ``escalate`` is then the one task that fails the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException


class ValidateDrillConfOperator(BaseOperator):
    """Stop the run at once when its conf has keys that are not drill parameters.

    :param allowed: the drill's parameter names
    """

    ui_color = "#eeeeee"

    def __init__(self, *, allowed: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = sorted(allowed)

    def execute(self, context: Any) -> dict[str, Any]:
        conf = dict(getattr(context["dag_run"], "conf", None) or {})
        unknown = sorted(set(conf) - set(self.allowed))
        if unknown:
            message = (
                f"unknown run configuration key(s) {', '.join(unknown)}: a drill accepts only "
                f"{', '.join(self.allowed)} (a misspelt key would silently change nothing)"
            )
            context["ti"].xcom_push(key="error", value={"code": "CONF_INVALID", "message": message})
            raise AirflowSkipException(f"CONF_INVALID: {message}")
        return {"conf": conf}
