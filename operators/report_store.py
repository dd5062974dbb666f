"""Where a run's report files go: a local directory, or any ObjectStoragePath URL.

``s3://bucket/drills``, ``gs://...``, ``file:///srv/reports``; a connection id rides in the URL
(``s3://aws_reports@bucket/drills``). The core writes local paths itself and stays Airflow-free.
"""

from __future__ import annotations

from typing import Any

from drillkit.report import report_documents, write_report


def is_url(location: str) -> bool:
    return "://" in location


def write_report_files(report: dict[str, Any], location: str) -> dict[str, str]:
    """Write ``<drill>/<run>.json`` and ``.xml`` under ``location``; return where they went."""
    if not is_url(location):
        return write_report(report, location)
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(location)
    written = {}
    for kind, (relative, text) in report_documents(report).items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written[kind] = str(path)
    return written
