"""Who may see what in the drill view, decided by Airflow itself.

Airflow serves plugin apps without authentication, so every route depends on ``current_user``:
Airflow's own ``get_user`` (a bearer token from ``POST /auth/token``, else the UI's ``_token``
cookie). A drill run is visible only to a user the auth manager lets read its DAG and the DAG's
XCom (the report is XCom). No credential -> 401; a credential without access -> 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials


async def current_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Any:
    """The authenticated Airflow user; 401 for no, expired or invalid credentials."""
    try:
        return await get_user(request, None, bearer)
    except HTTPException as exc:
        # Airflow answers 403 to a malformed token; here any failed authentication is a 401,
        # so 403 keeps one meaning: authenticated, but not allowed to read that drill.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"not authenticated: {exc.detail}; log in to Airflow first",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc


UserDep = Annotated[Any, Depends(current_user)]


def _requests(dag_id: str | None, team: str | None) -> list[dict[str, Any]]:
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    details = DagDetails(id=dag_id, team_name=team)
    return [
        {"method": "GET", "details": details},
        {"method": "GET", "access_entity": DagAccessEntity.XCOM, "details": details},
    ]


def may_read_dags(user: Any) -> bool:
    """Whether the user may read DAGs at all (Airflow's own check for its DAG list)."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().is_authorized_dag(method="GET", user=user)


def readable_dag_ids(user: Any, dag_ids: Iterable[str]) -> list[str]:
    """The drill DAGs among ``dag_ids`` whose runs and reports the user may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    dag_ids = list(dag_ids)
    if not dag_ids:
        return []
    teams = DagModel.get_dag_id_to_team_name_mapping(dag_ids)
    manager = get_auth_manager()
    return [
        dag_id
        for dag_id in dag_ids
        if manager.batch_is_authorized_dag(_requests(dag_id, teams.get(dag_id)), user=user)
    ]


def require_dag(user: Any, dag_id: str) -> None:
    """403 unless the user may read ``dag_id`` and its XCom."""
    if not readable_dag_ids(user, [dag_id]):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"you may not read the drill DAG {dag_id!r}; ask an Airflow admin for access",
        )


def require_any_dag(user: Any) -> None:
    """403 unless the user may read DAGs at all."""
    if not may_read_dags(user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="you may not read DAGs in this Airflow; ask an Airflow admin for access",
        )
