"""Barman's cloud tools (``barman-cloud-*``), run where the PostgreSQL OS user can run them too.

``archive_command`` and ``restore_command`` run as the PostgreSQL OS user: a tool whose interpreter
lives in a virtualenv under ``/root`` fails there with "Permission denied" (exit 126) and the server
waits forever. As ``pgbin.install_dir`` does for the PostgreSQL binaries, the tools are made
reachable once: launchers under ``/var/lib/drillkit`` that run a reachable interpreter of the same
Python version on a copy of exactly the installed distributions the tools import.
Credentials reach the tools through their environment only, never their command line.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from drillkit import pgbin
from drillkit.exceptions import InvalidInputError, SandboxError

BIN_ENV = "DRILLKIT_BARMAN_CLOUD_BIN"
_ROOT = Path("/var/lib/drillkit")
_TOOLS = (
    "barman-cloud-backup",
    "barman-cloud-backup-list",
    "barman-cloud-restore",
    "barman-cloud-wal-archive",
    "barman-cloud-wal-restore",
)
# What barman-cloud-* import at run time: barman, its requirements and the cloud extra (boto3).
_REQUIRED = ("barman", "psycopg2", "python-dateutil", "boto3")
# psycopg2-binary installs over psycopg2's files (same package): its bundled libs come along.
_OPTIONAL = ("psycopg2-binary",)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")
# Environment the tools may see: the AWS credential chain and nothing else of ours.
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
)


def _closure() -> list[md.Distribution]:
    """The installed distributions the tools need (barman's requirements, followed transitively,
    without optional extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(_REQUIRED)
    for name in _OPTIONAL:
        try:
            seen[name] = md.distribution(name)
        except md.PackageNotFoundError:
            continue
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise InvalidInputError(
                f"the Python package {name!r} is missing, so Barman's cloud tools cannot run: "
                "install drillkit with its dependencies (`make install`, or `pip install "
                "'barman[cloud]==3.19.1' boto3`)"
            ) from exc
        seen[key] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            match = _REQUIREMENT_NAME.match(requirement)
            if match:
                todo.append(match.group(1))
    return list(seen.values())


def _reachable_python(user: pgbin.OsUser) -> Path | None:
    """An interpreter of this Python's version the OS user can run: this one, else the system's."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.executable).resolve(), Path("/usr/bin") / version):
        if candidate.exists() and pgbin.traversable_by(candidate, user):
            mode = candidate.stat().st_mode
            if mode & 0o001:
                return candidate
    return None


def _write_launchers(lib: Path, bindir: Path, python: Path) -> None:
    scripts = {
        ep.name: ep.value
        for ep in md.distribution("barman").entry_points
        if ep.group == "console_scripts" and ep.name in _TOOLS
    }
    bindir.mkdir(parents=True, exist_ok=True)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        # -I: ignore PYTHONPATH, user site-packages and the working directory; only lib is added.
        (bindir / name).write_text(
            f"#!{python} -I\nimport sys\nsys.path.insert(0, {str(lib)!r})\n"
            f"from {module} import {func}\nsys.exit({func}())\n"
        )
        os.chmod(bindir / name, 0o755)


def _build_shared_copy(python: Path) -> Path:
    dists = _closure()
    fingerprint = hashlib.sha256(
        "\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)).encode()
        + str(python).encode()
    ).hexdigest()[:12]
    target = _ROOT / f"barman-cloud-{md.version('barman')}-{fingerprint}"
    if (target / "bin" / "barman-cloud-wal-restore").exists():
        return target / "bin"
    _ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(_ROOT, 0o755)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    lib = staging / "lib"
    for dist in dists:
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            parts = Path(str(file)).parts
            if not source.is_file() or ".." in parts or "__pycache__" in parts:
                continue  # console scripts (../../bin) and byte-code are not needed
            dest = lib / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    _write_launchers(target / "lib", staging / "bin", python)
    for root, _dirs, files in os.walk(staging):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)
    try:
        staging.rename(target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target / "bin"


@functools.cache
def bin_dir() -> Path:
    """The directory of ``barman-cloud-*`` launchers every user involved can run.

    ``DRILLKIT_BARMAN_CLOUD_BIN`` names an existing installation; otherwise the one installed with
    drillkit is used as is when the OS user can reach it, or copied once where it can.
    """
    explicit = os.environ.get(BIN_ENV)
    user = pgbin.os_user()
    if explicit:
        path = Path(explicit)
        if not (path / "barman-cloud-wal-restore").exists():
            raise InvalidInputError(
                f"{BIN_ENV}={explicit} holds no barman-cloud-wal-restore: point it at the bin "
                "directory of an installation of barman[cloud]"
            )
        if user is not None and not _runs_as(path / "barman-cloud-wal-restore", user):
            raise InvalidInputError(_unreachable(path, user))
        return path
    own = Path(sys.executable).parent
    runnable = user is None or _runs_as(own / "barman-cloud-wal-restore", user)
    if runnable and (own / "barman-cloud-wal-restore").exists():
        return own
    if user is None:
        raise InvalidInputError(
            "barman-cloud-wal-restore is not installed beside drillkit: install "
            f"'barman[cloud]==3.19.1' and boto3, or set {BIN_ENV} to its bin directory"
        )
    python = _reachable_python(user)
    if python is None:
        raise InvalidInputError(_unreachable(own, user))
    return _build_shared_copy(python)


def _runs_as(script: Path, user: pgbin.OsUser) -> bool:
    """True when ``user`` can execute ``script`` and the interpreter its first line names."""
    if not script.exists() or not pgbin.traversable_by(script, user):
        return False
    first = script.read_text(errors="replace").splitlines()[0] if script.stat().st_size else ""
    if not first.startswith("#!"):
        return True
    interpreter = Path(first[2:].split()[0])
    return interpreter.exists() and pgbin.traversable_by(interpreter.resolve(), user)


def _unreachable(where: Path, user: pgbin.OsUser) -> str:
    return (
        f"Barman's cloud tools in {where} cannot be run by the PostgreSQL OS user {user.name!r} "
        "(its interpreter or directory is under a private directory such as /root), and "
        "archive_command/restore_command run as that user. Install them where it can: "
        "`python3 -m venv /opt/barman-cloud && /opt/barman-cloud/bin/pip install "
        f"'barman[cloud]==3.19.1'`, then set {BIN_ENV}=/opt/barman-cloud/bin"
    )


def tool(name: str) -> Path:
    if name not in _TOOLS:
        raise InvalidInputError(f"{name} is not one of the barman-cloud tools drillkit runs")
    return bin_dir() / name


def tool_env(credentials: Mapping[str, str] | None) -> dict[str, str]:
    """The environment a tool runs with: a fixed minimal base plus the credential variables."""
    env = {"PATH": f"{pgbin.install_dir() / 'bin'}:/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
    env["HOME"] = "/tmp"
    for key, value in (credentials or {}).items():
        if key not in AWS_ENV:
            raise InvalidInputError(f"{key} is not an AWS credential variable drillkit passes on")
        env[key] = value
    return env


def run_tool(
    name: str,
    args: list[str],
    *,
    credentials: Mapping[str, str] | None,
    timeout: float = 3600.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a barman-cloud tool as the PostgreSQL OS user (files it writes are the server's)."""
    try:
        result = subprocess.run(
            [str(tool(name)), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(credentials),
            cwd="/",
            **pgbin.server_user_ids(),  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{name} did not finish within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise SandboxError(
            f"{name} failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}",
            code="BARMAN_CLOUD_TOOL_FAILED",
        )
    return result
