"""Every endpoint of the "Restore drills" view, through Airflow's own app, over real drill runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from drill_runs import ALPHA, BETA, HOSTILE_KEY
from drillkit.plugins.links import URL_PREFIX, run_path

pytestmark = pytest.mark.integration


def _run_url(history, label: str, suffix: str = "") -> str:
    dag_id, run_id = history.runs[label]
    return f"{URL_PREFIX}{run_path(dag_id, run_id)}{suffix}"


def _endpoints(history) -> list[str]:
    return [
        f"{URL_PREFIX}/",
        f"{URL_PREFIX}/api/runs",
        _run_url(history, "fallback"),
        _run_url(history, "fallback", "/report.json"),
        _run_url(history, "fallback", "/junit.xml"),
        f"{URL_PREFIX}/api{run_path(*history.runs['fallback'])}",
        f"{URL_PREFIX}/static/drillkit.css",
        f"{URL_PREFIX}/static/drillkit.js",
    ]


def _as(tokens, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[user]}"}


def test_every_endpoint_answers_401_without_a_user(airflow_api, history):
    client, _ = airflow_api
    client.cookies.clear()
    for url in _endpoints(history):
        answer = client.get(url)
        assert answer.status_code == 401, url
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "not authenticated" in answer.json()["detail"]


def test_a_forged_or_garbled_token_is_401_too(airflow_api, history):
    client, tokens = airflow_api
    forged = tokens["admin"][:-4] + ("AAAA" if not tokens["admin"].endswith("AAAA") else "BBBB")
    for token in (forged, "not-a-jwt"):
        answer = client.get(f"{URL_PREFIX}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401


def test_a_browser_without_a_session_gets_a_login_page(airflow_api):
    client, _ = airflow_api
    client.cookies.clear()
    answer = client.get(f"{URL_PREFIX}/", headers={"Accept": "text/html"})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "/auth/login?next=" in answer.text


def test_a_user_who_may_read_no_dag_gets_403_everywhere(airflow_api, history):
    client, tokens = airflow_api
    for url in _endpoints(history):
        assert client.get(url, headers=_as(tokens, "nobody")).status_code == 403, url


def test_a_user_scoped_to_one_drill_sees_only_that_drill(airflow_api, history):
    client, tokens = airflow_api
    auditor = _as(tokens, "auditor")
    runs = client.get(f"{URL_PREFIX}/api/runs", headers=auditor).json()["runs"]
    assert runs and {r["dag_id"] for r in runs} == {ALPHA}
    page = client.get(f"{URL_PREFIX}/", headers=auditor).text
    assert history.runs["fallback"][1] in page
    assert BETA not in page
    assert client.get(_run_url(history, "fallback"), headers=auditor).status_code == 200
    for url in (
        _run_url(history, "fail"),
        _run_url(history, "fail", "/report.json"),
        _run_url(history, "fail", "/junit.xml"),
        f"{URL_PREFIX}/api{run_path(*history.runs['fail'])}",
        f"{URL_PREFIX}/?drill={BETA}",
        f"{URL_PREFIX}/api/runs?drill={BETA}",
    ):
        answer = client.get(url, headers=auditor)
        assert answer.status_code == 403, url
        assert BETA in answer.json()["detail"]


def test_the_ui_session_cookie_is_enough(airflow_api, history):
    client, tokens = airflow_api
    client.cookies.set("_token", tokens["viewer"])
    try:
        assert client.get(_run_url(history, "fallback")).status_code == 200
    finally:
        client.cookies.clear()


def test_runs_page_lists_every_run_with_its_figures(airflow_api, history):
    client, tokens = airflow_api
    answer = client.get(f"{URL_PREFIX}/", headers=_as(tokens, "viewer"))
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    page = answer.text
    for dag_id, run_id in history.runs.values():
        assert f"{URL_PREFIX}{run_path(dag_id, run_id)}" in page
    fallback = history.reports["fallback"]
    assert fallback["backup_id"] in page
    assert 'class="heatmap"' in page and 'class="cell tier1"' in page
    assert page.count('class="point pass"') >= 3
    assert 'class="cell fail"' in page and 'class="cell unverified"' in page


def test_runs_are_filtered_by_drill_verdict_and_dates(airflow_api, history):
    client, tokens = airflow_api
    viewer = _as(tokens, "viewer")

    def runs(**query) -> list[dict]:
        answer = client.get(f"{URL_PREFIX}/api/runs", params=query, headers=viewer)
        assert answer.status_code == 200, answer.text
        return answer.json()["runs"]

    ours = set(history.runs.values())
    assert ours <= {(r["dag_id"], r["run_id"]) for r in runs()}
    assert {r["run_id"] for r in runs(drill=ALPHA)} >= {
        history.runs[k][1] for k in ("pass", "pass-2", "fallback")
    }
    assert {r["dag_id"] for r in runs(drill=ALPHA)} == {ALPHA}
    failed = [r for r in runs(verdict="FAIL") if (r["dag_id"], r["run_id"]) in ours]
    expected = [history.runs["scheduled-fail"], history.runs["fail"]]  # newest first
    assert [(r["dag_id"], r["run_id"]) for r in failed] == expected
    fallback_day = history.reports["fallback"]["run_id"].split("__")[1][:10]
    same_day = runs(since=fallback_day, until=fallback_day, drill=ALPHA)
    assert [r["run_id"] for r in same_day] == [history.runs["fallback"][1]]
    assert same_day[0]["tier_reached"] == "secondary"
    assert same_day[0]["tiers_tried"] == ["primary", "secondary"]
    page = client.get(f"{URL_PREFIX}/", params={"verdict": "FAIL"}, headers=viewer).text
    assert history.runs["fail"][1] in page and history.runs["pass"][1] not in page


def test_runs_page_in_order_with_nothing_lost_or_repeated(airflow_api, history):
    """Keyset pages (``before`` = the last row's cursor) walk the whole history, newest first."""
    client, tokens = airflow_api
    viewer = _as(tokens, "viewer")
    everything = client.get(f"{URL_PREFIX}/api/runs", headers=viewer).json()
    assert everything["older"] is None  # fewer runs than a page
    walked, query, pages = [], {"limit": 3}, 0
    while True:
        page = client.get(f"{URL_PREFIX}/api/runs", params=query, headers=viewer).json()
        assert len(page["runs"]) <= 3
        walked += [(r["dag_id"], r["run_id"]) for r in page["runs"]]
        pages += 1
        if page["older"] is None:
            break
        query = {"limit": 3, "before": page["older"]}
    assert walked == [(r["dag_id"], r["run_id"]) for r in everything["runs"]]
    assert pages == -(-len(walked) // 3) or len(walked) % 3 == 0
    html = client.get(f"{URL_PREFIX}/", params={"limit": 3}, headers=viewer).text
    assert "older runs</a>" in html and "before=" in html and "limit=3" in html


@pytest.mark.parametrize(
    "query",
    [
        {"since": "last tuesday"},
        {"until": "2026-13-01"},
        {"verdict": "MAYBE"},
        {"before": "yesterday"},
        {"limit": 0},
    ],
)
def test_bad_filters_are_400_with_the_reason(airflow_api, query):
    client, tokens = airflow_api
    answer = client.get(f"{URL_PREFIX}/api/runs", params=query, headers=_as(tokens, "viewer"))
    assert answer.status_code == 400
    assert next(iter(query)) in answer.json()["detail"]


def test_run_page_shows_coordinate_manifest_checks_findings_and_timeline(airflow_api, history):
    client, tokens = airflow_api
    page = client.get(_run_url(history, "fallback"), headers=_as(tokens, "viewer")).text
    report = history.reports["fallback"]
    for needle in (
        "Tiers tried",
        "BACKUP_CHECKSUM_MISMATCH",
        report["coordinate"]["backup_id"],
        report["coordinate"]["reason"],
        "Routing manifest",
        "app-db",
        'class="timeline"',
        "secondary · provisioned",
        "primary · fallback",
    ):
        assert needle in page, needle
    for check in report["checks"]:
        assert check["name"] in page


def test_unknown_runs_and_non_drill_dags_are_404(airflow_api, history):
    client, tokens = airflow_api
    admin = _as(tokens, "admin")
    assert client.get(f"{URL_PREFIX}/runs/{ALPHA}/manual__nope", headers=admin).status_code == 404
    assert client.get(f"{URL_PREFIX}/runs/not_a_drill/x", headers=admin).status_code == 404
    assert client.get(f"{URL_PREFIX}/static/../app.py", headers=admin).status_code == 404


def test_json_download_is_the_redacted_report(airflow_api, history):
    client, tokens = airflow_api
    answer = client.get(_run_url(history, "fallback", "/report.json"), headers=_as(tokens, "admin"))
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith('attachment; filename="ui-alpha-')
    report = answer.json()
    assert report == history.reports["fallback"]
    assert report["schema"] == "drillkit.report/v2"
    assert report["verdict"] == "PASS" and report["deciding_tier"] == "secondary"
    assert report["rto_seconds"] > 0 and report["data_loss_seconds"] == 0.0
    events = [(e["tier"], e["event"]) for e in report["timeline"]]
    assert events[:3] == [("primary", "selected"), ("primary", "gate"), ("primary", "fallback")]
    assert events[-1] == (None, "verdict")
    context = report["manifest"]["context"]["value"]  # who and when stay, the MAC does not
    assert context.startswith("v1.") and context.endswith(".***"), context
    assert not [secret for secret in history.secrets if secret in json.dumps(report)]


def test_junit_download_has_one_case_per_check(airflow_api, history):
    client, tokens = airflow_api
    answer = client.get(_run_url(history, "fail", "/junit.xml"), headers=_as(tokens, "admin"))
    assert answer.status_code == 200
    suite = ET.fromstring(answer.text)
    report = history.reports["fail"]
    checks = [c for c in suite.iter("testcase") if c.get("classname").endswith(".checks")]
    assert [c.get("name") for c in checks] == [c["name"] for c in report["checks"]]
    assert checks[-1].find("failure") is not None  # the impossible check
    verdict = suite.find("properties/property[@name='verdict']")
    assert verdict is not None and verdict.get("value") == "FAIL"


def test_api_run_returns_summary_and_report(airflow_api, history):
    client, tokens = airflow_api
    body = client.get(
        f"{URL_PREFIX}/api{run_path(*history.runs['dry'])}", headers=_as(tokens, "viewer")
    ).json()
    assert body["run"]["verdict"] == "DRY RUN"
    assert body["report"]["dry_run"] is True
    assert body["report"]["data_loss_seconds"] is None


def test_no_page_or_download_shows_a_secret(airflow_api, history):
    client, tokens = airflow_api
    assert len(history.secrets) >= 3  # the spec's DSN password and the context MACs
    urls = [f"{URL_PREFIX}/", f"{URL_PREFIX}/api/runs"]
    for label in history.runs:
        urls += [
            _run_url(history, label),
            _run_url(history, label, "/report.json"),
            _run_url(history, label, "/junit.xml"),
            f"{URL_PREFIX}/api{run_path(*history.runs[label])}",
        ]
    for url in urls:
        text = client.get(url, headers=_as(tokens, "admin")).text
        leaked = [secret for secret in history.secrets if secret in text]
        assert not leaked, f"{url} shows {leaked}"


def test_markup_from_a_run_is_shown_as_text(airflow_api, history):
    client, tokens = airflow_api
    report = history.reports["hostile"]
    assert report["verdict"] == "COULD NOT VERIFY"
    assert HOSTILE_KEY in report["findings"][0]["message"]
    page = client.get(_run_url(history, "hostile"), headers=_as(tokens, "viewer")).text
    assert HOSTILE_KEY not in page
    assert "&lt;script&gt;alert(&#39;drill&#39;)&lt;/script&gt;" in page


def test_the_plugin_is_registered_with_its_nav_entry_and_app(airflow_api):
    client, tokens = airflow_api
    plugins = client.get("/api/v2/plugins", headers=_as(tokens, "admin")).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "drillkit")
    view = ours["external_views"][0]
    assert (view["name"], view["href"], view["url_route"]) == (
        "Restore drills",
        f"{URL_PREFIX}/",
        "restore-drills",
    )
    assert ours["fastapi_apps"][0]["url_prefix"] == URL_PREFIX
    assert ours["operator_extra_links"]


def test_drill_tasks_carry_a_drill_report_link_to_the_run_page(airflow_api, history):
    from urllib.parse import quote

    client, tokens = airflow_api
    viewer = _as(tokens, "viewer")
    dag_id, run_id = history.runs["fallback"]
    for task_id in ("report", "primary.gate", "secondary.provision_sandbox"):
        # The endpoint Airflow's UI asks for a task's extra links.
        answer = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links",
            headers=viewer,
        )
        assert answer.status_code == 200, answer.text
        link = answer.json()["extra_links"]["Drill report"]
        assert link.endswith(_run_url(history, "fallback")), link
    page = client.get(link.removeprefix("http://127.0.0.1"), headers=viewer)
    assert page.status_code == 200
    assert run_id in page.text


