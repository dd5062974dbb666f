"""PostgreSQL binaries of a given major (a restored data directory needs its own major's server).

A seam until per-major installations land in ``drillkit.pgbin`` (``pgbin.for_major``): every
caller goes through ``run``/``binary`` here, so switching is one place.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from drillkit import pgbin
from drillkit.exceptions import InvalidInputError, SandboxError

_DEBIAN_LAYOUT = "/usr/lib/postgresql/{major}/bin"


def bin_dir(major: int | None) -> Path:
    """``bin/`` of ``major`` (None: drillkit's default installation)."""
    if major is None:
        return pgbin.install_dir() / "bin"
    override = os.environ.get(f"DRILLKIT_PG{major}_BIN_DIR")
    candidate = Path(override) if override else Path(_DEBIAN_LAYOUT.format(major=major))
    if (candidate / "postgres").exists():
        return candidate
    default = pgbin.install_dir() / "bin"
    if _version_of(default) == major:
        return default
    raise InvalidInputError(
        f"no PostgreSQL {major} binaries: this backup needs its own major's server; install "
        f"postgresql-{major} (Debian: /usr/lib/postgresql/{major}/bin) or set "
        f"DRILLKIT_PG{major}_BIN_DIR"
    )


def _version_of(directory: Path) -> int | None:
    version_file = directory.parent / "share" / "postgresql.conf.sample"
    if not version_file.exists():
        return None
    result = subprocess.run(
        [str(directory / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    try:
        return int(result.stdout.split()[-1].split(".")[0])
    except (IndexError, ValueError):
        return None


def run(
    name: str,
    args: list[str],
    *,
    major: int | None,
    timeout: float | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``pgbin.run`` with ``major``'s binary, as the server's OS user."""
    if major is None:
        return pgbin.run(name, args, timeout=timeout, check=check, env=env)
    user = pgbin.os_user()
    full_env = {"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp", **(env or {})}
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    try:
        result = subprocess.run(
            [str(bin_dir(major) / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{name} did not finish within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise SandboxError(
            f"{name} {' '.join(args)} failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result
