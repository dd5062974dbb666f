"""The "Restore drills" view in a real browser, served by a real ``airflow api-server``.

After real drill runs (dag.test), the api-server starts on 127.0.0.1 with the test Airflow home;
headless Chromium (Debian's ``chromium``, driven by Playwright) logs in with a token, opens the
view from Airflow's navigation, reads the table, opens a run and checks the charts. Screenshots
go to $DRILLKIT_ARTIFACTS (default /tmp/drillkit-artifacts); DRILLKIT_UPDATE_SCREENSHOT=1 also
refreshes the README's docs/drill-reports.png.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins"))

from drill_runs import History, drill_history

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL = (
    "the browser test needs Playwright and Debian's chromium: "
    "`apt-get install -y chromium` and `.venv/bin/python -m pip install playwright` "
    "(never `playwright install`; `make test` installs both)"
)
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "drill-reports.png"


def _artifacts() -> Path:
    path = Path(os.environ.get("DRILLKIT_ARTIFACTS", "/tmp/drillkit-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return 0


@pytest.fixture(scope="module")
def history(airflow_db, clean_scenario, work_root: Path) -> History:
    return drill_history(clean_scenario, work_root)


@pytest.fixture(scope="module")
def api_server(history: History, work_root: Path):
    """``airflow api-server`` on a free loopback port over the test database; yields its URL
    and an admin token. Stops the server's whole process group afterwards."""
    port = _free_port()
    passwords = work_root / "e2e-passwords.json"
    log_path = _artifacts() / "api-server.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
    }
    started = time.monotonic()
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "airflow"),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one below
        )
    base = f"http://127.0.0.1:{port}"
    try:
        while _get(f"{base}/api/v2/monitor/health") != 200:
            if server.poll() is not None or time.monotonic() - started > 120:
                pytest.fail(f"api-server did not come up; its log: {log_path}")
            time.sleep(0.5)
        password = json.loads(passwords.read_text())["admin"]
        request = urllib.request.Request(
            f"{base}/auth/token",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            token = json.loads(answer.read())["access_token"]
        yield base, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is not installed: {INSTALL}")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _parsed(frame, selector: str) -> None:
    """Wait for ``selector`` of the new document, then for the whole document: the browser
    parses a long page incrementally, so an early element can be there before later ones."""
    frame.wait_for_selector(selector, timeout=30_000)
    frame.wait_for_function("document.readyState === 'complete'", timeout=30_000)


def test_the_view_in_airflow_shows_runs_charts_and_a_run(api_server, browser, history, capsys):
    base, token = api_server
    artifacts = _artifacts()
    with capsys.disabled():
        print(f"\nscreenshots and the api-server log: {artifacts}")
    anonymous = browser.new_context()
    page = anonymous.new_page()
    assert page.goto(f"{base}/drillkit/").status == 401
    assert "Log in to Airflow" in page.content()
    anonymous.close()

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_cookies([{"name": "_token", "value": token, "url": base}])
    page = context.new_page()

    # From Airflow's own navigation: the external view is an iframe at /plugin/restore-drills.
    page.goto(f"{base}/")
    nav = page.get_by_role("link", name="Restore drills")
    nav.first.wait_for(timeout=60_000)
    nav.first.click()
    page.wait_for_url("**/plugin/restore-drills", timeout=30_000)
    frame_element = page.wait_for_selector("iframe", timeout=30_000)
    frame = frame_element.content_frame()
    assert frame is not None
    _parsed(frame, "table.runs tr.run-row")
    page.screenshot(path=str(artifacts / "01-airflow-restore-drills.png"))
    if os.environ.get("DRILLKIT_UPDATE_SCREENSHOT"):  # the README's picture, on request only
        page.screenshot(path=str(DOCS_SCREENSHOT))
    shown = set(frame.locator("table.runs a.run-link").all_inner_texts())
    assert {run_id for _, run_id in history.runs.values()} <= shown, shown
    assert frame.locator("svg.heatmap rect.cell").count() > 0
    assert frame.locator("svg.line-chart circle.point").count() >= 3
    assert frame.locator("svg.heatmap rect.cell.tier1").count() >= 1  # the fallback day

    # Open the run that fell back to its second tier.
    fallback_dag, fallback_run = history.runs["fallback"]
    fallback_link = f'a.run-link[href*="/{fallback_dag}/"]'
    frame.locator(fallback_link, has_text=fallback_run).click()
    _parsed(frame, "table.tiers")
    assert frame.locator("h1 .badge").inner_text() == "PASS"
    tiers = frame.locator("table.tiers tbody tr")
    assert tiers.count() == 2
    assert "BACKUP_CHECKSUM_MISMATCH" in tiers.nth(0).inner_text()
    assert frame.locator("svg.timeline rect.bar").count() >= 7
    assert frame.locator("table.checks tbody tr").count() == 3
    page.screenshot(path=str(artifacts / "02-run-detail-in-airflow.png"))

    # The same pages full size, outside Airflow's frame (as the "Drill report" link opens them).
    page.goto(f"{base}/drillkit/")
    _parsed(page, "svg.line-chart")
    page.screenshot(path=str(artifacts / "03-runs-full-page.png"), full_page=True)
    page.locator(fallback_link, has_text=fallback_run).click()
    _parsed(page, "svg.timeline")
    page.screenshot(path=str(artifacts / "04-run-full-page.png"), full_page=True)
    text = page.content()
    assert not [secret for secret in history.secrets if secret in text]
    context.close()


def _session(browser, base: str, token: str, *, theme: str | None = None):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="light")
    context.add_cookies([{"name": "_token", "value": token, "url": base}])
    if theme is not None:  # what Airflow's own colour-mode toggle stores
        context.add_init_script(f"window.localStorage.setItem('theme', '{theme}')")
    return context


