"""Backup catalogs: list backups, verify them, and plan WAL continuity for a restore."""

from drillkit.catalog.local import LocalCatalog
from drillkit.catalog.model import BackupInfo, CatalogSnapshot, Verification

__all__ = ["BackupInfo", "CatalogSnapshot", "LocalCatalog", "Verification"]
