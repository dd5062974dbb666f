"""Archived WAL files in the forms archive tools write, for the catalog and for restore_command.

Plain ``<name>``, ``<name>.gz|.bz2|.xz|.lzma|.zst|.lz4`` (archive_command pipes, Barman, WAL-G)
and pgBackRest's ``<name>-<sha1>[.gz|.bz2|.lz4|.zst]``; ``<name>`` is a segment, a timeline
history or a backup history file. Standalone on purpose (standard library; zstandard and lz4 when
importable, else the ``zstd``/``lz4`` commands): the sandbox's restore_command runs this very file
as the PostgreSQL OS user, with a python3 that user can reach::

    python3 walfiles.py ARCHIVE_DIR %f %p
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# suffix -> compression drillkit reads
COMPRESSIONS = {
    ".gz": "gzip",
    ".bz2": "bzip2",
    ".xz": "xz",
    ".lzma": "xz",
    ".zst": "zstd",
    ".lz4": "lz4",
}
# suffix -> compression archive tools write that drillkit cannot read (named in a finding)
UNSUPPORTED = {".br": "brotli", ".snappy": "snappy", ".sz": "snappy"}
MAX_WAL_BYTES = 1 << 30  # the largest WAL segment PostgreSQL allows (--wal-segsize=1024)
_NAME_RE = re.compile(
    r"^(?P<base>[0-9A-F]{24}(?:\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)"
    r"(?:-(?P<sha1>[0-9a-f]{40}))?(?P<ext>\.[a-z0-9]{1,8})?$"
)


@dataclass(frozen=True)
class ArchivedName:
    """One archive file: the WAL file it holds (``name``, what PostgreSQL asks for) and how."""

    name: str
    file: str
    compression: str | None  # None: plain
    unsupported: str | None = None  # a compression this cannot read


def parse_archived_name(file: str) -> ArchivedName | None:
    """What ``file`` holds, or None for anything that is not an archived WAL file."""
    match = _NAME_RE.match(file)
    if not match:
        return None
    ext = match.group("ext")
    if ext is None:
        return ArchivedName(match.group("base"), file, None)
    if ext in COMPRESSIONS:
        return ArchivedName(match.group("base"), file, COMPRESSIONS[ext])
    if ext in UNSUPPORTED:
        return ArchivedName(match.group("base"), file, None, unsupported=UNSUPPORTED[ext])
    return None  # .partial and strangers: recovery does not use them


def _tool_stream(tool: str, path: Path) -> IO[bytes]:
    program = shutil.which(tool)
    if program is None:
        raise OSError(f"reading {tool} needs the {tool} Python package or the {tool} command")
    process = subprocess.Popen([program, "-dc", str(path)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process.stdout


_STDLIB = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}


@contextmanager
def open_wal(path: Path, compression: str | None) -> Iterator[IO[bytes]]:
    """A reader of the decompressed bytes of ``path``."""
    if compression is None:
        stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
    elif compression in _STDLIB:
        stream = _STDLIB[compression](path, "rb")
    elif compression == "zstd":
        try:
            import zstandard

            raw = open(path, "rb")  # noqa: SIM115 - closed with the reader
            stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        except ImportError:
            stream = _tool_stream("zstd", path)
    elif compression == "lz4":
        try:
            import lz4.frame

            stream = lz4.frame.open(path, "rb")
        except ImportError:
            stream = _tool_stream("lz4", path)
    else:
        raise ValueError(f"unknown compression {compression!r}")
    try:
        yield stream
    finally:
        stream.close()


_READ_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError)


def read_head(path: Path, compression: str | None, size: int) -> bytes | None:
    """The first ``size`` decompressed bytes, or None when the file cannot be read."""
    try:
        with open_wal(path, compression) as stream:
            return stream.read(size)
    except _READ_ERRORS:
        return None
    except Exception:  # zstandard.ZstdError, lz4's RuntimeError: a damaged file, not a crash
        return None


def decompress_to(path: Path, compression: str | None, dest: Path, *, limit: int) -> int:
    """Write the decompressed ``path`` to ``dest`` (atomically); return its size.

    ValueError when it does not decompress or decompresses to more than ``limit`` bytes (a
    decompression bomb is stopped there, not written out).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".walfiles-")
    written = 0
    try:
        with os.fdopen(handle, "wb") as out, open_wal(path, compression) as stream:
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise ValueError(f"decompresses to more than {limit} bytes")
                out.write(chunk)
        os.replace(tmp_name, dest)
    except ValueError:
        os.unlink(tmp_name)
        raise
    except Exception as exc:
        os.unlink(tmp_name)
        raise ValueError(f"cannot be decompressed ({type(exc).__name__}: {exc})") from exc
    return written


