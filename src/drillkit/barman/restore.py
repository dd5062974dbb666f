"""Restoring one Barman Cloud backup into a sandbox data directory, and verifying the copy.

barman-cloud-restore runs as the PostgreSQL OS user (the files are the server's), with the
credentials in its environment. A damaged data archive fails the restore: that is the backup's
fault (BACKUP_ARCHIVE_CORRUPT); a refused or unreachable store is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from drillkit import pgbin
from drillkit.barman import tools
from drillkit.barman.store import Destination
from drillkit.catalog.verify import classify
from drillkit.exceptions import BackupError, InvalidInputError, SandboxError

Say = Callable[[str], None]
# What barman-cloud-restore prints when the bytes of a data archive are bad (tarfile/gzip errors
# surfacing through barman.cloud's download_and_extract), as opposed to access or network errors.
_ARCHIVE_DAMAGE = (
    "tarfile",
    "ReadError",
    "CRC check failed",
    "Not a gzipped file",
    "invalid header",
    "unexpected end of data",
    "Compressed file ended",
    "truncated",
    "bad checksum",
    "Error -3 while decompressing",
)


def restore_backup(
    *,
    endpoint_url: str | None,
    destination: Destination,
    backup_id: str,
    data: Path,
    owner: tuple[int, int] | None,
    credentials: Mapping[str, str],
    timeout: float = 6 * 3600,
) -> None:
    """``barman-cloud-restore`` into ``data`` (created here, empty, owned by the server)."""
    if data.exists():
        raise SandboxError(f"{data} already exists; a restore needs a new directory")
    data.mkdir(mode=0o700)
    if owner:
        os.chown(data, *owner)
    args = []
    if endpoint_url:
        args += ["--endpoint-url", endpoint_url]
    args += [destination.url, destination.server_name, backup_id, str(data)]
    result = tools.run_tool(
        "barman-cloud-restore", args, credentials=credentials, timeout=timeout, check=False
    )
    if result.returncode == 0:
        return
    output = (result.stderr or result.stdout).strip()[-1500:]
    if any(marker in output for marker in _ARCHIVE_DAMAGE):
        raise BackupError(
            f"barman-cloud-restore could not unpack backup {backup_id}: its data archive in "
            f"{destination.url} is damaged ({output[-400:]}); restore an older backup and find "
            "out what altered the object",
            code="BACKUP_ARCHIVE_CORRUPT",
        )
    raise SandboxError(
        f"barman-cloud-restore of backup {backup_id} failed (exit {result.returncode}): {output}",
        code="BARMAN_CLOUD_RESTORE_FAILED",
    )


def verify_restored(
    data: Path, backup_id: str, *, installation: pgbin.Installation | None, say: Say
) -> list[dict[str, str]]:
    """pg_verifybackup against the restored copy's backup_manifest before the server starts;
    without a manifest, a finding says so and the drill's checks carry the proof."""
    if not (data / "backup_manifest").exists():
        message = (
            f"backup {backup_id} carries no backup_manifest (barman-cloud-backup writes none), "
            "so its files cannot be verified against checksums: the pitr and integrity checks "
            "carry the proof"
        )
        say(message)
        return [{"code": "BACKUP_UNVERIFIABLE", "severity": "warning", "message": message}]
    tool = installation or pgbin.embedded()  # the backup's own major's pg_verifybackup
    result = tool.run("pg_verifybackup", ["--no-parse-wal", str(data)], check=False)
    if result.returncode == 0:
        say(f"backup {backup_id}: every restored file matches its backup_manifest")
        return []
    status, detail = classify(result.stderr + result.stdout)
    if status == "unverifiable":
        raise InvalidInputError(
            f"pg_verifybackup could not judge backup {backup_id}'s restored copy: {detail}",
            code="BACKUP_UNVERIFIABLE",
        )
    raise BackupError(
        f"backup {backup_id}'s restored copy does not match its manifest ({detail}); restore an "
        "older backup and find out what damaged this one",
        code="BACKUP_CHECKSUM_MISMATCH" if status == "checksum_mismatch" else "BACKUP_INCOMPLETE",
    )
