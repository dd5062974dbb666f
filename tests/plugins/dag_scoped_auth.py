"""A real auth manager for tests: SimpleAuthManager, except some users may read only some DAGs.

SimpleAuthManager grants by role alone, so it cannot deny one DAG to a viewer; this subclass can.
``DRILLKIT_TEST_DAG_SCOPES="auditor=drill_a|drill_b"``: user auditor may read only those DAGs.
Configured through ``AIRFLOW__CORE__AUTH_MANAGER=dag_scoped_auth.DagScopedAuthManager``.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


def _scopes() -> dict[str, set[str]]:
    scopes = {}
    for entry in filter(None, os.environ.get("DRILLKIT_TEST_DAG_SCOPES", "").split(",")):
        user, _, dags = entry.partition("=")
        scopes[user.strip()] = {d.strip() for d in dags.split("|") if d.strip()}
    return scopes


class DagScopedAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self,
        *,
        method: Any,
        user: Any,
        access_entity: Any = None,
        details: Any = None,
    ) -> bool:
        allowed = _scopes().get(user.username)
        dag_id = getattr(details, "id", None)
        if allowed is not None and dag_id is not None and dag_id not in allowed:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
