"""The drillkit Airflow plugin, registered through the ``airflow.plugins`` entry point.

Views and extra links attach here; do not also put this folder in Airflow's plugins_folder.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class DrillReportsPlugin(AirflowPlugin):
    name = "drillkit"
