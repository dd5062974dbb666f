"""The JSONPath subset HTTP checks assert on: ``$``, ``.key``, ``[index]``, ``["key"]``.

No network imports here: the drill spec is validated at DAG-parse time with this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from drillkit.exceptions import InvalidInputError

_JSON_STEP = re.compile(
    r"""\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\["([^"\\]*)"\]|\['([^'\\]*)'\]"""
)


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Parse the JSONPath subset ``$``, ``.key``, ``[index]``, ``["key"]`` into steps."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise InvalidInputError(f"{path!r} must start with $, e.g. $.data.items[0].id")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        match = _JSON_STEP.match(path, pos)
        if match is None:
            raise InvalidInputError(
                f'{path!r}: cannot read {path[pos:]!r}; use $, .key, [index] or ["key"]'
            )
        key, index, double, single = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(next(s for s in (key, double, single) if s is not None))
        pos = match.end()
    return tuple(steps)


def resolve_json_path(document: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at ``steps``; LookupError says where the path stopped matching."""
    value, where = document, "$"
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                raise LookupError(f"no item [{step}] at {where}")
            value, where = value[step], f"{where}[{step}]"
        else:
            if not isinstance(value, Mapping) or step not in value:
                raise LookupError(f"no key {step!r} at {where}")
            value, where = value[step], f"{where}.{step}"
    return value
