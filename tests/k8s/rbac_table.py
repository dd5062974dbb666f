"""The README's RBAC table, read as rules the emulator enforces for drillkit's own requests.

Each row is ``| API groups | resources | verbs |``; ``;`` pairs resource lists with verb lists
(``clusters; backups | get, create; list``). Verbs in parentheses are conditional grants and
count. Namespace scoping written in the table (``source namespace``) is not enforced: a
ClusterRole grants a verb in every namespace, which is what the README asks for.
"""

from __future__ import annotations

import re
from pathlib import Path

VERBS = ("get", "list", "watch", "create", "patch", "update", "delete", "deletecollection")
Rule = tuple[str, str, str]  # (api group, resource, verb)


def _cell_names(cell: str) -> list[str]:
    return [n.strip().strip("`").strip('"') for n in re.sub(r"\(.*?\)", "", cell).split(",")]


def _verbs(cell: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", cell) if w in VERBS}


def readme_rules(readme: Path) -> frozenset[Rule]:
    text = readme.read_text()
    start = text.index("| API group | resources | verbs |")
    rules: set[Rule] = set()
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        groups_cell, resources_cell, verbs_cell = [c.strip() for c in line.strip("|").split("|")]
        groups = [g.replace('""', "") for g in _cell_names(groups_cell)]
        groups = ["" if g in ('""', "") else g for g in groups]
        resource_parts = resources_cell.split(";")
        verb_parts = verbs_cell.split(";")
        if len(resource_parts) != len(verb_parts):
            verb_parts = [verbs_cell] * len(resource_parts)
        for resources, verbs in zip(resource_parts, verb_parts, strict=True):
            for group in groups:
                for resource in _cell_names(resources):
                    for verb in _verbs(verbs):
                        rules.add((group, resource, verb))
    return frozenset(rules)
