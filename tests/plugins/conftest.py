"""Airflow's own API app with the drillkit view mounted, over a history of real drill runs.

The app is Airflow's ``create_app``: the plugin is mounted from the entry point exactly as in the
api-server, behind Airflow's middlewares, next to its ``/auth/token`` endpoint. Users come from a
real auth manager (SimpleAuthManager plus per-DAG scopes, see ``dag_scoped_auth``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# drill_runs and dag_scoped_auth live beside this file; Airflow imports the auth manager by name.
sys.path.insert(0, str(Path(__file__).parent))

from drill_runs import ALPHA, USERS, History, drill_history


@pytest.fixture(scope="session")
def history(airflow_db, clean_scenario, work_root: Path) -> History:
    return drill_history(clean_scenario, work_root)


@pytest.fixture(scope="session")
def airflow_api(work_root: Path, history: History):
    """Airflow's API app (core) in process, with four users; yields ``(client, tokens)``."""
    from fastapi.testclient import TestClient

    passwords = work_root / "passwords.json"
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": "dag_scoped_auth.DagScopedAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
        "DRILLKIT_TEST_DAG_SCOPES": f"auditor={ALPHA}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        with TestClient(create_app("core"), base_url="http://127.0.0.1") as client:
            secret = json.loads(passwords.read_text())
            tokens = {}
            for user in USERS:
                answer = client.post(
                    "/auth/token", json={"username": user, "password": secret[user]}
                )
                assert answer.status_code == 201, answer.text
                tokens[user] = answer.json()["access_token"]
            yield client, tokens
        purge_cached_app()
