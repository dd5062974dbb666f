"""Catalog kinds: ``kind -> module``. A module exposes ``from_config(config, *, postgres)``.

Adding a kind is one module plus one line here (or ``register`` from a plugin); the drill flow
never branches on the kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from drillkit.catalog.protocol import BackupRepository, Catalog
from drillkit.exceptions import InvalidInputError
from drillkit.pgbin import PgSettings

KINDS: dict[str, str] = {
    "local": "drillkit.catalog.local",
    "pgbackrest": "drillkit.catalog.pgbackrest",
    "cnpg": "drillkit.k8s.catalog",
    "barman_cloud": "drillkit.barman.catalog",
    "cnpg_store": "drillkit.k8s.local_store",
}


def register(kind: str, module: str) -> None:
    """Make catalog ``kind`` available; ``module`` is imported when a catalog is opened."""
    KINDS[kind] = module


def open_catalog(config: Mapping[str, Any], *, postgres: PgSettings | None = None) -> Catalog:
    """The catalog a spec's (or a coordinate's) ``catalog`` mapping describes; no I/O.
    ``postgres``: where each PostgreSQL major's binaries are (``postgres_bin_dirs``)."""
    kind = str(config.get("kind") or "local")
    module_name = KINDS.get(kind)
    if module_name is None:
        raise InvalidInputError(
            f"catalog kind {kind!r} is not supported; use one of {', '.join(sorted(KINDS))}"
        )
    module = importlib.import_module(module_name)
    catalog: Catalog = module.from_config(config, postgres=postgres)
    return catalog


def for_sandbox(config: Mapping[str, Any], sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """The catalog config a tier with ``sandbox`` selects with: a kind's module may adapt it
    (``for_sandbox(config, sandbox)``; cnpg: a local tier restores the Backup's store itself)."""
    module_name = KINDS.get(str(config.get("kind") or "local"))
    adapt = (
        getattr(importlib.import_module(module_name), "for_sandbox", None) if module_name else None
    )
    return dict(adapt(config, sandbox)) if adapt else dict(config)


def open_repository(
    config: Mapping[str, Any], *, postgres: PgSettings | None = None
) -> BackupRepository:
    """A catalog whose backups restore into a local sandbox, or a clear refusal."""
    catalog = open_catalog(config, postgres=postgres)
    if not isinstance(catalog, BackupRepository):
        raise InvalidInputError(
            f"catalog kind {catalog.kind!r} restores through its own platform, not into a local "
            "sandbox: pair it with its sandbox kind (cnpg: kind kubernetes)"
        )
    return catalog
