"""Running pgBackRest as the PostgreSQL OS user, read-only, with private lock/log/spool paths.

Only commands that read the repository run: ``info``, ``verify``, ``repo-ls``, ``restore`` and
``archive-get`` (https://pgbackrest.org/command.html); never anything that writes into it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit import pgbin
from drillkit.catalog.credentials import current_environment
from drillkit.exceptions import InvalidInputError, SandboxError

READ_ONLY = frozenset(
    {"info", "verify", "repo-ls", "repo-get", "restore", "archive-get", "version"}
)
_STANZA_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:@=+,-]*$")
# drillkit decides these per command (paths inside the sandbox, the backup, the recovery type).
_OWNED = frozenset(
    {
        "stanza", "config", "repo", "pg1-path", "set", "type", "target", "target-action",
        "target-exclusive", "target-timeline", "lock-path", "log-path", "spool-path",
        "archive-mode", "delta", "force", "recovery-option", "tablespace-map",
        "tablespace-map-all", "link-all", "link-map", "log-level-console", "log-level-file",
        "log-level-stderr", "output", "cmd", "exec-id",
    }
)  # fmt: skip
# Which private paths each command accepts (pgbackrest help <command> <option>, 2.45).
_PATHS = {"info": ("lock",), "restore": ("lock", "spool"), "archive-get": ("lock",)}
_PATHS["repo-get"] = ()
_SECRET_WORDS = ("key", "pass", "secret", "token")
BINARY = "pgbackrest"


@dataclass(frozen=True)
class PgBackRestConfig:
    """``catalog: {kind: pgbackrest, stanza, config?, repo?, options?, pgbackrest_conn_id?}``."""

    stanza: str
    config: str | None = None
    repo: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    conn_id: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PgBackRestConfig:
        stanza = raw.get("stanza")
        if not isinstance(stanza, str) or not _STANZA_RE.match(stanza):
            raise InvalidInputError(
                f"catalog.stanza {stanza!r} is not a pgBackRest stanza name: set the stanza your "
                "backups were taken with (letters, digits, _ . -)"
            )
        config = raw.get("config")
        if config is not None and (not isinstance(config, str) or not config.startswith("/")):
            raise InvalidInputError(
                f"catalog.config {config!r} must be an absolute path to a pgbackrest.conf"
            )
        repo = raw.get("repo")
        if repo is not None and (not isinstance(repo, int) or not 1 <= repo <= 256):
            raise InvalidInputError(f"catalog.repo {repo!r} must be a repository index 1-256")
        options = raw.get("options") or {}
        if not isinstance(options, Mapping):
            raise InvalidInputError("catalog.options must be a mapping of pgBackRest options")
        clean: dict[str, str] = {}
        for name, value in options.items():
            name = str(name)
            if not _OPTION_RE.match(name):
                raise InvalidInputError(f"catalog.options: {name!r} is not a pgBackRest option")
            bare = re.sub(r"^(repo|pg)\d+-", "", name)
            if name in _OWNED or re.match(r"^pg\d+-path$", name):
                raise InvalidInputError(
                    f"catalog.options.{name} is set by drillkit (paths inside the sandbox, the "
                    "chosen backup, the recovery target): remove it"
                )
            if any(word in bare.split("-") for word in _SECRET_WORDS) and not bare.endswith(
                ("key-type", "-file")
            ):
                raise InvalidInputError(
                    f"catalog.options.{name} is a credential: it would show in the process list; "
                    "put it in the Airflow connection named by pgbackrest_conn_id"
                )
            text = {True: "y", False: "n"}.get(value, value) if isinstance(value, bool) else value
            text = str(text)
            if not _SAFE_VALUE_RE.match(text):
                raise InvalidInputError(
                    f"catalog.options.{name} value {text!r} has characters drillkit does not pass "
                    "to a shell command (quotes, spaces, $, ;): set it in pgbackrest.conf instead"
                )
            clean[name] = text
        conn_id = raw.get("pgbackrest_conn_id")
        if conn_id is not None and not isinstance(conn_id, str):
            raise InvalidInputError("catalog.pgbackrest_conn_id must be a connection id")
        if config is not None and not _SAFE_VALUE_RE.match(config):
            raise InvalidInputError(f"catalog.config {config!r} has characters drillkit refuses")
        return cls(stanza=stanza, config=config, repo=repo, options=clean, conn_id=conn_id)

    def descriptor(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "pgbackrest", "stanza": self.stanza}
        if self.config:
            out["config"] = self.config
        if self.repo:
            out["repo"] = self.repo
        if self.options:
            out["options"] = dict(self.options)
        if self.conn_id:
            out["pgbackrest_conn_id"] = self.conn_id
        return out

    def base_args(self, workdir: Path, command: str) -> list[str]:
        """Options every command gets: the repository, and private paths under ``workdir``
        (the defaults under /var are shared and not writable by the server's user)."""
        args = [f"--stanza={self.stanza}"]
        if self.config:
            args.append(f"--config={self.config}")
        if self.repo:
            args.append(f"--repo={self.repo}")
        args += [f"--{name}={value}" for name, value in self.options.items()]
        paths = {"lock": f"--lock-path={workdir}/lock", "spool": f"--spool-path={workdir}/spool"}
        args += [paths[p] for p in _PATHS.get(command, ())]
        args += [f"--log-path={workdir}/log", "--log-level-file=off"]
        return args


def binary() -> str:
    found = shutil.which(BINARY, path="/usr/bin:/bin:/usr/local/bin")
    if found is None:
        raise InvalidInputError(
            "pgbackrest is not installed here: install it (Debian: apt-get install pgbackrest) "
            "to drill a pgBackRest repository"
        )
    return found


def server_environment() -> dict[str, str]:
    """Credentials for pgBackRest: the operator's connection, else PGBACKREST_* of this
    process (pgBackRest's own way of configuring options from the environment)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PGBACKREST_")}
    env.update(current_environment())
    return env


@contextmanager
def private_workdir() -> Iterator[Path]:
    """A directory the server's user owns for one command's lock/log/spool files."""
    path = Path(tempfile.mkdtemp(prefix="drillkit-pgbr-"))
    try:
        os.chmod(path, 0o711)
        pgbin.give_to_server_user(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(
    config: PgBackRestConfig,
    command: str,
    args: list[str],
    *,
    workdir: Path,
    timeout: float = 3600.0,
    console: str = "warn",
    raw: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """Run one read-only pgBackRest command as the server's OS user; no check of its code."""
    if command not in READ_ONLY:
        raise SandboxError(f"drillkit never runs `pgbackrest {command}` (it could write)")
    argv = [
        binary(),
        *config.base_args(workdir, command),
        f"--log-level-console={console}",
        command,
    ]
    argv += args
    env = {**pgbin.server_env(), **server_environment()}
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=not raw,
            timeout=timeout,
            env=env,
            cwd="/",
            **pgbin.server_user_ids(),  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"pgbackrest {command} did not finish within {timeout:.0f} s") from exc


def failure(result: subprocess.CompletedProcess[Any], what: str) -> str:
    """One sentence for a failed command (its own error lines; never the environment)."""
    text = result.stderr or result.stdout or ""
    text = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).strip()
    lines = [line.strip() for line in text.splitlines() if "ERROR" in line or "HINT" in line]
    return f"{what} failed (exit code {result.returncode}): {' '.join(lines or [text])[-800:]}"
