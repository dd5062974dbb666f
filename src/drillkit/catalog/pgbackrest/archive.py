"""A plain-segment view of a pgBackRest WAL archive, so continuity is planned like any other.

pgBackRest keeps WAL as ``archive/<stanza>/<db-version>-<db-id>/<first 16 hex of the segment>/
<segment>-<sha1>[.gz|.lz4|.zst|.bz2]`` plus ``<tli>.history`` and ``<segment>.<offset>.backup``
files (repository layout as listed by ``repo-ls``, https://pgbackrest.org/command.html#command-repo-ls;
``archive-get`` finds a segment by that ``<segment>-<sha1>`` prefix and decompresses it,
https://pgbackrest.org/command.html#command-archive-get). The view holds each listed segment
fetched once with ``archive-get`` (keyed by the repository file name, which carries its SHA-1)
and nothing the repository no longer holds, so a removed segment is a gap here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from drillkit.catalog.pgbackrest import command
from drillkit.catalog.pgbackrest.command import PgBackRestConfig
from drillkit.exceptions import InvalidInputError
from drillkit.state import read_json, write_json_atomic

_SEGMENT_FILE_RE = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.(gz|lz4|zst|bz2))?$")
_HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
_DIR_RE = re.compile(r"^[0-9A-F]{16}$")
_INDEX = ".view.json"


def _ls(config: PgBackRestConfig, path: str, workdir: Path, *, recurse: bool) -> dict[str, dict]:
    args = [path, "--output=json", *(["--recurse"] if recurse else [])]
    result = command.run(config, "repo-ls", args, workdir=workdir)
    if result.returncode != 0:
        raise InvalidInputError(command.failure(result, f"pgbackrest repo-ls {path}"))
    listing: dict[str, dict] = json.loads(result.stdout or "{}")
    return listing


def list_repository_archive(
    config: PgBackRestConfig, archive_id: str, workdir: Path
) -> dict[str, str]:
    """``plain name -> repository file name`` for every segment and timeline history file
    (backup history files are not needed: info gives each backup's start and stop)."""
    listing = _ls(config, f"archive/{config.stanza}/{archive_id}", workdir, recurse=True)
    found: dict[str, str] = {}
    for name, entry in listing.items():
        if entry.get("type") != "file":
            continue
        parent, _, base = name.rpartition("/")
        if parent and not _DIR_RE.match(parent):
            continue
        match = _SEGMENT_FILE_RE.match(base)
        if match and parent == match.group(1)[:16]:
            found[match.group(1)] = name
        elif _HISTORY_RE.match(base) and not parent:
            found[base] = name
    return found


def sync_view(
    config: PgBackRestConfig,
    archive_id: str,
    view: Path,
    workdir: Path,
    *,
    say: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Make ``view`` hold exactly the repository's WAL, as plain files; return the listing."""
    wanted = list_repository_archive(config, archive_id, workdir)
    view.mkdir(parents=True, exist_ok=True)
    index: dict[str, str] = read_json(view / _INDEX) or {}
    for name in list(index):
        if wanted.get(name) != index[name] or not (view / name).exists():
            (view / name).unlink(missing_ok=True)
            del index[name]
    for entry in view.iterdir():
        if entry.name != _INDEX and entry.name not in index:
            entry.unlink()
    fetch = sorted(name for name in wanted if name not in index)
    incoming = workdir / "incoming"
    incoming.mkdir(exist_ok=True)
    from drillkit import pgbin

    pgbin.give_to_server_user(incoming)
    for name in fetch:
        target = incoming / name
        result = command.run(config, "archive-get", [name, str(target)], workdir=workdir)
        if result.returncode != 0 or not target.exists():
            # Listed but not fetchable: leave it out, so continuity names it as a gap.
            if say:
                say(f"pgbackrest archive-get {name} failed: {command.failure(result, 'it')}")
            continue
        shutil.move(str(target), view / name)
        os.chmod(view / name, 0o644)
        index[name] = wanted[name]
        if say and len(index) % 16 == 0:
            say(f"fetched {len(index)} of {len(wanted)} archived WAL files")
    write_json_atomic(view / _INDEX, index)
    return wanted
