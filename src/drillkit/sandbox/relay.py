"""Relay a loopback TCP port into a sandbox's network namespace (``sandbox.port``).

A small process of its own: it binds 127.0.0.1:PORT in the host's namespace, then enters the
sandbox server's network namespace (``setns``; the listening socket stays where it was bound),
drops to the PostgreSQL OS user, and pipes each connection to the server's own loopback listener,
where pg_hba asks for a scram password. It lives as long as the postmaster it serves: it exits
when that process is gone, and teardown stops it (pid and start time are in the sandbox label).

Run as ``python -m drillkit.sandbox.relay PORT POSTMASTER_PID UID GID``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from drillkit.exceptions import SandboxError

CLONE_NEWNET = 0x40000000
_MARK = "drillkit.sandbox.relay"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def start(*, port: int, postmaster: int, uid: int, gid: int, log: Path) -> dict[str, Any]:
    """Start the relay; return its label entry once it listens (raise if it cannot)."""
    with log.open("ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", _MARK, str(port), str(postmaster), str(uid), str(gid)],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the task that provisioned the sandbox
            cwd="/",
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    if line != "ready":
        proc.kill()
        proc.wait()
        raise SandboxError(
            f"the TCP relay for 127.0.0.1:{port} did not start ({line or 'no answer'}); see {log}",
            code="SANDBOX_RELAY_FAILED",
        )
    return {"pid": proc.pid, "start_time": start_time(proc.pid), "port": port}


def stop(entry: dict[str, Any] | None) -> bool:
    """Stop the relay a label names, only if that pid is still that relay."""
    if not entry or not isinstance(entry.get("pid"), int):
        return False
    pid = entry["pid"]
    if start_time(pid) != entry.get("start_time"):
        return False  # gone, or the pid now belongs to another process
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if _MARK.encode() not in cmdline:
            return False
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    for _ in range(50):
        if start_time(pid) is None:
            break
        time.sleep(0.02)
    return True


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
    _pipe(client, upstream)


def _watch(postmaster: int, started: str | None) -> None:
    while start_time(postmaster) == started and started is not None:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str]) -> int:
    port, postmaster, uid, gid = (int(a) for a in argv)
    started = start_time(postmaster)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))  # in the host's namespace
    listener.listen(64)
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/proc/{postmaster}/ns/net", "rb") as netns:
        if libc.setns(netns.fileno(), CLONE_NEWNET) != 0:
            print(f"setns failed: {os.strerror(ctypes.get_errno())}", flush=True)
            return 1
    if os.geteuid() == 0:
        # Whatever is imported lazily must be loaded now: the interpreter's files may not be
        # readable by the PostgreSQL OS user (a virtualenv under /root).
        import encodings.idna  # noqa: F401

        socket.getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    threading.Thread(target=_watch, args=(postmaster, started), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    os.close(1)
    while True:
        client, _addr = listener.accept()
        threading.Thread(target=_serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
