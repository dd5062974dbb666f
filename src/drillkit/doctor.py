"""``drillkit doctor``: what this worker can drill, and what it lacks, before a drill finds out.

Exit 0 when at least one PostgreSQL major is usable: an Airflow worker's health check.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from drillkit.exceptions import DrillError
from drillkit.pgbin import Installation, PgSettings, os_user, traversable_by
from drillkit.pgmajors import CORE_TOOLS, DRILLED_MAJORS, installed, packages

# What a drill needs beyond the core tools: the amcheck extension for the integrity check.
_EXTENSIONS = ("amcheck",)


def share_dir(installation: Installation) -> Path:
    """Where its extensions live: ``pg_config --sharedir``, else ``bin/../share``."""
    pg_config = installation.binary("pg_config")
    if installation.has("pg_config"):
        try:
            result = subprocess.run(
                [str(pg_config), "--sharedir"], capture_output=True, text=True, timeout=10
            )
            if result.returncode == 0 and result.stdout.strip():
                return Path(result.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    return installation.bindir.parent / "share"


def _major_row(major: int, found: object) -> dict[str, Any]:
    if not isinstance(found, Installation):
        code = found.code if isinstance(found, DrillError) else "PG_BINARIES_MISSING"
        return {
            "major": major,
            "usable": False,
            "code": code,
            "problem": str(found),
            "install": packages(major),
        }
    user = os_user()
    missing = [t for t in CORE_TOOLS if not found.has(t)]
    extensions = share_dir(found) / "extension"
    missing += [f"extension {e}" for e in _EXTENSIONS if not (extensions / f"{e}.control").exists()]
    reachable = user is None or traversable_by(found.binary("postgres"), user)
    return {
        **found.describe(),
        "usable": not missing and reachable,
        "missing": missing,
        "reachable_by_os_user": reachable,
    }


def diagnose(
    settings: PgSettings | None = None, *, majors: tuple[int, ...] = DRILLED_MAJORS
) -> dict[str, Any]:
    """Majors found (where, version, tools missing), the OS user PostgreSQL runs as, and the
    free space under the sandbox root."""
    from drillkit.state import sandbox_root

    settings = settings or PgSettings()
    rows = [_major_row(major, found) for major, found in installed(settings, majors).items()]
    user = os_user()
    root = sandbox_root()
    usage = shutil.disk_usage(root)
    return {
        "schema": "drillkit.doctor/v1",
        "majors": rows,
        "usable_majors": [r["major"] for r in rows if r["usable"]],
        "os_user": {
            "name": user.name if user else None,
            "note": "drillkit runs PostgreSQL as this user (it runs as root)"
            if user
            else "drillkit is not root: PostgreSQL runs as the current user",
            "reaches_sandbox_root": user is None or traversable_by(root, user),
        },
        "sandbox_root": {
            "path": str(root),
            "free_bytes": usage.free,
            "total_bytes": usage.total,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = ["PostgreSQL majors this worker can drill:"]
    for row in result["majors"]:
        if row["usable"]:
            where = f"{row['bindir']} ({row['source']})"
            lines.append(f"  {row['major']:>2}  ok       {row['version']:<8} {where}")
        elif "bindir" in row:
            why = ", ".join(row["missing"]) or "not reachable by the PostgreSQL OS user"
            lines.append(
                f"  {row['major']:>2}  partial  {row['version']:<8} {row['bindir']}: {why}"
            )
        else:
            lines.append(f"  {row['major']:>2}  missing  install {row['install']}")
    user = result["os_user"]
    lines.append(f"PostgreSQL OS user: {user['name'] or '(current user)'}: {user['note']}")
    root = result["sandbox_root"]
    reach = "reachable" if user["reaches_sandbox_root"] else "NOT reachable by that user"
    lines.append(
        f"sandbox root: {root['path']} ({reach}), {root['free_bytes'] / 2**30:.1f} GiB free of "
        f"{root['total_bytes'] / 2**30:.1f} GiB"
    )
    usable = result["usable_majors"]
    lines.append(
        f"can drill PostgreSQL {', '.join(map(str, usable))}"
        if usable
        else "can drill no PostgreSQL major: install one (see above) or set postgres_bin_dirs"
    )
    return "\n".join(lines)
