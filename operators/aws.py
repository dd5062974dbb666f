"""Object-store credentials from an Airflow AWS connection (``aws_conn_id`` of a catalog).

Fields as the Amazon provider's AWS connection keeps them: login = access key id, password =
secret access key, extra ``region_name`` and ``aws_session_token``. Airflow masks a connection's
password in task logs once it is read; drillkit passes the values on by environment only.
"""

from __future__ import annotations

from airflow.sdk import BaseHook


def aws_connection_env(conn_id: str) -> dict[str, str]:
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    env = {
        "AWS_ACCESS_KEY_ID": conn.login or extra.get("aws_access_key_id") or "",
        "AWS_SECRET_ACCESS_KEY": conn.password or extra.get("aws_secret_access_key") or "",
        "AWS_SESSION_TOKEN": extra.get("aws_session_token") or "",
        "AWS_DEFAULT_REGION": extra.get("region_name") or "",
    }
    return {k: str(v) for k, v in env.items() if v}
