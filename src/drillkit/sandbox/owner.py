"""Who owns a sandbox while it is provisioned, and whether that process still lives.

The rule (an Airflow deployment provisions in one task process and checks and tears down in
later ones):

- While a sandbox is ``provisioning``, its owner is the process provisioning it: its label
  records that process's pid, its start time (field 22 of ``/proc/<pid>/stat``, so a recycled
  pid is not mistaken for it), the boot id and the pid namespace. When that process is gone
  (killed, OOM, a crashed worker), nobody will ever finish or hand the sandbox over:
  ``drillkit gc`` collects it at once, stopping its server first.
- Once the sandbox is ``ready`` it has been handed over to the drill run, and the owner record
  is dropped: later task processes of the run use it, and only its TTL (``expires_at``, which
  ``keep`` extends) lets ``drillkit gc`` collect it. A healthy multi-task run is never cut short.
- Where the owner cannot be judged (another boot, another pid namespace, no /proc), gc falls
  back to the TTL: it never collects a sandbox whose owner might still be alive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot); None when there is no such
    live process (a zombie, killed and not yet reaped by its parent, is no longer alive)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = text.rpartition(")")[2].split()
    try:
        state, started = fields[0], int(fields[19])  # fields 3 and 22 overall
    except (IndexError, ValueError):
        return None
    return None if state in ("Z", "X") else started


def current_owner() -> dict[str, Any]:
    """The record of this process as a sandbox's owner, written into its label."""
    pid = os.getpid()
    return {
        "pid": pid,
        "start_time": start_time(pid),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "pid_namespace": _pid_namespace(),
    }


def owner_gone(owner: Any) -> bool | None:
    """True when the recorded owner is certainly gone; False alive; None when it cannot tell."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    here = current_owner()
    if owner.get("boot_id") is None or owner.get("boot_id") != here["boot_id"]:
        return None  # another boot (or no record of it): the TTL decides
    if owner.get("pid_namespace") != here["pid_namespace"]:
        return None  # its pid means another process here
    now = start_time(owner["pid"])
    if now is None:
        return True
    return owner.get("start_time") is not None and now != owner["start_time"]