def find_archived(archive: Path, name: str) -> ArchivedName | None:
    """The archive file holding ``name``: plain first, then each compressed form."""
    if (archive / name).is_file():
        return ArchivedName(name, name, None)
    candidates = sorted(p.name for p in archive.glob(f"{name}*"))
    for file in candidates:
        parsed = parse_archived_name(file)
        if parsed is not None and parsed.name == name and parsed.unsupported is None:
            return parsed
    return None


def restore(archive: Path, name: str, dest: Path) -> int:
    """restore_command: put WAL file ``name`` at ``dest``; exit 1 when the archive lacks it."""
    if parse_archived_name(name) is None or parse_archived_name(name).name != name:  # type: ignore[union-attr]
        return 1  # not a WAL file name: nothing to look up (and no glob pattern)
    found = find_archived(archive, name)
    if found is None:
        return 1  # PostgreSQL asks for files that may not exist (next timeline, end of WAL)
    try:
        decompress_to(archive / found.file, found.compression, dest, limit=MAX_WAL_BYTES)
    except ValueError as exc:
        print(f"walfiles: {archive / found.file} {exc}", file=sys.stderr)
        return 2
    return 0


def helper_command(helper_dir: Path) -> list[str]:
    """``[python3, helper]``: this file copied into ``helper_dir`` (which the PostgreSQL OS user
    reaches), run by a python3 that user reaches."""
    helper = helper_dir / "walfiles.py"
    shutil.copyfile(__file__, helper)
    helper.chmod(0o644)
    python = next(
        (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)),
        sys.executable,
    )
    return [python, str(helper)]


def restore_command(archive: Path, helper_dir: Path) -> str:
    """A restore_command that reads every form above (see ``helper_command``)."""
    return helper_restore_command(helper_command(helper_dir), archive)


def helper_restore_command(helper: list[str], archive: Path) -> str:
    """The restore_command running ``helper`` (from ``helper_command``) on ``archive``."""
    # Each path quoted for /bin/sh and its % doubled for the server: paths are data, never shell.
    parts = [*helper, str(archive)]
    return " ".join(shlex.quote(p).replace("%", "%%") for p in parts) + " %f %p"


# compression -> (Python module, command) that reads it; the standard library reads the rest.
_READERS = {"zstd": ("zstandard", "zstd"), "lz4": ("lz4.frame", "lz4")}
CANNOT_READ = 3  # exit code of ``--can`` when a compression cannot be read here


def missing_readers(compressions: set[str] | list[str]) -> list[str]:
    """The compressions this Python (and PATH) cannot decompress, each as ``name (module or
    command)``; empty when every one can be read."""
    import importlib.util

    missing = []
    for compression in sorted(set(compressions)):
        reader = _READERS.get(compression)
        if reader is None:
            continue
        module, command = reader
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # lz4 itself absent: lz4.frame cannot be looked up
            found = False
        if not found and shutil.which(command) is None:
            missing.append(f"{compression} (Python module {module} or the {command} command)")
    return missing


def compressions_in(archive: Path) -> set[str]:
    """The compressions of the archived WAL files in ``archive``."""
    found = set()
    for entry in os.scandir(archive):
        archived = parse_archived_name(entry.name)
        if archived is not None and archived.compression is not None:
            found.add(archived.compression)
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["--can"]:  # a preflight: can the restore_command read these compressions?
        missing = missing_readers(argv[1:])
        for line in missing:
            print(line)
        return CANNOT_READ if missing else 0
    if len(argv) != 3:
        print("usage: walfiles.py ARCHIVE_DIR WAL_FILE_NAME DESTINATION", file=sys.stderr)
        return 2
    return restore(Path(argv[0]), argv[1], Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
