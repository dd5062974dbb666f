"""Label and field selectors as the API server parses them (the subset clients send).

Labels: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``; fields:
``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` and ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_SET_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")
_FIELDS = ("metadata.name", "metadata.namespace")


class SelectorError(ValueError):
    pass


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def label_matcher(selector: str) -> Callable[[Mapping[str, str]], bool]:
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split(selector or ""):
        if match := _SET_RE.match(term):
            key, op, raw = match.groups()
            values = {v.strip() for v in raw.split(",") if v.strip()}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQ_RE.match(term):
            key, op, value = match.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _EXISTS_RE.match(term):
            negate, key = match.groups()
            if negate:
                tests.append(lambda labels, k=key: k not in labels)
            else:
                tests.append(lambda labels, k=key: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
    return lambda labels: all(test(labels) for test in tests)


def field_matcher(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in _split(selector or ""):
        match = _EQ_RE.match(term)
        if not match:
            raise SelectorError(f"invalid field selector: {term.strip()!r}")
        key, op, value = match.groups()
        if key not in _FIELDS:
            raise SelectorError(f'field label not supported: "{key}"')
        attribute = key.split(".", 1)[1]
        if op == "!=":
            tests.append(lambda meta, a=attribute, v=value: (meta.get(a) or "") != v)
        else:
            tests.append(lambda meta, a=attribute, v=value: (meta.get(a) or "") == v)
    return lambda meta: all(test(meta) for test in tests)
