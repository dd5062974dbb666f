"""Where drillkit keeps its own state: caches and the default sandbox root.

Never inside a backup repository: a drill does not write into what it drills.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def state_path() -> Path:
    """``DRILLKIT_STATE_DIR``, else ``$XDG_STATE_HOME/drillkit``, else ``~/.local/state/...``."""
    explicit = os.environ.get("DRILLKIT_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "drillkit"


def state_dir() -> Path:
    """``state_path()``, created."""
    path = state_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sandbox_root_path() -> Path:
    """``DRILLKIT_SANDBOX_ROOT``, else ``<tmp>/drillkit-sandboxes`` (short, so socket paths fit)."""
    explicit = os.environ.get("DRILLKIT_SANDBOX_ROOT")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "drillkit-sandboxes"


def sandbox_root() -> Path:
    """``sandbox_root_path()``, created."""
    path = sandbox_root_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
