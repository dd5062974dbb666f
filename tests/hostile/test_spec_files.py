"""Hostile spec files: bombs, deep nesting, huge or binary files, FIFOs, duplicate keys, tags."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drillkit.exceptions import InvalidInputError
from drillkit.spec import read_spec_file

pytestmark = pytest.mark.unit
MAX_SPEC_BYTES = 1024 * 1024  # drillkit.specfile.MAX_SPEC_BYTES
ORDERS = Path(__file__).resolve().parents[2] / "dags" / "drills" / "orders.yaml"


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _refused(path: Path, text: str | bytes, *needles: str) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    started = time.monotonic()
    with pytest.raises(InvalidInputError) as err:
        read_spec_file(path)
    assert time.monotonic() - started < 2.0
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_an_alias_bomb_is_refused_without_expanding(tmp_path: Path):
    """9 levels of 9 aliases: 387 million strings once expanded; refused while reading."""
    text = _alias_bomb()
    assert len(text) < 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(tmp_path / "bomb.yaml", text, "more than 100000 YAML nodes once aliases", "line 6")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB


def test_a_self_referencing_alias_is_refused(tmp_path: Path):
    _refused(tmp_path / "loop.yaml", "a: &x [1, *x]\n", "refers to a node that contains it")


def test_modest_anchors_aliases_and_merge_keys_still_load(tmp_path: Path):
    path = tmp_path / "dry.yaml"
    path.write_text("base: &b {x: 1, y: [1, 2]}\nother:\n  <<: *b\n  x: 2\nagain: *b\n")
    assert read_spec_file(path) == {
        "base": {"x": 1, "y": [1, 2]},
        "other": {"x": 2, "y": [1, 2]},
        "again": {"x": 1, "y": [1, 2]},
    }


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))]
)
def test_deep_nesting_is_refused_with_its_place(tmp_path: Path, text: str):
    """In a child process: libyaml's constructor overflowed the C stack here (a segfault)."""
    spec = tmp_path / "deep.yaml"
    spec.write_text(text)
    result = _cli("run", str(spec), "--dry-run")
    assert result.returncode == 2, result.stderr[-500:]
    assert "nested deeper than 64 levels" in result.stderr and "line " in result.stderr


def test_too_many_nodes_are_refused(tmp_path: Path):
    _refused(tmp_path / "wide.yaml", "[" + "1," * 200_000 + "1]\n", "more than 100000 YAML nodes")


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path: Path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(4 * MAX_SPEC_BYTES)  # sparse: 4 MiB of NULs
    _refused(path, path.read_bytes(), f"over {MAX_SPEC_BYTES} bytes")


def test_a_spec_that_is_not_utf8_names_the_byte_offset(tmp_path: Path):
    text = ORDERS.read_bytes().replace(b"Daily proof", b"Daily pr\xf6of")
    offset = text.index(b"\xf6")
    _refused(tmp_path / "latin1.yaml", text, "not UTF-8", f"byte offset {offset}", "0xf6")


def test_nul_bytes_are_refused(tmp_path: Path):
    _refused(tmp_path / "nul.yaml", b"drill: a\x00b\n", "NUL")


def test_a_utf8_bom_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ORDERS.read_bytes())
    assert read_spec_file(path)["drill"] == "orders"


def test_a_duplicate_key_is_refused_with_its_place(tmp_path: Path):
    text = ORDERS.read_text().replace("rpo: 15m", "rpo: 15m\nrpo: 0s")
    _refused(tmp_path / "dup.yaml", text, "key 'rpo' appears twice", "line 11")


def test_python_tags_are_refused(tmp_path: Path):
    _refused(tmp_path / "tag.yaml", "drill: !!python/object/apply:os.system [id]\n", "YAML tag")


def test_a_fifo_is_refused_and_nothing_blocks(tmp_path: Path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_spec_file(fifo)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)  # a blocked open() must not block exit
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "reading a FIFO spec blocked"
    assert isinstance(outcome[0], InvalidInputError) and "not a regular file" in str(outcome[0])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drillkit.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_drillkit_run_of_a_non_utf8_spec_is_one_clear_line_exit_2(tmp_path: Path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(ORDERS.read_bytes().replace(b"Daily proof", b"Daily pr\xf6of"))
    result = _cli("run", str(spec), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SPEC_INVALID" in result.stderr and "byte offset" in result.stderr
