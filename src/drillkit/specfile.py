"""Reading a spec file safely: bounded size, strict UTF-8, bounded YAML (nodes, depth), no tags.

A kilobyte of nested aliases expands to gigabytes once walked ("billion laughs"); deep nesting
overflows the C stack of libyaml's constructor; a duplicated key silently overrides the first.
Each is refused here, before anything is built, with the file and the place named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drillkit.spec import SpecError as SpecFileError

MAX_SPEC_BYTES = 1024 * 1024  # specs are a few kilobytes; this bounds memory and parse time
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_NODES = 100_000  # scalars, mappings and sequences, aliases expanded
# libyaml when present: the pure-Python loader costs ~2.5 ms a spec at DAG-parse time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"


@dataclass
class _Open:
    """A collection being read: its expanded size so far and, for a mapping, its keys."""

    anchor: str | None
    keys: set[str] | None  # None for a sequence
    expect_key: bool = True
    size: int = 1


def check_plain_yaml(text: str, *, source: str) -> None:
    """Refuse what can blow up or hide: more than MAX_NODES nodes once aliases are expanded
    (an alias bomb), an alias to its own node, deep nesting, explicit tags, duplicate keys.

    Walks libyaml's event stream (no document is built), so a bomb costs what its text costs.
    Anchors and aliases themselves are fine (the shipped examples share a sandbox block).
    """
    stack: list[_Open] = []
    anchors: dict[str, int] = {}  # anchor -> expanded node count of its node
    total = 0

    def add(size: int, event: yaml.Event) -> None:
        nonlocal total
        total += size
        if total > MAX_NODES:
            raise SpecFileError(
                f"{source}: {_where(event)}: more than {MAX_NODES} YAML nodes once aliases are "
                "expanded (an alias bomb?); a drill spec has a few hundred"
            )
        for frame in stack:
            frame.size += size

    def node_done(anchor: str | None, size: int) -> None:
        if anchor is not None:
            anchors[anchor] = size
        if stack and stack[-1].keys is not None:
            stack[-1].expect_key = not stack[-1].expect_key

    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            node_done(done.anchor, done.size)
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in {o.anchor for o in stack}:
                raise SpecFileError(
                    f"{source}: {_where(event)}: alias *{event.anchor} refers to a node that "
                    "contains it (an endless document); write the value out"
                )
            size = anchors.get(event.anchor, 1)
            add(size, event)
            node_done(None, size)
            continue
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            raise SpecFileError(
                f"{source}: {_where(event)}: YAML tag {tag} is not allowed in a drill spec; "
                "remove it"
            )
        top = stack[-1] if stack else None
        if isinstance(event, yaml.ScalarEvent):
            if top is not None and top.keys is not None and top.expect_key:
                if event.value in top.keys and event.value != "<<":
                    raise SpecFileError(
                        f"{source}: {_where(event)}: key {event.value!r} appears twice in one "
                        "mapping; YAML would keep only the last one: remove the other"
                    )
                top.keys.add(event.value)
            add(1, event)
            node_done(event.anchor, 1)
            continue
        if len(stack) >= MAX_DEPTH:
            raise SpecFileError(
                f"{source}: {_where(event)}: YAML nested deeper than {MAX_DEPTH} levels; a drill "
                "spec needs a handful"
            )
        add(1, event)
        mapping = isinstance(event, yaml.MappingStartEvent)
        stack.append(_Open(anchor=event.anchor, keys=set() if mapping else None))


def decode_spec(raw: bytes, *, source: str) -> str:
    """Strict UTF-8 (a BOM is allowed), with the byte offset of the first bad byte named."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecFileError(
            f"{source}: over {MAX_SPEC_BYTES} bytes, the limit for a drill spec; is this the "
            "right file?"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecFileError(
            f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start}); "
            "save the spec as UTF-8"
        ) from exc


def load_spec_text(text: str, *, source: str) -> Any:
    """The YAML document of a spec's text, or SpecFileError naming ``source`` and the place."""
    if "\x00" in text:
        raise SpecFileError(
            f"{source}: holds a NUL character at offset {text.index(chr(0))}; a drill spec is text"
        )
    try:
        check_plain_yaml(text, source=source)
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - MAX_DEPTH stops nesting first
        raise SpecFileError(f"{source}: YAML nested too deeply") from exc


def read_spec_bytes(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES + 1 bytes of ``path`` (enough to tell that it is too large)."""
    import stat

    try:
        # A FIFO or device would block or never end: only a regular file is a spec.
        if not stat.S_ISREG(path.stat().st_mode):
            raise SpecFileError(f"{path}: not a regular file; point at the drill spec's YAML file")
        with path.open("rb") as handle:
            return handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecFileError(f"{path}: cannot read the drill spec ({exc.strerror})") from exc
