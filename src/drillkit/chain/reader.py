"""Field access for one spec file: every refusal is ``<file>: <field path>: <what to write>``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

from drillkit.exceptions import InvalidInputError
from drillkit.spec import SpecError
from drillkit.timeutil import parse_duration

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HOST_RE = re.compile(r"^[a-z0-9*]([-a-z0-9.]{0,251}[a-z0-9])?$")
HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$")


class Reader:
    """Field access for one spec file: every refusal is ``<file>: <field path>: <fix>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> SpecError:
        return SpecError(f"{self.source}: {path}: {problem}", path=path, source=self.source)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, got {type(value).__name__}")
        return value

    def unknown(self, data: Mapping[str, Any], allowed: set[str] | dict[str, str], path: str):
        extra = sorted(set(map(str, data)) - set(allowed))
        if extra:
            prefix = f"{path}." if path else ""
            raise self.fail(
                f"{prefix}{extra[0]}", f"unknown key; allowed here: {', '.join(sorted(allowed))}"
            )

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: Any, low: int, high):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"{path}.{key}", f"a whole number from {low} to {high}, got {value!r}")
        return value

    def seconds(
        self, data: Mapping[str, Any], key: str, path: str, default: Any, *, zero: bool = False
    ) -> float:
        where = f"{path}.{key}" if path else key
        try:
            value = parse_duration(data.get(key, default), field=where).total_seconds()
        except InvalidInputError as exc:
            raise self.fail(where, str(exc).split(": ", 1)[-1]) from exc
        if value <= 0 and not (zero and value == 0):
            raise self.fail(where, "must be longer than zero, e.g. 500ms or 3s")
        return value

    def percent(self, value: Any, path: str, *, allow_zero: bool) -> Fraction:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(path, f"a percentage from 0 to 100, got {value!r}")
        try:
            exact = Fraction(str(value))
        except (ValueError, ZeroDivisionError) as exc:
            raise self.fail(path, f"a percentage from 0 to 100, got {value!r}") from exc
        if exact > 100 or exact < 0 or (exact == 0 and not allow_zero):
            low = "0" if allow_zero else "more than 0"
            raise self.fail(path, f"a percentage from {low} to 100, got {value!r}")
        return exact

    def host(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not HOST_RE.match(value):
            raise self.fail(path, "a lower-case host name, e.g. checkout.shop.svc.cluster.local")
        return value

    def url(self, value: Any, path: str) -> str:
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(path, "an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise self.fail(path, "must not carry credentials; use a connection instead")
        return value.rstrip("/")
