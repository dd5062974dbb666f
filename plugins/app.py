"""The "Restore drills" view: a FastAPI app the Airflow api-server mounts at ``/drillkit``.

Server-rendered HTML (Jinja, autoescaped) with inline SVG charts, plus JSON and JUnit downloads.
Every route authenticates the Airflow user and checks DAG access (``drillkit.plugins.auth``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from airflow.api_fastapi.common.db.common import SessionDep
from drillkit.plugins import charts, history
from drillkit.plugins.auth import UserDep, readable_dag_ids, require_any_dag, require_dag
from drillkit.plugins.links import URL_PREFIX, run_path
from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import ChainableUndefined, Environment, FileSystemLoader
from starlette.exceptions import HTTPException as StarletteHTTPException

from drillkit.report import junit_xml

HERE = Path(__file__).parent
STATIC = {
    "drillkit.css": "text/css",
    "drillkit.js": "text/javascript",
    "theme.js": "text/javascript",
}
PageSize = Annotated[int, Query(description=f"runs per page, 1 to {history.DEFAULT_LIMIT}")]
VERDICTS = ["PASS", "FAIL", "COULD NOT VERIFY", "DRY RUN", history.RUNNING, history.NO_REPORT]
SECURITY_HEADERS = {
    # Everything the pages use is served here: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        # Reports written by older drillkit versions lack newer fields: show them as empty.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    env.filters["verdict_class"] = charts.verdict_class
    env.filters["drill_name"] = history.drill_from_dag_id
    return env


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"{name} must be a date like 2026-11-21"
        ) from None


def _cursor(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    try:
        return history.parse_cursor(value)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def create_app() -> FastAPI:
    """The view's app; the plugin registers it with ``url_prefix`` ``/drillkit``."""
    app = FastAPI(title="drillkit: restore drills", docs_url=None, redoc_url=None)
    env = _environment()

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")

        def url(path: str = "/", **query: Any) -> str:
            params = {k: v for k, v in query.items() if v not in (None, "")}
            return f"{root}{path}" + (f"?{urlencode(params)}" if params else "")

        html = env.get_template(name).render(
            url=url,
            run_url=lambda d, r: url(run_path(d, r)),
            airflow_url=lambda path: root.removesuffix(URL_PREFIX) + path,
            **context,
        )
        return _secure(HTMLResponse(html, status_code=status_code))

    @app.exception_handler(StarletteHTTPException)
    async def errors(request: Request, exc: StarletteHTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if not wants_html or request.url.path.rsplit("/", 1)[-1].endswith((".json", ".xml")):
            return _secure(
                JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
            )
        login = None
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
        response = render(
            request,
            "error.html",
            exc.status_code,
            detail=exc.detail,
            code=exc.status_code,
            login=login,
        )
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    def runs_for(
        user: Any,
        session: Any,
        drill: str | None,
        verdict: str | None,
        since: Any,
        until: Any,
        before: str | None = None,
        limit: int = history.DEFAULT_LIMIT,
    ) -> tuple[list[str], list[dict[str, Any]], history.RunFilter]:
        require_any_dag(user)
        readable = readable_dag_ids(user, history.drill_dag_ids(session))
        if drill:
            require_dag(user, drill)
        if not 1 <= limit <= history.DEFAULT_LIMIT:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail=f"limit must be from 1 to {history.DEFAULT_LIMIT} runs a page, got {limit}",
            )
        if verdict and verdict not in VERDICTS:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, detail=f"verdict must be one of {', '.join(VERDICTS)}"
            )
        flt = history.RunFilter(
            dag_ids=frozenset([drill] if drill else []),
            verdict=verdict or None,
            since=_day(since, "since"),
            until=_day(until, "until"),
            before=_cursor(before),
            limit=limit,
        )
        return readable, history.list_runs(session, readable, flt), flt

    @app.get("/", response_class=HTMLResponse, name="runs_page")
    def runs_page(
        request: Request,
        user: UserDep,
        session: SessionDep,
        drill: Annotated[str | None, Query(description="drill DAG id")] = None,
        verdict: str | None = None,
        since: Annotated[str | None, Query(description="first day, YYYY-MM-DD")] = None,
        until: Annotated[str | None, Query(description="last day, YYYY-MM-DD")] = None,
        before: Annotated[str | None, Query(description="page cursor: runs older than it")] = None,
        limit: PageSize = history.DEFAULT_LIMIT,
    ) -> HTMLResponse:
        readable, runs, flt = runs_for(user, session, drill, verdict, since, until, before, limit)
        today = datetime.now(UTC).date()
        counts = {v: sum(1 for r in runs if r["verdict"] == v) for v in VERDICTS}
        return render(
            request,
            "runs.html",
            runs=runs,
            readable=readable,
            flt=flt,
            filters={
                "drill": drill or "",
                "verdict": verdict or "",
                "since": since or "",
                "until": until or "",
            },
            before=before or "",
            verdicts=VERDICTS,
            counts=counts,
            heatmap=charts.heatmap(runs, since=flt.since, until=flt.until, today=today),
            ranges=[(days, (today - timedelta(days=days - 1)).isoformat()) for days in (7, 30, 90)],
            names={r["dag_id"]: r["drill"] for r in runs if r["drill"]},
            trends=_trends(runs),
            limit=flt.limit,
            default_limit=history.DEFAULT_LIMIT,
        )

    def load(user: Any, session: Any, dag_id: str, run_id: str) -> tuple[dict, dict | None]:
        require_dag(user, dag_id)
        if dag_id not in history.drill_dag_ids(session):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{dag_id} is not a drill DAG")
        found = history.get_run(session, dag_id, run_id)
        if found is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"no run {run_id!r} of the drill DAG {dag_id!r}"
            )
        return found

    def report_or_404(summary: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
        if report is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"run {summary['run_id']} has no report yet (run state "
                f"{summary['run_state']}); its report task writes one when the run ends",
            )
        return report

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, name="run_page")
    def run_page(
        request: Request, dag_id: str, run_id: str, user: UserDep, session: SessionDep
    ) -> HTMLResponse:
        summary, report = load(user, session, dag_id, run_id)
        return render(
            request,
            "run.html",
            run=summary,
            report=report,
            timeline=charts.timeline_bars((report or {}).get("timeline") or []),
        )

    @app.get("/runs/{dag_id}/{run_id}/report.json", name="report_json")
    def report_json(dag_id: str, run_id: str, user: UserDep, session: SessionDep) -> Response:
        report = report_or_404(*load(user, session, dag_id, run_id))
        response = Response(
            json.dumps(report, indent=2, default=str), media_type="application/json"
        )
        response.headers["Content-Disposition"] = _attachment(report, "json")
        return _secure(response)

    @app.get("/runs/{dag_id}/{run_id}/junit.xml", name="report_junit")
    def report_junit(dag_id: str, run_id: str, user: UserDep, session: SessionDep) -> Response:
        report = report_or_404(*load(user, session, dag_id, run_id))
        response = Response(junit_xml(report), media_type="application/xml")
        response.headers["Content-Disposition"] = _attachment(report, "xml")
        return _secure(response)

    @app.get("/api/runs", name="api_runs")
    def api_runs(
        user: UserDep,
        session: SessionDep,
        drill: str | None = None,
        verdict: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: str | None = None,
        limit: PageSize = history.DEFAULT_LIMIT,
    ) -> JSONResponse:
        _, runs, flt = runs_for(user, session, drill, verdict, since, until, before, limit)
        older = runs[-1]["cursor"] if len(runs) >= flt.limit else None
        return _secure(JSONResponse({"runs": runs, "total": len(runs), "older": older}))

    @app.get("/api/runs/{dag_id}/{run_id}", name="api_run")
    def api_run(dag_id: str, run_id: str, user: UserDep, session: SessionDep) -> JSONResponse:
        summary, report = load(user, session, dag_id, run_id)
        return _secure(JSONResponse({"run": summary, "report": report}))

    @app.get("/static/{name}", name="static")
    def static(name: str, user: UserDep) -> Response:
        require_any_dag(user)
        if name not in STATIC:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
        response = _secure(Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name]))
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    return app


def _trends(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per drill, its RTO and achieved data loss over the listed runs, against the RTO and RPO."""
    per_drill: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        per_drill.setdefault(run["dag_id"], []).append(run)
    trends = []
    for dag_id, drill_runs in sorted(per_drill.items()):
        budget = next(
            (r["rto_budget_seconds"] for r in drill_runs if r["rto_budget_seconds"]), None
        )
        trends.append(
            {
                "dag_id": dag_id,
                "drill": drill_runs[0]["drill"] or dag_id,
                "rto": charts.line_chart(
                    "RTO (restore to ready)",
                    drill_runs,
                    "rto_seconds",
                    budget=budget,
                    budget_label="RTO",
                ),
                "loss": charts.line_chart(
                    "Achieved data loss",
                    drill_runs,
                    "data_loss_seconds",
                    budget=next(
                        (r["rpo_seconds"] for r in drill_runs if r.get("rpo_seconds") is not None),
                        None,
                    ),
                    budget_label="RPO",
                ),
            }
        )
    return trends


def _attachment(report: dict[str, Any], extension: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["run_id"])
    drill = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["drill"])
    return f'attachment; filename="{drill}-{stem}.{extension}"'
