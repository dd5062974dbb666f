"""Outputs never land under a catalog path: a drill does not write into what it drills.

Every place drillkit writes (the report directory, ``drillkit run --json/--junit``, the state
directory, the sandbox root) is compared with every local path of the spec's catalog, as real
paths (links resolved, also for a path that does not exist yet); one inside is refused with an
InvalidInputError that names the setting to change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from drillkit.exceptions import InvalidInputError
from drillkit.state import sandbox_root_path, state_path


def real_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with every link resolved, even where its tail does not exist yet."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def catalog_paths(catalog: Mapping[str, Any] | None) -> list[Path]:
    """The local paths a catalog block names (``path``, ``*_path``, ``repo*``); URLs are not."""
    found: list[Path] = []
    for key, value in (catalog or {}).items():
        named = key == "path" or key.endswith("_path") or key.startswith("repo")
        if named and isinstance(value, str) and value and "://" not in value:
            found.append(real_path(value))
    return found


def refuse_inside(
    path: str | os.PathLike[str] | None, *, setting: str, catalogs: Iterable[Path]
) -> None:
    """Raise InvalidInputError when ``path`` is (or is under) one of ``catalogs``."""
    if path is None or (isinstance(path, str) and (not path or "://" in path)):
        return
    real = real_path(path)
    for catalog in catalogs:
        catalog = real_path(catalog)
        if real == catalog or real.is_relative_to(catalog):
            raise InvalidInputError(
                f"{setting} ({path}, really {real}) is inside the backup repository {catalog}: "
                f"a drill never writes into what it drills. Change {setting} to a directory "
                "outside the repository",
                setting=setting,
            )


def check_outputs(
    catalog: Mapping[str, Any] | None,
    *,
    report_path: str | None = None,
    json_out: str | os.PathLike[str] | None = None,
    junit_out: str | os.PathLike[str] | None = None,
    sandbox_root: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse every output of a drill that would land under the catalog's paths.

    The state directory and the default sandbox root come from the environment
    (DRILLKIT_STATE_DIR, DRILLKIT_SANDBOX_ROOT) and are always compared.
    """
    catalogs = catalog_paths(catalog)
    if not catalogs:
        return
    refuse_inside(report_path, setting="report.path", catalogs=catalogs)
    refuse_inside(json_out, setting="drillkit run --json", catalogs=catalogs)
    refuse_inside(junit_out, setting="drillkit run --junit", catalogs=catalogs)
    check_state(catalogs)
    refuse_inside(
        sandbox_root or sandbox_root_path(),
        setting="DRILLKIT_SANDBOX_ROOT (the sandbox root)",
        catalogs=catalogs,
    )


def check_state(catalogs: Iterable[Path]) -> None:
    """Refuse a state directory (caches, run homes) under a catalog path."""
    refuse_inside(
        state_path(), setting="DRILLKIT_STATE_DIR (drillkit's state directory)", catalogs=catalogs
    )
