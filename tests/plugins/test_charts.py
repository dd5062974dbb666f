"""Chart geometry of the view: pure, no Airflow."""

from __future__ import annotations

from datetime import date

import pytest
from drillkit.plugins.charts import MAX_HEATMAP_DAYS, heatmap, line_chart, timeline_bars

pytestmark = pytest.mark.unit


def _run(day: int, verdict: str, *, passed: str | None = None, tried=("primary",), **extra):
    return {
        "dag_id": "drill_orders",
        "drill": "orders",
        "run_id": f"r{day}-{verdict}",
        "run_after": f"2026-11-{day:02d}T06:00:00Z",
        "verdict": verdict,
        "tier_passed": passed,
        "tiers_tried": list(tried),
        **extra,
    }


def test_heatmap_shows_the_worst_outcome_of_each_day():
    runs = [
        _run(20, "PASS", passed="primary"),
        _run(20, "PASS", passed="secondary", tried=("primary", "secondary")),
        _run(21, "FAIL", tried=("primary", "secondary", "tertiary")),
        _run(21, "PASS", passed="primary"),
        _run(19, "DRY RUN"),
    ]
    hm = heatmap(runs, since=date(2026, 11, 18), until=date(2026, 11, 21), today=date(2026, 12, 1))
    assert hm.days[0] == date(2026, 11, 18) and len(hm.days) == 4
    [row] = hm.rows
    assert [c["cls"] for c in row["cells"]] == ["none", "dryrun", "tier1", "fail"]
    assert row["cells"][2]["title"] == (
        "orders 2026-11-20: passed on secondary, after 1 fallback; passed on primary (2 runs)"
    )


def test_heatmap_defaults_to_the_last_30_days_and_clips_long_ranges():
    assert len(heatmap([], since=None, until=None, today=date(2026, 11, 21)).days) == 30
    wide = heatmap([], since=date(2025, 1, 1), until=date(2026, 11, 21), today=date(2026, 11, 21))
    assert wide.clipped and len(wide.days) == MAX_HEATMAP_DAYS
    assert wide.days[-1] == date(2026, 11, 21)


def test_line_chart_plots_each_measured_run_and_leaves_out_the_rest():
    runs = [
        _run(19, "PASS", rto_seconds=10.0),
        _run(20, "FAIL", rto_seconds=30.0),
        _run(21, "DRY RUN", rto_seconds=None),
    ]
    chart = line_chart("RTO", runs, "rto_seconds", budget=60.0, budget_label="RTO")
    assert [p["cls"] for p in chart.points] == ["pass", "fail"]
    assert chart.points[0]["x"] == chart.left
    assert chart.points[1]["x"] == chart.width - chart.right
    assert chart.points[1]["y"] < chart.points[0]["y"]  # more seconds, higher up
    assert chart.budget is not None and chart.budget["label"] == "RTO 1 min"
    assert chart.y_ticks[0]["label"] == "0 s"


def test_a_budget_far_above_every_run_is_named_not_drawn():
    chart = line_chart("RTO", [_run(19, "PASS", rto_seconds=1.0)], "rto_seconds", budget=600.0)
    assert chart.budget is None and "far above" in chart.note
    assert line_chart("RTO", [_run(19, "DRY RUN")], "rto_seconds").empty


def test_timeline_bars_run_from_each_task_start_to_its_event():
    events = [
        {
            "event": "selected",
            "tier": "primary",
            "started_at": "2026-11-21T06:00:00Z",
            "at": "2026-11-21T06:00:01Z",
        },
        {
            "event": "provisioned",
            "tier": "primary",
            "started_at": "2026-11-21T06:00:01Z",
            "at": "2026-11-21T06:00:04Z",
        },
    ]
    bars = timeline_bars(events)
    assert bars.total_seconds == 4.0
    first, second = bars.rows
    assert first["x"] == bars.label_width
    assert second["w"] == pytest.approx(3 * first["w"], rel=0.01)
    assert second["label"] == "primary · provisioned"


def test_a_heatmap_cell_links_to_that_days_runs_and_shows_a_running_drill():
    runs = [
        _run(20, "FAIL", tried=("primary",)),
        _run(21, "RUNNING", progress={"current_tier": "secondary"}),
    ]
    hm = heatmap(runs, since=date(2026, 11, 19), until=date(2026, 11, 21), today=date(2026, 12, 1))
    none, fail, running = hm.rows[0]["cells"]
    assert "href" not in none
    assert fail["href"] == {"drill": "drill_orders", "since": "2026-11-20", "until": "2026-11-20"}
    assert running["cls"] == "running" and "running (secondary)" in running["title"]
    assert fail["title"].endswith("(1 run)")


def test_the_data_loss_chart_draws_the_rpo_line_even_at_zero():
    runs = [_run(19, "PASS", data_loss_seconds=0.0), _run(20, "PASS", data_loss_seconds=2.0)]
    chart = line_chart("loss", runs, "data_loss_seconds", budget=0.0, budget_label="RPO")
    assert chart.budget is not None and chart.budget["label"] == "RPO 0 s"
