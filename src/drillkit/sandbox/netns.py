"""Start the sandbox server in a network namespace of its own: it can reach nothing but itself.

As root, ``unshare --net`` gives the server a namespace with only a loopback (brought up, so a
TCP port can be relayed in); ``setpriv`` then drops to the PostgreSQL OS user. As another user,
a user namespace mapped onto that same user (``unshare --user --map-current-user --net``) where
the kernel allows it, without a TCP port (nothing could bring the loopback up). Checks reach the
server through its unix socket, which works across namespaces.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

from drillkit import pgbin
from drillkit.exceptions import SandboxError

_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "LC_ALL": "C", "HOME": "/tmp"}
_LO_UP = 'ip link set lo up || exit 97; exec "$@"'


@dataclass(frozen=True)
class Namespace:
    """How a sandbox server is started: ``prefix`` runs before the binary, or None (open)."""

    prefix: tuple[str, ...] | None
    detail: str
    tcp: bool  # a TCP port can be relayed into it


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, env=_ENV).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def available() -> Namespace:
    """Which namespace this process can give a server (probed once per process)."""
    unshare = shutil.which("unshare", path=_ENV["PATH"])
    if unshare is None:
        return Namespace(None, "util-linux unshare is not installed", tcp=False)
    user = pgbin.os_user()
    if os.geteuid() == 0 and user is not None:
        setpriv = shutil.which("setpriv", path=_ENV["PATH"])
        ip = shutil.which("ip", path=_ENV["PATH"])
        if setpriv is None or not _works([unshare, "--net", "--", "true"]):
            return Namespace(None, "unshare --net failed (no CAP_SYS_ADMIN here?)", tcp=False)
        drop = (setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--")
        if ip is None:
            return Namespace(
                (unshare, "--net", "--", *drop), "network namespace (loopback down)", tcp=False
            )
        prefix = (unshare, "--net", "--", "/bin/sh", "-c", _LO_UP, "sh", *drop)
        return Namespace(prefix, "network namespace (own loopback only)", tcp=True)
    userns = (unshare, "--user", "--map-current-user", "--net", "--")
    if _works([*userns, "true"]):
        return Namespace(userns, "user + network namespace (no interface up)", tcp=False)
    return Namespace(None, "the kernel refuses an unprivileged user namespace here", tcp=False)


def run_in(
    namespace: Namespace,
    installation: pgbin.Installation,
    name: str,
    args: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``installation``'s binary ``name`` inside ``namespace`` (which drops to the server
    user); ``env`` adds variables (a catalog's credentials) to the fixed environment."""
    argv = [*(namespace.prefix or ()), str(installation.binary(name)), *args]
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**_ENV, **(env or {})},
            cwd="/",
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{name} did not finish within {timeout:.0f} s") from exc
