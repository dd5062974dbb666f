"""Chart geometry for the drill view, drawn as inline SVG by the templates: no chart library.

Pure: run summaries in, coordinates, labels and CSS classes out (the templates escape all text).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from drillkit.timeutil import parse_iso

MAX_HEATMAP_DAYS = 120
DEFAULT_HEATMAP_DAYS = 30
VERDICT_CLASS = {
    "PASS": "pass",
    "FAIL": "fail",
    "COULD NOT VERIFY": "unverified",
    "DRY RUN": "dryrun",
    "NO REPORT": "noreport",
    "RUNNING": "running",
}


def verdict_class(verdict: str | None) -> str:
    return VERDICT_CLASS.get(str(verdict), "noreport")


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _seconds_label(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.3g} h"
    if value >= 60:
        return f"{value / 60:.3g} min"
    return f"{value:.3g} s"


@dataclass
class LineChart:
    """One drill's figure over time: points (one per run), an optional budget line, axes."""

    title: str
    width: int = 460
    height: int = 170
    left: int = 64
    right: int = 12
    top: int = 14
    bottom: int = 28
    points: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""
    y_ticks: list[dict[str, Any]] = field(default_factory=list)
    x_ticks: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.points


def line_chart(
    title: str,
    runs: Iterable[Mapping[str, Any]],
    key: str,
    *,
    budget: float | None = None,
    budget_label: str = "budget",
) -> LineChart:
    """``key`` (seconds) of each run over its run time; runs without the figure are left out."""
    chart = LineChart(title=title)
    series = sorted(
        (parse_iso(r["run_after"]), float(r[key]), r)
        for r in runs
        if r.get(key) is not None and r.get("run_after")
    )
    if not series:
        return chart
    plot_w = chart.width - chart.left - chart.right
    plot_h = chart.height - chart.top - chart.bottom
    highest = max(v for _, v, _ in series)
    # A budget far above every run would flatten the runs into the axis: name it instead.
    if budget is not None and budget > 4 * max(highest, 1e-9):
        chart.note = f"{budget_label} {_seconds_label(budget)}, far above every run"
        budget = None
    top_value = max(highest, budget or 0.0)
    step = _nice_step(top_value * 1.1 if top_value > 0 else 1.0)
    y_max = step * math.ceil((top_value * 1.1 if top_value > 0 else 1.0) / step)
    first, last = series[0][0], series[-1][0]
    span = (last - first).total_seconds()

    def x_of(moment: datetime) -> float:
        if span <= 0:
            return chart.left + plot_w / 2
        return chart.left + plot_w * (moment - first).total_seconds() / span

    def y_of(value: float) -> float:
        return chart.top + plot_h * (1 - value / y_max)

    for moment, value, run in series:
        chart.points.append(
            {
                "x": round(x_of(moment), 1),
                "y": round(y_of(value), 1),
                "cls": verdict_class(run.get("verdict")),
                "title": f"{run.get('run_id')}: {_seconds_label(round(value, 3))} "
                f"({run.get('verdict')}, {moment:%Y-%m-%d %H:%M} UTC)",
                "href_dag": run.get("dag_id"),
                "href_run": run.get("run_id"),
            }
        )
    chart.path = " ".join(
        f"{'M' if i == 0 else 'L'}{p['x']},{p['y']}" for i, p in enumerate(chart.points)
    )
    ticks = round(y_max / step)
    chart.y_ticks = [
        {"y": round(y_of(step * i), 1), "label": _seconds_label(round(step * i, 6))}
        for i in range(ticks + 1)
    ]
    labels = [first] if span <= 0 else [first + (last - first) * i / 3 for i in range(4)]
    anchors = ["middle"] if len(labels) == 1 else ["start", "middle", "middle", "end"]
    chart.x_ticks = [
        {"x": round(x_of(moment), 1), "label": f"{moment:%m-%d %H:%M}", "anchor": anchor}
        for moment, anchor in zip(labels, anchors, strict=True)
    ]
    if budget is not None and budget <= y_max:
        label = f"{budget_label} {_seconds_label(budget)}"
        chart.budget = {"y": round(y_of(budget), 1), "label": label}
    return chart


@dataclass
class Heatmap:
    """Drills by days; each cell the worst outcome of that day's runs (the one that decides the
    day), a tooltip naming every outcome, and a link to those runs."""

    days: list[date]
    rows: list[dict[str, Any]]
    cell: int = 16
    gap: int = 2
    label_width: int = 150
    header: int = 34
    clipped: bool = False

    @property
    def width(self) -> int:
        return self.label_width + len(self.days) * (self.cell + self.gap)

    @property
    def height(self) -> int:
        return self.header + max(len(self.rows), 1) * (self.cell + self.gap)


