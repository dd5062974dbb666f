"""Barman Cloud stores for tests, as a pytest plugin every tier can use (loaded by
tests/conftest.py): moto's S3 server on loopback, filled by real barman-cloud tools from a real
embedded PostgreSQL 18 (``drillkit.barman.scenario``). Session-scoped: built once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import objectstore
import pytest

BUCKET = "drills"


@pytest.fixture(scope="session")
def object_store(work_root: Path) -> Iterator:
    directory = work_root / "objectstore"
    directory.mkdir()
    store = objectstore.start_object_store(directory)
    # The standard credential chain: boto3 and the barman-cloud tools read these variables.
    saved = {k: os.environ.get(k) for k in objectstore.CREDENTIALS}
    os.environ.update(objectstore.CREDENTIALS)
    store.create_bucket(BUCKET)
    try:
        yield store
    finally:
        objectstore.stop_object_store(store)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _build(work_root: Path, store, name: str, **options) -> tuple[Path, dict, dict]:
    from drillkit.barman.scenario import BarmanScenarioOptions, create_barman_scenario

    directory = work_root / f"barman-{name}"
    opts = BarmanScenarioOptions(
        endpoint_url=store.url,
        destination=f"s3://{BUCKET}/{name}",
        server_name="orders-db",
        pause=0.2,
        drill_name=f"barman-{name}",
        **options,
    )
    truth = create_barman_scenario(directory, opts, say=lambda _m: None)
    catalog = {
        "kind": "barman_cloud",
        "destination": f"s3://{BUCKET}/{name}",
        "server_name": "orders-db",
        "endpoint_url": store.url,
    }
    return directory, truth, catalog


@pytest.fixture(scope="session")
def barman_clean(work_root: Path, object_store) -> tuple[Path, dict, dict]:
    """4 batches, backups after batches 0 and 2, gzip-compressed WAL."""
    return _build(work_root, object_store, "clean", batches=4, backups_after=(0, 2), initial_mb=2)


@pytest.fixture(scope="session")
def barman_damaged(work_root: Path, object_store) -> tuple[Path, dict, dict]:
    """Backups after batches 0, 2 and 3; the newest one's data archive corrupted, the WAL object
    holding batch 1 deleted, and an interrupted backup (status STARTED) left newest of all.
    Plain (uncompressed) WAL, so names without a compression suffix are read too."""
    return _build(
        work_root,
        object_store,
        "damaged",
        batches=5,
        backups_after=(0, 2, 3),
        initial_mb=4,
        wal_compression="none",
        corrupt_newest=True,
        remove_wal_after_batch=1,
        interrupted_backup=True,
    )
