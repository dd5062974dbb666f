"""The one place drillkit turns a host name into addresses (getaddrinfo: /etc/hosts, then DNS).

The production guard judges the addresses found here, and checks connect to the address that
was judged: a second lookup (a short DNS TTL, a changed /etc/hosts) cannot send a check
elsewhere. Tests replace ``lookup`` to stand in for a resolver.
"""

from __future__ import annotations

import ipaddress
import socket

from drillkit.exceptions import CheckError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HOST_UNRESOLVABLE = "HOST_UNRESOLVABLE"


class UnresolvableHostError(CheckError):
    """A name no resolver could answer: the check cannot run (an error, never a pass)."""

    code = HOST_UNRESOLVABLE


def lookup(host: str) -> list[str]:
    """Every address ``host`` resolves to, as the C library's resolver answers a client."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve(host: str) -> tuple[IPAddress, ...]:
    """``lookup(host)`` as addresses, deduplicated in the resolver's order; raises when none."""
    try:
        answers = lookup(host)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise UnresolvableHostError(
            f"the host name {host!r} could not be resolved ({exc}): drillkit did not connect. "
            "Fix the endpoint (or the DNS / /etc/hosts entry it relies on)"
        ) from exc
    found: list[IPAddress] = []
    for answer in answers:
        try:
            found.append(ipaddress.ip_address(answer.partition("%")[0]))
        except ValueError:
            continue
    if not found:
        raise UnresolvableHostError(
            f"the host name {host!r} resolved to no address drillkit can judge: drillkit did "
            "not connect. Fix the endpoint (or the DNS / /etc/hosts entry it relies on)"
        )
    return tuple(dict.fromkeys(found))
