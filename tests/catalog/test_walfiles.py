"""drillkit.catalog.walfiles: the archive forms archive tools write, and the restore helper."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shlex
import subprocess
import sys
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from drillkit.catalog import walfiles
from drillkit.catalog.walfiles import ArchivedName, decompress_to, parse_archived_name, read_head

pytestmark = pytest.mark.unit
SEGMENT = "000000010000000000000003"
COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda d: zstandard.ZstdCompressor().compress(d),
    ".lz4": lz4.frame.compress,
}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (SEGMENT, ArchivedName(SEGMENT, SEGMENT, None)),
        (f"{SEGMENT}.gz", ArchivedName(SEGMENT, f"{SEGMENT}.gz", "gzip")),
        (f"{SEGMENT}.zst", ArchivedName(SEGMENT, f"{SEGMENT}.zst", "zstd")),
        (f"{SEGMENT}-{'a' * 40}.lz4", ArchivedName(SEGMENT, f"{SEGMENT}-{'a' * 40}.lz4", "lz4")),
        (f"{SEGMENT}-{'a' * 40}", ArchivedName(SEGMENT, f"{SEGMENT}-{'a' * 40}", None)),
        ("00000002.history.bz2", ArchivedName("00000002.history", "00000002.history.bz2", "bzip2")),
        (f"{SEGMENT}.br", ArchivedName(SEGMENT, f"{SEGMENT}.br", None, unsupported="brotli")),
        (f"{SEGMENT}.partial", None),
        (f"{SEGMENT}.gz.tmp", None),
        ("README", None),
        ("*", None),
    ],
)
def test_parse_archived_name(file: str, expected: ArchivedName | None):
    assert parse_archived_name(file) == expected


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_every_form_reads_back_exactly(tmp_path: Path, suffix: str):
    data = bytes(range(256)) * 4096  # 1 MiB
    path = tmp_path / f"{SEGMENT}{suffix}"
    path.write_bytes(COMPRESS[suffix](data))
    compression = parse_archived_name(path.name).compression
    assert read_head(path, compression, 40) == data[:40]
    assert decompress_to(path, compression, tmp_path / "out", limit=len(data)) == len(data)
    assert (tmp_path / "out").read_bytes() == data


def test_a_decompression_bomb_stops_at_the_limit_and_writes_nothing(tmp_path: Path):
    path = tmp_path / f"{SEGMENT}.gz"
    path.write_bytes(gzip.compress(b"\0" * (64 << 20)))  # 64 MiB of zeros in ~64 KiB
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="more than 16777216 bytes"):
        decompress_to(path, "gzip", tmp_path / "out", limit=16 << 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_corrupt_file_is_a_value_error_not_a_crash(tmp_path: Path):
    for suffix in COMPRESS:
        path = tmp_path / f"{SEGMENT}{suffix}"
        path.write_bytes(b"not compressed at all" * 10)
        compression = parse_archived_name(path.name).compression
        assert read_head(path, compression, 40) in (None, b"")
        with pytest.raises(ValueError):
            decompress_to(path, compression, tmp_path / "out", limit=1 << 20)


def _helper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, walfiles.__file__, *args], capture_output=True, text=True, timeout=60
    )


def test_the_restore_helper_prefers_plain_then_reads_compressed(tmp_path: Path):
    archive = tmp_path / "wal"
    archive.mkdir()
    (archive / f"{SEGMENT}-{'b' * 40}.zst").write_bytes(COMPRESS[".zst"](b"zstd form"))
    assert _helper(str(archive), SEGMENT, str(tmp_path / "p1")).returncode == 0
    assert (tmp_path / "p1").read_bytes() == b"zstd form"
    (archive / SEGMENT).write_bytes(b"plain form")
    assert _helper(str(archive), SEGMENT, str(tmp_path / "p2")).returncode == 0
    assert (tmp_path / "p2").read_bytes() == b"plain form"


def test_the_restore_helper_answers_missing_and_odd_names_with_exit_1(tmp_path: Path):
    (tmp_path / "00000001000000000000000X").write_text("x")
    for name in ("00000002.history", "*", "../etc/passwd", "0000000100000000000000[0-9]"):
        result = _helper(str(tmp_path), name, str(tmp_path / "out"))
        assert result.returncode == 1, name
    assert not (tmp_path / "out").exists()


def test_restore_command_copies_a_standalone_helper(tmp_path: Path):
    command = walfiles.restore_command(tmp_path / "wal", tmp_path)
    helper = tmp_path / "walfiles.py"
    assert helper.read_text() == Path(walfiles.__file__).read_text()
    assert oct(helper.stat().st_mode & 0o777) == "0o644"
    # Each path is one shell word (quoted for /bin/sh, its % doubled for the server).
    words = shlex.split(command.replace("%%", "%"))
    assert words[1:] == [str(helper), str(tmp_path / "wal"), "%f", "%p"]
    assert "import drillkit" not in helper.read_text() and "from drillkit" not in helper.read_text()


def test_restore_command_quotes_a_hostile_archive_path(tmp_path: Path):
    archive = tmp_path / "wal $(touch pwned) `id` 'q' %p;"
    command = walfiles.restore_command(archive, tmp_path)
    words = shlex.split(command.replace("%%", "%"))
    assert words[2] == str(archive) and words[3:] == ["%f", "%p"]
    assert "%p;" not in command.replace("%%", "")  # the path's % is doubled, never a placeholder


def test_the_helper_preflight_says_which_compressions_it_can_read(tmp_path: Path):
    """``--can``: every reader present (this venv has zstandard and lz4) exits 0; a python3
    without them and without the commands exits 3 naming each, before any recovery starts."""
    assert _helper("--can", "gzip", "zstd", "lz4").returncode == 0
    bare = subprocess.run(
        # -S: no site-packages (no zstandard, no lz4); an empty PATH: no zstd or lz4 command.
        [sys.executable, "-S", walfiles.__file__, "--can", "gzip", "xz", "zstd", "lz4"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path)},
    )
    assert bare.returncode == walfiles.CANNOT_READ
    assert bare.stdout.splitlines() == [
        "lz4 (Python module lz4.frame or the lz4 command)",
        "zstd (Python module zstandard or the zstd command)",
    ]


def test_a_zstd_archive_the_restore_user_cannot_read_is_a_tool_error_not_the_backups(
    tmp_path: Path,
):
    """The local catalog checks the helper before recovery: a missing reader is
    WAL_TOOL_MISSING (COULD NOT VERIFY), never a recovery that stops and blames the backup."""
    from drillkit.catalog.local import _require_readers
    from drillkit.exceptions import ToolMissingError
    from drillkit.findings import TOOL_CODES

    # Debian's python3 has neither zstandard nor lz4; with a PATH holding no zstd command, it
    # cannot read .zst (run as the PostgreSQL OS user, as recovery would run it).
    helper = ["/usr/bin/python3", str(Path(walfiles.__file__))]
    with pytest.raises(ToolMissingError) as refused:
        _require_readers(helper, {"zstd", "gzip"}, env={"PATH": str(tmp_path)})
    assert refused.value.code == "WAL_TOOL_MISSING" and refused.value.code in TOOL_CODES
    assert "zstd" in str(refused.value) and "python3-zstandard" in str(refused.value)
    _require_readers(helper, {"zstd", "lz4"})  # the server's PATH has both commands (system deps)
