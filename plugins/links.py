"""The "Drill report" extra link on drill tasks, and the view's URLs.

Imported by the DAG factory, so it stays light: no FastAPI, no database.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

URL_PREFIX = "/drillkit"


def run_path(dag_id: str, run_id: str) -> str:
    """Path of a run's detail page inside the view (relative to the view's mount point)."""
    return f"/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def report_url(dag_id: str, run_id: str, base_url: str | None = None) -> str:
    """Where a run's detail page is served: under ``[api] base_url`` when it is set."""
    base = (base_url or "").rstrip("/")
    return f"{base}{URL_PREFIX}{run_path(dag_id, run_id)}"


class DrillReportLink(BaseOperatorLink):
    """Opens the drill run's report page (verdict, tiers, checks, timeline)."""

    name = "Drill report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.configuration import conf

        return report_url(ti_key.dag_id, ti_key.run_id, conf.get("api", "base_url", fallback=""))