def test_reports_are_written_to_a_local_path_and_to_an_object_storage_url(history, work_root):
    local = history.reports["fail"]["files"]
    assert local["json"] == str(
        work_root / "ui-local-reports" / "ui-beta" / Path(local["json"]).name
    )
    url = history.reports["pass"]["files"]
    assert url["json"].startswith(f"file://{history.url_reports}/ui-alpha/")
    for files, label in ((local, "fail"), (url, "pass")):
        written = json.loads(Path(files["json"].removeprefix("file://")).read_text())
        assert written == {k: v for k, v in history.reports[label].items() if k != "files"}
        assert ET.parse(files["junit"].removeprefix("file://")).getroot().tag == "testsuite"


def test_the_requested_target_is_shown_when_no_tier_selected_a_backup(airflow_api, history):
    """A scheduled drill restores to its logical date: when selection fails on every tier, the
    list and the run page still show that moment, never "newest"."""
    from drillkit.timeutil import parse_iso

    client, tokens = airflow_api
    viewer = _as(tokens, "viewer")
    dag_id, run_id = history.runs["scheduled-fail"]
    report = history.reports["scheduled-fail"]
    assert report["verdict"] == "FAIL" and report["coordinate"] is None
    assert report["tiers"][0]["findings"][0]["code"] == "TARGET_BEFORE_OLDEST_RESTORABLE"
    row = client.get(f"{URL_PREFIX}/api{run_path(dag_id, run_id)}", headers=viewer).json()
    logical = parse_iso(row["run"]["logical_date"])
    assert parse_iso(row["run"]["target"]) == logical
    assert report["target"]["source"] == "logical date"
    listed = client.get(f"{URL_PREFIX}/api/runs", headers=viewer).json()["runs"]
    assert next(r for r in listed if r["run_id"] == run_id)["target"] == row["run"]["target"]
    page = client.get(_run_url(history, "scheduled-fail"), headers=viewer).text
    assert row["run"]["target"] in page and "from the logical date" in page
    assert "newest restorable point" not in page


