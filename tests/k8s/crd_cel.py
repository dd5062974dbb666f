"""CEL validation rules of CRD schemas (``x-kubernetes-validations``), evaluated with cel-python.

As kube-apiserver does (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
custom-resource-definitions/#validation-rules): each rule is evaluated with ``self`` bound to the
value at its schema node, after defaulting; a rule that reads ``oldSelf`` is a transition rule,
evaluated only on update and only where the old object has the node; a false result (or an
evaluation error) rejects the object with 422, the rule's ``message`` (else "failed rule: <rule>")
naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import celpy
from crd_schema import Cause

Rule = tuple[tuple[str, ...], str, str]  # (path, with "[]" for items/values; rule; message)


def collect(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[Rule]:
    rules: list[Rule] = [
        (path, r["rule"], r.get("message") or f"failed rule: {r['rule']}")
        for r in schema.get("x-kubernetes-validations") or []
    ]
    for key, sub in (schema.get("properties") or {}).items():
        rules += collect(sub, (*path, key))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            rules += collect(schema[key], (*path, "[]"))
    return rules


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _nodes(value: Any, path: tuple[str, ...], where: str = "") -> Iterator[tuple[str, Any]]:
    if not path:
        yield where or "<root>", value
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        items = value.items() if isinstance(value, dict) else enumerate(value or [])
        for index, item in items:
            yield from _nodes(item, rest, f"{where}[{index}]")
    elif isinstance(value, dict) and head in value:
        yield from _nodes(value[head], rest, f"{where}.{head}" if where else head)


def _lookup(value: Any, where: str) -> tuple[bool, Any]:
    """The value at a concrete path (``spec.a[0].b``) in ``value``."""
    import re

    node = value
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", where):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return False, None
            node = node[index]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def violations(rules: list[Rule], obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    for path, rule, message in rules:
        transition = "oldSelf" in rule
        if transition and old is None:
            continue
        for where, value in _nodes(obj, path):
            activation = {"self": celpy.json_to_cel(value)}
            if transition:
                found, previous = _lookup(old, where)
                if not found:
                    continue
                activation["oldSelf"] = celpy.json_to_cel(previous)
            try:
                ok = bool(_program(rule).evaluate(activation))
            except celpy.CELEvalError as exc:
                ok, message = False, f"{message} (evaluation error: {exc})"
            if not ok:
                causes.append(
                    Cause(where, "FieldValueInvalid", f"{where}: Invalid value: {message}")
                )
    return causes
