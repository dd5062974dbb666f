"""Backup verification with ``pg_verifybackup``, remembered for backups that have not changed.

A daily drill must not re-hash last month's backups; bit rot is caught by re-verifying after
``DRILLKIT_REVERIFY_AFTER`` (default 7d) and by the drill's own integrity checks.
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

from drillkit.catalog.links import scan_backup
from drillkit.catalog.model import VERIFIED, Verification
from drillkit.catalog.tarformat import PLAIN, backup_format
from drillkit.exceptions import SandboxError
from drillkit.pgbin import Installation, os_user
from drillkit.state import read_json, state_dir, write_json_atomic
from drillkit.timeutil import isoformat, parse_duration, parse_iso, utcnow

DEFAULT_REVERIFY_AFTER = timedelta(days=7)
# pg_verifybackup reads every byte: allow a slow disk (20 MiB/s) and a fixed start-up margin.
_VERIFY_BYTES_PER_SECOND = 20 * 2**20
_VERIFY_MIN_SECONDS = 300.0


def reverify_after() -> timedelta:
    value = os.environ.get("DRILLKIT_REVERIFY_AFTER")
    return (
        parse_duration(value, field="DRILLKIT_REVERIFY_AFTER") if value else DEFAULT_REVERIFY_AFTER
    )


def backup_signature(path: Path) -> str:
    """Digest of the manifest and of every file's path, size and mtime: cheap, no hashing data.

    For a tar-format backup the files are its archives (base.tar.gz, pg_wal.tar.gz, <oid>.tar.gz).
    """
    digest = hashlib.sha256()
    manifest = path / "backup_manifest"
    if manifest.exists():
        digest.update(hashlib.sha256(manifest.read_bytes()).digest())
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            digest.update(
                f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def classify(output: str) -> tuple[str, str]:
    """Map pg_verifybackup's complaints to a status and the first few lines of detail."""
    lines = [line.replace("pg_verifybackup: ", "") for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")] or lines
    text = " ".join(errors)
    detail = "; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
    if "checksum mismatch" in text:
        return "checksum_mismatch", detail
    if "not on disk" in text or ("in the manifest" in text and "size" in text):
        return "incomplete", detail
    # Tar format: a cut-off archive reads as a stream that ends early; damaged archive bytes
    # fail to decompress or to parse, and a member no pg_basebackup writes has an unsafe name.
    if "ended before last file was finished" in text:
        return "incomplete", detail
    if any(
        words in text
        for words in ("could not decompress", "not appear to be a valid tar", "unsafe path name")
    ):
        return "checksum_mismatch", detail
    if "backup_manifest" in text and ("could not open" in text or "could not read" in text):
        return "unverifiable", detail
    if "present on disk but not in the manifest" in text:
        return "checksum_mismatch", detail
    return "unverifiable", detail


def unreadable_detail(output: str) -> str:
    user = os_user()
    who = f"the PostgreSQL OS user {user.name!r}" if user else "drillkit's user"
    first = next((line for line in output.splitlines() if "Permission denied" in line), output)
    return (
        f"{who} cannot read the backup ({first.replace('pg_verifybackup: ', '').strip()}): "
        "drillkit reads backups only as that user; make the backup readable by it (group read, "
        "or own the repository by that user)"
    )


def verify_backup(
    path: Path,
    *,
    installation: Installation | None = None,
    fmt: str | None = None,
    use_cache: bool = True,
) -> Verification:
    """Verify every file of a backup against its manifest (checksums and sizes), with the
    ``pg_verifybackup`` of the backup's own major (``installation``; default: the one its
    PG_VERSION names, found as ``pgbin.for_major`` finds it).

    PostgreSQL 18's pg_verifybackup reads tar-format backups (plain tar and gzip) itself; it
    cannot parse their WAL, which --no-parse-wal skips anyway. Older majors read plain ones only.
    The backup is walked with lstat first (a link out of place is never verified:
    pg_verifybackup would follow it), and pg_verifybackup runs as the PostgreSQL OS user, within
    a time limit: even a link missed here could not make it read what that user cannot.
    """
    files = scan_backup(path)
    if files.unsafe:
        return Verification("unsafe_link", files.sentence(path), isoformat(utcnow()), False)
    if installation is None:
        from drillkit.catalog.backups import read_pg_major
        from drillkit.pgbin import embedded, for_major

        major = read_pg_major(path)
        installation = for_major(major) if major is not None else embedded()
    fmt = fmt or backup_format(path) or PLAIN
    if fmt != PLAIN and installation.major < 18:
        return Verification(
            "unverifiable",
            f"pg_verifybackup of PostgreSQL {installation.major} reads plain-format backups only "
            "(tar support came in 18), so this tar-format backup was not verified (this says "
            "nothing about the backup): take plain backups (pg_basebackup -Fp) of this major",
        )
    path = path.resolve()  # binaries run with cwd=/: a relative path would not be found
    cache_path = state_dir() / "verify.json"
    cache = read_json(cache_path) or {}
    key = str(path)
    signature = backup_signature(path)
    entry = cache.get(key)
    tool = installation.version
    if use_cache and entry and entry.get("sig") == signature and entry.get("tool") == tool:
        checked = parse_iso(entry.get("checked_at"))
        if checked is not None and utcnow() - checked < reverify_after():
            return Verification(entry["status"], entry.get("detail", ""), entry["checked_at"], True)
    # WAL is checked by the catalog's own continuity plan, across the whole restore range.
    args = ["--no-parse-wal", str(path)]
    limit = _VERIFY_MIN_SECONDS + files.size_bytes / _VERIFY_BYTES_PER_SECOND
    try:
        result = installation.run("pg_verifybackup", args, check=False, timeout=limit)
    except SandboxError as exc:  # the time limit: not a verdict on the backup
        return Verification("unverifiable", str(exc), isoformat(utcnow()), False)
    output = result.stderr + result.stdout
    if result.returncode == 0:
        status, detail = VERIFIED, "all files match the backup manifest"
    elif "Permission denied" in output:
        status, detail = "unverifiable", unreadable_detail(output)
    else:
        status, detail = classify(output)
    checked_at = isoformat(utcnow())
    if status == "unverifiable":
        # Not a verdict on the backup (pg_verifybackup could not judge it): never remembered.
        return Verification(status, detail, checked_at, False)
    cache = read_json(cache_path) or {}  # re-read: another drill may have written meanwhile
    cache[key] = {
        "sig": signature,
        "status": status,
        "detail": detail,
        "checked_at": checked_at,
        "tool": tool,
    }
    write_json_atomic(cache_path, cache)
    return Verification(status, detail, checked_at, False)
