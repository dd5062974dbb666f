"""The drillkit Airflow plugin, registered through the ``airflow.plugins`` entry point.

The "Restore drills" view (a FastAPI app at ``/drillkit``, linked from the navigation), the
"Drill report" extra link, and one-line refusals of a drill's invalid trigger form. Do not also
put this folder in Airflow's plugins_folder.
"""

from __future__ import annotations

import base64
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from drillkit.plugins.links import URL_PREFIX, DrillReportLink
from drillkit.plugins.trigger_check import DrillConfErrors

# A small shield, inline so the navigation needs no extra request.
_ICON = base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
    b'stroke="#017cee" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">'
    b'<path d="M12 3l8 3v6c0 5-3.5 8-8 9-4.5-1-8-4-8-9V6z"/><path d="M8.5 12l2.5 2.5 4.5-5"/>'
    b"</svg>"
).decode()


class DrillReportsPlugin(AirflowPlugin):
    name = "drillkit"
    external_views = [
        {
            "name": "Restore drills",
            "href": f"{URL_PREFIX}/",
            "url_route": "restore-drills",
            "destination": "nav",
            "icon": f"data:image/svg+xml;base64,{_ICON}",
        }
    ]
    operator_extra_links = [DrillReportLink()]
    fastapi_root_middlewares = [{"middleware": DrillConfErrors, "name": "drillkit-conf-errors"}]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # Built on first use: only the api-server asks, workers never import FastAPI for it.
        from drillkit.plugins.app import create_app

        if not hasattr(self, "_apps"):
            self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "drillkit"}]
        return self._apps
