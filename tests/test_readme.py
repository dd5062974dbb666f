"""The README's examples run: its first lines, its spec, and every command it lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
DRILLKIT = str(Path(sys.executable).parent / "drillkit")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_two_commands_come_first():
    first = "\n".join(README.splitlines()[:6])
    assert "make demo" in first and "make test" in first


def test_the_spec_example_is_a_valid_spec():
    from drillkit.spec import parse_spec

    (spec_text,) = _blocks("yaml")
    spec = parse_spec(yaml.safe_load(spec_text), source="README.md")
    assert [t.name for t in spec.tiers] == ["primary", "secondary", "tertiary"]


def test_every_listed_command_exists():
    commands = [
        line.split("#")[0].split()[1:3]
        for block in _blocks("sh")
        for line in block.splitlines()
        if line.startswith("drillkit ")
    ]
    assert len(commands) >= 6
    for words in commands:
        sub = [w for w in words if not w.isupper() and not w.startswith("[")]
        result = subprocess.run([DRILLKIT, *sub, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, (sub, result.stderr)
