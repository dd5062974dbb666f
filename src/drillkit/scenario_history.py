"""A scenario with history: a production whose commits and backups span the past days.

``drillkit scenario create DIR --history 3d``: the production PostgreSQL runs under libfaketime
(Debian's ``libfaketime``) and its clock jumps after each batch, so commit timestamps, backup
stop times and WAL are genuine PostgreSQL output on past days: a batch at 04:00 of the first day,
then every day a backup and a batch at 05:00 and a batch at 07:00. Each day's 06:00 lies between
two commits: a daily drill (``schedule: 0 6 * * *``, ``target: logical_date``) backfilled over
those days restores to a distinct, provable target each day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drillkit.exceptions import InvalidInputError
from drillkit.scenario import ScenarioOptions, create_scenario
from drillkit.state import write_json_atomic
from drillkit.timeutil import isoformat

Say = Callable[[str], None]
MAX_HISTORY_DAYS = 14
DAILY_AT = timedelta(hours=6)
FAKETIME_MISSING = (
    "--history moves the production server's clock with libfaketime, which is not installed: "
    "`apt-get install -y libfaketime` (`make test` installs it)"
)


def libfaketime() -> Path | None:
    """Debian's libfaketime, wherever the architecture puts it."""
    return next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)


def history_days(days: int, *, today: datetime | None = None) -> list[datetime]:
    """Midnight (UTC) of each of the ``days`` days before ``today``, oldest first."""
    if not 1 <= days <= MAX_HISTORY_DAYS:
        raise InvalidInputError(
            f"--history covers 1 to {MAX_HISTORY_DAYS} days, not {days}: e.g. --history 3d"
        )
    midnight = (today or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    return [midnight - timedelta(days=days - i) for i in range(days)]


def create_history_scenario(
    directory: Path, days: int, options: ScenarioOptions, *, say: Say = print
) -> dict[str, Any]:
    """Build the scenario with ``days`` days of history; the truth gains ``history`` (the days,
    each day's 06:00 target and the backfill command) and drill.yaml a daily schedule."""
    library = libfaketime()
    if library is None:
        raise InvalidInputError(FAKETIME_MISSING)
    moments = history_days(days)
    directory = directory.expanduser().absolute()
    # Beside the scenario (which must start empty), readable by the PostgreSQL OS user.
    clock = directory.parent / f".{directory.name}.clock"

    def set_clock(moment: datetime) -> None:
        offset = int((moment - datetime.now(UTC)).total_seconds())
        clock.write_text(f"{offset:+d}\n")
        clock.chmod(0o644)

    jumps = [d + timedelta(hours=h) for d in moments for h in (5, 7)]
    moved: list[int] = []

    def after_batch(batch: int) -> None:
        # Each batch's commit is done: move the clock to the next batch's (and backup's) time.
        if batch < len(jumps):
            set_clock(jumps[batch])
            moved.append(batch)

    set_clock(moments[0] + timedelta(hours=4))
    try:
        truth = create_scenario(
            directory,
            ScenarioOptions(
                **{
                    **options.__dict__,
                    "batches": 2 * days + 1,
                    "backups_after": tuple(range(0, 2 * days, 2)),
                    "pause": min(options.pause, 0.05),
                    "server_env": {
                        "LD_PRELOAD": str(library),
                        "FAKETIME_TIMESTAMP_FILE": str(clock),
                        "FAKETIME_NO_CACHE": "1",
                        "DONT_FAKE_MONOTONIC": "1",  # timeouts and latches keep real time
                    },
                    "after_batch": after_batch,
                }
            ),
            say=say,
        )
    finally:
        clock.unlink(missing_ok=True)
    if moved != list(range(len(jumps))):
        raise InvalidInputError("the production clock did not move after every batch")
    targets = [isoformat(d + DAILY_AT) for d in moments]
    first, last = moments[0].date().isoformat(), moments[-1].date().isoformat()
    spec_path = directory / "drill.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    dag_id = f"drill_{spec['drill'].replace('-', '_')}"
    backfill = (
        f"airflow backfill create --dag-id {dag_id} --from-date {first} "
        f"--to-date {last}T23:59:59+00:00"
    )
    spec.update(
        description=f"{spec['description']}, with {days} days of history ({first} to {last})",
        schedule="0 6 * * *",
        target="logical_date",
        # Only backfills run it (a backfill is not limited by start_date): no scheduled run of
        # today, whose 06:00 lies after this production's last commit.
        start_date="2100-01-01T00:00:00Z",
        paused=False,
    )
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    truth["history"] = {"days": [first, last], "targets": targets, "backfill": backfill}
    write_json_atomic(directory / "truth.json", truth)
    say(f"history: {days} days, daily targets {', '.join(targets)}; backfill with: {backfill}")
    return truth
