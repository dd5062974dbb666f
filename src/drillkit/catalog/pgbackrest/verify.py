"""``pgbackrest verify``: its per-backup verdicts, remembered per backup label + manifest.

pgBackRest 2.45's verify checks the whole stanza (no per-set option): it runs once when any
backup's cache entry is missing or stale, and each backup's verdict is stored under its label
and the signature of its repository manifest and files (so a changed backup is verified again).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from drillkit.catalog.model import VERIFIED, Verification
from drillkit.catalog.pgbackrest import command
from drillkit.catalog.pgbackrest.command import PgBackRestConfig
from drillkit.catalog.verify import reverify_after
from drillkit.state import read_json, state_dir, write_json_atomic
from drillkit.timeutil import isoformat, parse_iso, utcnow

# "  backup: <label>, status: invalid, total files checked: 966, total valid files: 965"
_BACKUP_RE = re.compile(r"^\s*backup: (\S+), status: ([a-z ]+?), total files checked")
# "    missing: 0, checksum invalid: 1, size invalid: 0, other: 0"
_COUNTS_RE = re.compile(r"^\s+(missing: \d+.*|checksum invalid: \d+.*|size invalid.*|other.*)$")
# console INFO line naming a damaged file: "invalid checksum '<label>/pg_data/base/5/16384.gz'"
_DAMAGE = ("checksum invalid", "size invalid")
_FILE_RE = re.compile(r"(invalid checksum|invalid size|missing|other error)[^']*'([^']+)'")


def parse_verify(output: str) -> dict[str, tuple[str, str]]:
    """``label -> (status, detail)`` from ``verify --output=text --verbose`` plus its console
    INFO lines (which name the damaged files)."""
    files: dict[str, list[str]] = {}
    for kind, path in _FILE_RE.findall(output):
        label = path.split("/", 1)[0]
        files.setdefault(label, []).append(f"{kind} {path}")
    verdicts: dict[str, tuple[str, str]] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        match = _BACKUP_RE.match(line)
        if not match:
            continue
        label, state = match.group(1), match.group(2).strip()
        counts = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if state == "valid":
            verdicts[label] = (VERIFIED, "pgbackrest verify: every file matches its checksum")
            continue
        named = files.get(label, [])
        detail = f"pgbackrest verify: {state} ({counts})"
        if named:
            detail += "; " + "; ".join(named[:5]) + (f" (+{len(named) - 5})" if named[5:] else "")
        damaged = [f"{what}: 0" not in counts and what in counts for what in _DAMAGE]
        if any(damaged):
            status = "checksum_mismatch"
        elif "missing: 0" not in counts and "missing" in counts:
            status = "incomplete"
        elif state in ("invalid",):
            status = "checksum_mismatch"
        else:  # "in-progress", "not-processed": pgBackRest could not judge it
            status = "unverifiable"
        verdicts[label] = (status, detail)
    return verdicts


class VerifyCache:
    def __init__(self, *, key: str) -> None:
        self.path = state_dir() / "pgbackrest-verify" / f"{key}.json"

    def get(self, label: str, signature: str) -> Verification | None:
        entry = (read_json(self.path) or {}).get(label)
        if not entry or entry.get("sig") != signature:
            return None
        checked = parse_iso(entry.get("checked_at"))
        if checked is None or utcnow() - checked >= reverify_after():
            return None
        return Verification(entry["status"], entry.get("detail", ""), entry["checked_at"], True)

    def put(self, label: str, signature: str, verification: Verification) -> None:
        cache = read_json(self.path) or {}
        cache[label] = {
            "sig": signature,
            "status": verification.status,
            "detail": verification.detail,
            "checked_at": verification.checked_at,
        }
        write_json_atomic(self.path, cache)


def backup_signature(config: PgBackRestConfig, label: str, workdir: Path) -> str | None:
    """Digest of the backup's repository manifest (its bytes, ``repo-get``) and listing (every
    file's name, size and time, ``repo-ls --recurse``): works on every repository type; None
    when unreadable."""
    result = command.run(
        config,
        "repo-ls",
        [f"backup/{config.stanza}/{label}", "--recurse", "--output=json"],
        workdir=workdir,
    )
    if result.returncode != 0:
        return None
    try:
        listing = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    manifest = command.run(
        config,
        "repo-get",
        [f"backup/{config.stanza}/{label}/backup.manifest"],
        workdir=workdir,
        raw=True,
    )
    if manifest.returncode != 0:
        return None
    digest = hashlib.sha256(manifest.stdout)
    digest.update(json.dumps(listing, sort_keys=True).encode())
    return digest.hexdigest()


def verify_backups(
    config: PgBackRestConfig,
    labels: list[str],
    *,
    cache_key: str,
    workdir: Path,
    use_cache: bool = True,
) -> dict[str, Verification]:
    """Verification of each label: cached, or from one ``pgbackrest verify`` of the stanza."""
    cache = VerifyCache(key=cache_key)
    signatures = {label: backup_signature(config, label, workdir) for label in labels}
    out: dict[str, Verification] = {}
    for label in labels:
        signature = signatures[label]
        cached = cache.get(label, signature) if use_cache and signature else None
        if cached is not None:
            out[label] = cached
    todo = [label for label in labels if label not in out]
    if not todo:
        return out
    result = command.run(
        config, "verify", ["--output=text", "--verbose"], workdir=workdir, console="info"
    )
    checked_at = isoformat(utcnow())
    verdicts = parse_verify(result.stdout + "\n" + result.stderr)
    for label in todo:
        if label in verdicts:
            status, detail = verdicts[label]
        else:
            status = "unverifiable"
            detail = (
                "pgbackrest verify did not report this backup"
                if result.returncode == 0
                else command.failure(result, "pgbackrest verify")
            )
        verification = Verification(status, detail, checked_at, False)
        out[label] = verification
        signature = signatures[label]
        if status != "unverifiable" and signature:
            cache.put(label, signature, verification)
    return out
