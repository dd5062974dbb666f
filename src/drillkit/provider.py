"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from drillkit import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-drillkit",
        "name": "drillkit",
        "description": "Automated restore drills: prove that backups restore.",
        "versions": [__version__],
    }