def test_running_drills_targets_and_the_overview_in_dark_mode(api_server, browser, history):
    """RUNNING with its tier, the requested target of a run whose selection failed, RAN as the
    run's start, heatmap links, budget lines, plurals, and Airflow's dark mode followed."""
    base, token = api_server
    artifacts = _artifacts()
    context = _session(browser, base, token, theme="dark")
    page = context.new_page()
    page.goto(f"{base}/drillkit/")
    _parsed(page, "table.runs tr.run-row")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 20, 25)"
    page.screenshot(path=str(artifacts / "05-runs-dark.png"), full_page=True)

    running_dag, running_run = history.runs["running"]
    row = page.locator("tr.run-row", has_text=running_run)
    text = row.inner_text()
    assert "RUNNING" in text and "primary" in text and "primary.sandbox_ready" in text, text
    assert "NO REPORT" not in text
    # RAN is when the run started, and the column sorts by it.
    fail_dag, fail_run = history.runs["scheduled-fail"]
    ran = page.locator("tr.run-row", has_text=fail_run).locator("td.ran")
    assert ran.get_attribute("data-sort")
    assert page.locator("svg.line-chart line.budget").count() >= 2  # RTO and RPO lines
    assert page.locator("svg.line-chart text.budget-label", has_text="RPO").count() >= 1
    # A heatmap cell links to that day's runs of that drill.
    cell = page.locator("svg.heatmap a.cell-link").first
    cell.click()
    _parsed(page, "table.runs")
    assert "since=" in page.url and "until=" in page.url and "drill=" in page.url
    count = page.locator(".counts .count").first.inner_text()
    rows = page.locator("table.runs tr.run-row").count()
    assert count.split()[1] == ("run" if rows == 1 else "runs"), count

    # The scheduled run whose selection failed shows the target it asked for.
    page.goto(f"{base}/drillkit/")
    _parsed(page, "table.runs tr.run-row")
    page.locator(f'a.run-link[href*="/{fail_dag}/"]', has_text=fail_run).click()
    _parsed(page, "section.figures")
    figure = page.locator(".figure", has_text="Recovery target").inner_text()
    target = history.reports["scheduled-fail"]["target"]["requested"]
    assert target in figure and "logical date" in figure and "newest" not in figure, figure
    page.screenshot(path=str(artifacts / "06-target-of-a-failed-selection-dark.png"))
    context.close()

    light = _session(browser, base, token, theme="light")
    page = light.new_page()
    page.goto(f"{base}/drillkit/runs/{running_dag}/{running_run}")
    _parsed(page, "section.running-now")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert "RUNNING" in page.locator("section.running-now").inner_text()
    assert page.locator("h1").inner_text().endswith("ui-alpha")  # the drill's name, as reported
    page.screenshot(path=str(artifacts / "07-running-run-light.png"))
    light.close()


def test_the_trigger_form_takes_a_precise_target_and_refuses_feb_30_in_one_line(
    api_server, browser, history
):
    """Airflow's own Trigger form: the recovery target is a text field that keeps seconds,
    fractions and the zone as typed; an impossible date is refused when the run is created,
    with drillkit's one-line message."""
    base, token = api_server
    artifacts = _artifacts()
    dag_id = history.runs["pass"][0]
    context = _session(browser, base, token)
    page = context.new_page()
    try:
        page.goto(f"{base}/dags/{dag_id}")
        page.get_by_role("button", name="Trigger").first.click(timeout=60_000)
        field = page.locator("input[name='element_target_time'], input#element_target_time")
        if field.count() == 0:
            field = page.get_by_label("Recovery target")
        field.first.wait_for(timeout=30_000)
        precise = "2026-11-21 08:00:30.25+02:00"
        field.first.fill(precise)
        page.keyboard.press("Tab")
        assert field.first.input_value() == precise  # no picker rounding it to minutes
        assert field.first.get_attribute("type") in (None, "text")
        assert "2026-11-21T08:00:00Z" in page.content()  # the format hint and examples
        page.screenshot(path=str(artifacts / "08-trigger-form.png"))
        field.first.fill("2026-02-30T10:00:00Z")
        page.keyboard.press("Tab")
        page.get_by_role("button", name="Trigger").last.click()
        message = page.get_by_text("day is out of range for month")
        message.first.wait_for(timeout=30_000)
        message.first.scroll_into_view_if_needed()
        assert message.first.is_visible()
        shown = message.first.inner_text()
        assert "Failed validating" not in shown and "2026-02-30T10:00:00Z" in shown
        assert "\n" not in shown.strip(), shown
        page.screenshot(path=str(artifacts / "09-trigger-refused.png"))
    except Exception:
        page.screenshot(path=str(artifacts / "trigger-form-failure.png"), full_page=True)
        raise
    finally:
        context.close()
