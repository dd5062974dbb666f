"""A local, decompressed copy of a store's ``wals/`` objects in drillkit's state directory.

Selection indexes WAL (commit times, continuity) from plain segment files, the same way for every
catalog kind; objects deleted from the store disappear from the copy, so their gaps show.
Only GET requests reach the store; nothing is ever written to it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

from drillkit.barman.store import Destination, ObjectStoreReader
from drillkit.exceptions import InvalidInputError
from drillkit.state import read_json, state_dir, write_json_atomic

# barman-cloud-wal-archive's compressions and the suffix each adds (barman/compression.py).
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".xz": lzma.decompress,
}
_NEEDS_PACKAGE = {".snappy": "python-snappy", ".lz4": "lz4", ".zst": "zstandard"}
_WAL_NAME = re.compile(
    r"^(?P<name>[0-9A-F]{24}(?:\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)"
    r"(?P<suffix>\.gz|\.bz2|\.xz|\.snappy|\.lz4|\.zst)?$"
)
_MANIFEST = ".objects.json"


def mirror_dir(endpoint_url: str | None, destination: Destination) -> Path:
    key = f"{endpoint_url or 'aws'}|{destination.url}|{destination.server_name}"
    return state_dir() / "barman-cloud" / hashlib.sha256(key.encode()).hexdigest()[:16] / "wal"


def sync_wal(
    reader: ObjectStoreReader,
    destination: Destination,
    target: Path,
    *,
    say: Callable[[str], None],
) -> dict[str, str]:
    """Make ``target`` hold exactly the store's WAL objects, decompressed; return
    ``{file name: object key}``. Unchanged objects (same ETag) are not fetched again."""
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o755)
    known: dict[str, dict[str, str]] = read_json(target / _MANIFEST) or {}
    listed: dict[str, tuple[str, str, str]] = {}  # file name -> (key, etag, suffix)
    prefix = destination.key("wals") + "/"
    for obj in reader.list(destination.bucket, prefix):
        match = _WAL_NAME.match(obj.key.rsplit("/", 1)[-1])
        if match is None:
            continue  # not something recovery asks for
        listed[match.group("name")] = (obj.key, obj.etag, match.group("suffix") or "")
    for name in sorted(set(known) - set(listed)):
        (target / name).unlink(missing_ok=True)
        known.pop(name)
    fetched = 0
    for name, (key, etag, suffix) in sorted(listed.items()):
        if known.get(name, {}).get("etag") == etag and (target / name).exists():
            continue
        if suffix in _NEEDS_PACKAGE:
            raise InvalidInputError(
                f"WAL object {key} is {suffix[1:]}-compressed, which drillkit cannot read without "
                f"the {_NEEDS_PACKAGE[suffix]} package: install it beside drillkit"
            )
        raw = reader.get(destination.bucket, key)
        try:
            data = _DECOMPRESS[suffix](raw)
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
            # Kept as the damaged bytes: the archive listing then names the segment's problem.
            data = raw[:1024]
        staging = target / f".{name}.tmp"
        staging.write_bytes(data)
        os.chmod(staging, 0o644)
        os.replace(staging, target / name)
        known[name] = {"etag": etag, "key": key}
        fetched += 1
    write_json_atomic(target / _MANIFEST, known)
    os.chmod(target / _MANIFEST, 0o644)
    if fetched:
        say(f"fetched {fetched} WAL objects from {destination.url} (of {len(listed)} listed)")
    return {name: key for name, (key, _etag, _suffix) in listed.items()}
