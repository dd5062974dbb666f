"""A plain-segment view of a pgBackRest WAL archive, so continuity is planned like any other.

pgBackRest keeps WAL as ``archive/<stanza>/<db-version>-<db-id>/<first 16 hex of the segment>/
<segment>-<sha1>[.gz|.lz4|.zst|.bz2]`` plus ``<tli>.history`` and ``<segment>.<offset>.backup``
files (the layout ``repo-ls`` lists: https://pgbackrest.org/command.html#command-repo-ls;
recovery's ``archive-get`` finds a segment by its ``<segment>-<sha1>`` prefix). The view holds
each listed segment once, keyed by its repository file name (which carries its SHA-1), and
nothing the repository no longer holds, so a removed segment is a gap here too.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import zlib
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


def _decompress(data: bytes, name: str) -> bytes:
    """A repository file's content: pgBackRest compresses with gz, bz2, lz4 or zst."""
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    for ext, tool in ((".lz4", "lz4"), (".zst", "zstd")):
        if name.endswith(ext):
            found = shutil.which(tool)
            if found is None:
                raise InvalidInputError(
                    f"the archive holds {ext} WAL ({name}) and `{tool}` is not installed here: "
                    f"install it (apt-get install {tool}) so drillkit can read that WAL"
                )
            out = subprocess.run([found, "-dc"], input=data, capture_output=True, check=False)
            if out.returncode != 0:
                raise ValueError(out.stderr.decode("utf-8", "replace").strip())
            return out.stdout
    return data


def sync_view(
    config: PgBackRestConfig,
    archive_id: str,
    view: Path,
    workdir: Path,
    *,
    say: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Make ``view`` hold exactly the repository's WAL, as plain files; return the listing.

    Files come with ``repo-get`` (read-only, decrypts; https://pgbackrest.org/command.html
    #command-repo-get) and are decompressed here: ``archive-get`` would read the production's
    pg_control at pg1-path, which a drill host need not have (and should not touch). A segment
    whose content does not match the SHA-1 in its name is left out, so continuity reports it.
    """
    say = say or (lambda _msg: None)
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
    for count, name in enumerate(fetch, 1):
        stored = wanted[name]
        path = f"archive/{config.stanza}/{archive_id}/{stored}"
        result = command.run(config, "repo-get", [path], workdir=workdir, raw=True)
        if result.returncode != 0:
            say(f"WAL {name}: {command.failure(result, 'pgbackrest repo-get')}")
            continue
        try:
            data = _decompress(result.stdout, stored)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            say(f"WAL {name}: {stored} does not decompress ({exc}); left out of the plan")
            continue
        match = _SEGMENT_FILE_RE.match(stored.rpartition("/")[2])
        if match and hashlib.sha1(data).hexdigest() != stored.rpartition("/")[2][25:65]:
            say(f"WAL {name}: content does not match the SHA-1 in {stored}; left out of the plan")
            continue
        tmp = view / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, view / name)
        index[name] = stored
        if count % 16 == 0:
            say(f"read {count} of {len(fetch)} archived WAL files")
    write_json_atomic(view / _INDEX, index)
    return wanted
