"""Catalog ``kind: pgbackrest`` (module registered in ``drillkit.catalog.registry``)."""

from drillkit.catalog.pgbackrest.repository import PgBackRestCatalog, from_config

__all__ = ["PgBackRestCatalog", "from_config"]
