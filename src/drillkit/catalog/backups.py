"""Reading a ``pg_basebackup`` directory (plain or tar format): backup_label, manifest, history.

Nothing here writes: the repository being drilled is read-only to drillkit.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drillkit.catalog.links import scan_backup
from drillkit.catalog.model import BackupInfo
from drillkit.catalog.tarformat import (
    PLAIN,
    READ_ERRORS,
    read_member,
    tar_layout,
    unreadable_sentence,
)
from drillkit.catalog.wal import parse_lsn, segment_name, segno_of

_OFFSET_ZONE = re.compile(r"^([+-])(\d{2})(?::?(\d{2}))?$")


def parse_label_time(text: str) -> datetime | None:
    """Times in backup_label and history files, printed in the server's log_timezone.

    Only UTC/GMT and numeric offsets are unambiguous; for a zone abbreviation (CET, IST...) this
    returns None and the caller derives the time from WAL instead of guessing.
    """
    parts = text.strip().rsplit(" ", 1)
    if len(parts) != 2:
        return None
    stamp, zone = parts
    try:
        naive = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    if zone in ("UTC", "GMT", "Z", "UCT"):
        return naive.replace(tzinfo=UTC)
    match = _OFFSET_ZONE.match(zone)
    if not match:
        return None
    sign = -1 if match.group(1) == "-" else 1
    offset = sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
    return (naive - offset).replace(tzinfo=UTC)


def parse_label(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def history_file_name(timeline: int, start_lsn: int, segment_size: int) -> str:
    segno = segno_of(start_lsn, segment_size)
    return f"{segment_name(timeline, segno, segment_size)}.{start_lsn % segment_size:08X}.backup"


def _manifest_size(files: list[dict[str, Any]]) -> int:
    return sum(int(f.get("Size", 0)) for f in files)


def _read_label(path: Path, problems: list[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """The backup's format and its backup_label: a plain file, or a member of base.tar[.gz]."""
    label_path = path / "backup_label"
    layout = None if label_path.exists() else tar_layout(path)
    if layout is None:
        label = parse_label(label_path.read_text()) if label_path.exists() else {}
        where, fmt = "", PLAIN
    elif not layout.readable:
        problems.append(("BACKUP_UNVERIFIABLE", unreadable_sentence(path.name, layout)))
        return layout.format, {}
    else:
        fmt, where = layout.format, f" in {layout.base.name}"
        try:
            data = read_member(layout.base, "backup_label")
        except READ_ERRORS as exc:
            data, where = None, f" readable in {layout.base.name} ({exc})"
        label = parse_label(data.decode("utf-8", "replace")) if data else {}
    if not label:
        problems.append(
            (
                "BACKUP_INCOMPLETE",
                f"backup {path.name} has no backup_label{where}: it is not a complete base "
                "backup; take it again with pg_basebackup",
            )
        )
    return fmt, label


def read_pg_major(path: Path) -> int | None:
    """The major in the backup's PG_VERSION (plain file, or streamed from base.tar[.gz])."""
    layout = None if (path / "PG_VERSION").exists() else tar_layout(path)
    try:
        if layout is None:
            raw: bytes | None = (path / "PG_VERSION").read_bytes()[:16]
        elif layout.readable:
            raw = read_member(layout.base, "PG_VERSION", limit=16)
        else:
            return None
    except READ_ERRORS:
        return None
    text = (raw or b"").decode("ascii", "replace").strip()
    # "9.6" before PostgreSQL 10, then just the major ("15").
    head = text.split(".")[0]
    return int(head) if head.isdigit() else None


def _check_manifest_major(
    backup_id: str, manifest: dict[str, Any], major: int | None, problems: list[tuple[str, str]]
) -> None:
    """The manifest agrees with PG_VERSION: version 2 manifests (with System-Identifier) are
    written by PostgreSQL 17 and later only, version 1 by 13 to 16."""
    version = manifest.get("PostgreSQL-Backup-Manifest-Version")
    if major is None or not isinstance(version, int):
        return
    if (version >= 2) != (major >= 17):
        problems.append(
            (
                "BACKUP_INCOMPLETE",
                f"backup {backup_id}: its PG_VERSION says PostgreSQL {major} but its "
                f"backup_manifest is version {version}, which PostgreSQL "
                f"{'17 and later' if version >= 2 else '13 to 16'} write: files of two backups "
                "are mixed; take it again",
            )
        )


def read_backup(path: Path, *, backup_histories: dict[str, str], segment_size: int) -> BackupInfo:
    """Describe one backup; problems that make it unusable land in ``problems``.

    The backup is walked with lstat first: one with a link out of place is described by that
    problem alone, and not one of its files is opened.
    """
    problems: list[tuple[str, str]] = []
    files = scan_backup(path)
    if files.unsafe:
        return BackupInfo(
            backup_id=path.name,
            path=str(path),
            start_lsn=0,
            stop_lsn=0,
            timeline=0,
            stop_timeline=0,
            start_time=None,
            stop_time=None,
            system_identifier=None,
            size_bytes=files.size_bytes,
            problems=((files.code, files.sentence(path)),),
        )
    manifest_path = path / "backup_manifest"
    fmt, label = _read_label(path, problems)
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(
                (
                    "BACKUP_INCOMPLETE",
                    f"backup {path.name} has an unreadable backup_manifest (truncated?); take the "
                    "backup again",
                )
            )
    else:
        problems.append(
            (
                "BACKUP_UNVERIFIABLE",
                f"backup {path.name} has no backup_manifest, so its files cannot be verified; take "
                "backups with pg_basebackup (which writes one) and keep the manifest",
            )
        )
    # WAL-Ranges lists the newest timeline first (AddWALInfoToBackupManifest).
    ranges = manifest.get("WAL-Ranges") or []
    start_lsn = parse_lsn(ranges[-1]["Start-LSN"]) if ranges else 0
    stop_lsn = parse_lsn(ranges[0]["End-LSN"]) if ranges else 0
    timeline = int(ranges[-1]["Timeline"]) if ranges else 0
    stop_timeline = int(ranges[0]["Timeline"]) if ranges else 0
    if not ranges and "START WAL LOCATION" in label:
        start_lsn = parse_lsn(label["START WAL LOCATION"].split()[0])
        timeline = stop_timeline = int(label.get("START TIMELINE", "1"))
    stop_time = None
    history = backup_histories.get(history_file_name(timeline, start_lsn, segment_size))
    if history:
        fields = parse_label(history)
        stop_time = parse_label_time(fields.get("STOP TIME", ""))
        if not stop_lsn and "STOP WAL LOCATION" in fields:
            stop_lsn = parse_lsn(fields["STOP WAL LOCATION"].split()[0])
    if not stop_lsn and not problems:
        problems.append(
            (
                "BACKUP_INCOMPLETE",
                f"backup {path.name}: neither its manifest nor the archive says where it ended",
            )
        )
    sysid = manifest.get("System-Identifier")
    pg_major = read_pg_major(path) if label else None
    _check_manifest_major(path.name, manifest, pg_major, problems)
    return BackupInfo(
        backup_id=path.name,
        path=str(path),
        start_lsn=start_lsn,
        stop_lsn=stop_lsn,
        timeline=timeline,
        stop_timeline=stop_timeline,
        start_time=parse_label_time(label.get("START TIME", "")),
        stop_time=stop_time,
        system_identifier=int(sysid) if sysid is not None else None,
        size_bytes=_manifest_size(manifest.get("Files", [])),
        format=fmt,
        problems=tuple(problems),
        pg_major=pg_major,
    )