def _outcome(run: Mapping[str, Any]) -> tuple[int, str, str]:
    """``(rank, css class, words)``: a higher rank is worse, the day shows its worst run."""
    verdict = run.get("verdict")
    if verdict == "PASS":
        tried = run.get("tiers_tried") or []
        passed = run.get("tier_passed")
        index = tried.index(passed) if passed in tried else 0
        fallbacks = f", after {index} fallback{'s' if index != 1 else ''}" if index else ""
        return 10 + index, f"tier{min(index, 3)}", f"passed on {passed}{fallbacks}"
    if verdict == "DRY RUN":
        return 1, "dryrun", "dry run"
    if verdict == "FAIL":
        return 90, "fail", "FAIL: every tier failed"
    if verdict == "COULD NOT VERIFY":
        return 80, "unverified", "COULD NOT VERIFY"
    if verdict == "RUNNING":
        return (
            2,
            "running",
            f"running ({(run.get('progress') or {}).get('current_tier') or 'starting'})",
        )
    return 5, "noreport", f"no report ({run.get('run_state')})"


def heatmap(
    runs: Iterable[Mapping[str, Any]],
    *,
    since: date | None,
    until: date | None,
    today: date,
) -> Heatmap:
    """Which tier each drill passed on, day by day, over ``since``..``until`` (inclusive)."""
    by_cell: dict[tuple[str, date], list[Mapping[str, Any]]] = defaultdict(list)
    drills: dict[str, str] = {}
    for run in runs:
        moment = parse_iso(run.get("run_after"))
        if moment is None:
            continue
        by_cell[(run["dag_id"], moment.date())].append(run)
        drills.setdefault(run["dag_id"], str(run.get("drill") or run["dag_id"]))
    end = until or today
    start = since or end - timedelta(days=DEFAULT_HEATMAP_DAYS - 1)
    clipped = (end - start).days + 1 > MAX_HEATMAP_DAYS
    if clipped:
        start = end - timedelta(days=MAX_HEATMAP_DAYS - 1)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    rows = []
    for dag_id, drill in sorted(drills.items(), key=lambda item: item[1]):
        cells = []
        for day in days:
            day_runs = by_cell.get((dag_id, day), [])
            if not day_runs:
                cells.append({"cls": "none", "title": f"{drill} {day}: no run"})
                continue
            outcomes = sorted((_outcome(r) for r in day_runs), reverse=True)
            worst = outcomes[0]
            words = "; ".join(dict.fromkeys(o[2] for o in outcomes))
            count = len(day_runs)
            cells.append(
                {
                    "cls": worst[1],
                    "title": f"{drill} {day}: {words} ({count} run{'s' if count != 1 else ''})",
                    # The runs of that drill on that day, listed by the view's own filters.
                    "href": {"drill": dag_id, "since": day.isoformat(), "until": day.isoformat()},
                }
            )
        rows.append({"drill": drill, "dag_id": dag_id, "cells": cells})
    return Heatmap(days=days, rows=rows, clipped=clipped)


@dataclass
class TimelineBars:
    """The run's transitions on one time axis: a bar per task, from its start to the event."""

    rows: list[dict[str, Any]]
    width: int = 720
    label_width: int = 190
    row: int = 20
    top: int = 22
    total_seconds: float = 0.0
    ticks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.top + max(len(self.rows), 1) * self.row + 6


def timeline_bars(events: Iterable[Mapping[str, Any]]) -> TimelineBars:
    """Bars for the detail page's timeline (events as the report keeps them)."""
    spans = []
    for event in events:
        end = parse_iso(event.get("at"))
        if end is None:
            continue
        start = parse_iso(event.get("started_at")) or end
        spans.append((start, end, event))
    bars = TimelineBars(rows=[])
    if not spans:
        return bars
    origin = min(s for s, _, _ in spans)
    total = max((e - origin).total_seconds() for _, e, _ in spans) or 1.0
    plot = bars.width - bars.label_width - 10
    bars.total_seconds = total
    for start, end, event in spans:
        x = bars.label_width + plot * (start - origin).total_seconds() / total
        w = max(plot * (end - start).total_seconds() / total, 2.0)
        label = " · ".join(p for p in (event.get("tier"), event.get("event")) if p)
        seconds = (end - start).total_seconds()
        bars.rows.append(
            {
                "label": label,
                "x": round(x, 1),
                "w": round(w, 1),
                "cls": f"ev-{event.get('event')}",
                "title": f"{label}: {seconds:.2f} s, done at {event.get('at')}",
            }
        )
    step = _nice_step(total, 5)
    bars.ticks = [
        {"x": round(bars.label_width + plot * (step * i) / total, 1), "label": f"{step * i:g} s"}
        for i in range(int(total // step) + 1)
    ]
    return bars
