"""Repository credentials for the catalog tools, kept out of argv, logs and XCom.

An operator resolves the catalog's connection (``pgbackrest_conn_id``) and runs the core inside
``catalog_environment(env)``; the tool runner adds ``current_environment()`` to its child's
environment only. The core never imports airflow: the connection arrives as plain fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from drillkit.exceptions import InvalidInputError

_ENV: ContextVar[dict[str, str] | None] = ContextVar("drillkit_catalog_env", default=None)
_OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENV_RE = re.compile(r"^PGBACKREST_[A-Z0-9_]+$")


@contextmanager
def catalog_environment(env: Mapping[str, str]) -> Iterator[None]:
    token = _ENV.set(dict(env))
    try:
        yield
    finally:
        _ENV.reset(token)


def current_environment() -> dict[str, str]:
    return dict(_ENV.get() or {})


def option_env_name(option: str) -> str:
    """pgBackRest reads any option from ``PGBACKREST_<OPTION>`` (upper case, - as _):
    https://pgbackrest.org/command.html (Introduction)."""
    return "PGBACKREST_" + option.upper().replace("-", "_")


def pgbackrest_environment(
    *, login: str | None, password: str | None, extra: Mapping[str, Any], repo: int
) -> dict[str, str]:
    """The environment a pgBackRest connection gives: login/password are the S3 key and secret
    of repository ``repo`` unless ``extra`` names other options; every ``extra`` key that is a
    pgBackRest option (``repo1-azure-key``) or variable (``PGBACKREST_REPO1_GCS_KEY``) passes."""
    env: dict[str, str] = {}
    login_option = str(extra.get("login_option") or f"repo{repo}-s3-key")
    password_option = str(extra.get("password_option") or f"repo{repo}-s3-key-secret")
    for option in (login_option, password_option):
        if not _OPTION_RE.match(option):
            raise InvalidInputError(
                f"connection extra names pgBackRest option {option!r}; use an option name like "
                "repo1-s3-key"
            )
    if login:
        env[option_env_name(login_option)] = login
    if password:
        env[option_env_name(password_option)] = password
    for key, value in extra.items():
        if key in ("login_option", "password_option") or value is None:
            continue
        if _ENV_RE.match(key):
            env[key] = str(value)
        elif _OPTION_RE.match(key):
            env[option_env_name(key)] = str(value)
        else:
            raise InvalidInputError(
                f"connection extra key {key!r} is neither a pgBackRest option (repo1-s3-region) "
                "nor a PGBACKREST_* variable"
            )
    return env