def test_a_running_drill_shows_running_with_its_tier_and_elapsed_time(airflow_api, history):
    client, tokens = airflow_api
    viewer = _as(tokens, "viewer")
    dag_id, run_id = history.runs["running"]
    listed = client.get(f"{URL_PREFIX}/api/runs", headers=viewer).json()["runs"]
    row = next(r for r in listed if r["run_id"] == run_id)
    assert row["verdict"] == "RUNNING"
    assert row["progress"]["current_tier"] == "primary"
    assert row["progress"]["current_task"] == "primary.sandbox_ready"
    assert row["progress"]["elapsed_seconds"] >= 95
    assert row["tier_reached"] == "primary"
    html = client.get(f"{URL_PREFIX}/", headers=viewer).text
    rows = html.split('<tr class="run-row">')[1:]
    shown = next(r.split("</tr>")[0] for r in rows if run_id in r)
    assert ">RUNNING</span>" in shown and "NO REPORT" not in shown
    elapsed = re.search(r"for (\d+(?:\.\d+)?) (s|min|h)<", shown)
    assert elapsed, shown
    seconds = float(elapsed.group(1)) * {"s": 1, "min": 60, "h": 3600}[elapsed.group(2)]
    assert seconds >= 95  # it started 95 s before the history was built
    assert "primary" in shown
    page = client.get(f"{URL_PREFIX}{run_path(dag_id, run_id)}", headers=viewer).text
    assert "RUNNING" in page and "primary.sandbox_ready" in page
    running = client.get(f"{URL_PREFIX}/api/runs", params={"verdict": "RUNNING"}, headers=viewer)
    assert [r["run_id"] for r in running.json()["runs"]] == [run_id]


@pytest.mark.parametrize(
    ("conf", "needle"),
    [
        ({"target_time": "2026-02-30T10:00:00Z"}, "day is out of range for month"),
        ({"target_time": "2026-11-21T08:00:30"}, "is not a timestamp"),
        ({"dry_run": "yes"}, "'yes' is not of type 'boolean'"),
    ],
)
def test_a_drill_trigger_with_an_invalid_form_is_refused_in_one_line(
    airflow_api, history, conf, needle
):
    """Through Airflow's own API app (the Trigger form posts here): the run is refused when it
    is created, and the answer is one line, not the JSON-schema dump."""
    client, tokens = airflow_api
    answer = client.post(
        f"/api/v2/dags/{ALPHA}/dagRuns",
        json={"logical_date": None, "conf": conf},
        headers=_as(tokens, "admin"),
    )
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert needle in detail and "\n" not in detail and "Failed validating" not in detail
