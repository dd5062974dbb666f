"""The production guard: refuses any drill endpoint that names a production host, network or DSN.

It judges addresses, not spellings. A host must be plain ASCII (a look-alike Unicode digit or
letter, or a fullwidth form, is refused: resolvers would normalise it into another host); every
numeric spelling a resolver accepts (``0``, ``127.1``, ``0x7f.1``, octal, one decimal integer,
IPv4-mapped IPv6, brackets, a trailing dot) is read as the address it means; a local wildcard
(``0.0.0.0``, ``::``) always is refused. Building a manifest stays lexical (no I/O); before checks
run, ``check_manifest(resolve=True)`` and ``pin`` resolve each name once through
``drillkit.routing.resolve`` and refuse when ANY address is production, and checks connect to the
address ``pin`` returned, so a second lookup cannot answer differently. Loopback is production
only when the spec lists it (``cidrs: [127.0.0.0/8, ::1/128]``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import posixpath
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from drillkit.exceptions import InvalidInputError, ProductionTargetRefusedError, RoutingError
from drillkit.routing import resolve as resolver
from drillkit.routing.connstr import DEFAULT_PORT, has_password, parse_dsn, redact_dsn
from drillkit.routing.manifest import (
    RESOLVED_BY,
    SERVICE_KINDS,
    manifest_services,
    normalize_endpoint,
    url_host_port,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_GLOB_RE = re.compile(r"^[a-z0-9*?\[\]!._:%-]+$")
# Forms that getaddrinfo reads as IPv4 without DNS (inet_aton): 10.1, 167772161, 0x0a.0.0.1.
_LEGACY_IPV4_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$")
# What is left of a host once normalised: plain ASCII names, IPv4/IPv6 spellings, a zone id.
_HOST_CHARS_RE = re.compile(r"^[a-z0-9._:%-]+$")
_SPEC_KEYS = frozenset({"hosts", "cidrs", "dsns"})
_FIX = (
    "point the service at the sandbox (fix its override or spec default); if this host is not "
    "production, remove it from the drill spec's production list"
)


def normalize_host(host: str) -> str:
    """Lowercase, no IPv6 brackets or trailing dot; socket directories are path-normalised."""
    if host.startswith("/"):
        return posixpath.normpath(host)
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def ip_candidates(host: str) -> tuple[IPAddress, ...]:
    """Every address a client could read ``host`` as, without DNS (empty for a host name)."""
    host = normalize_host(host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        mapped = getattr(ip, "ipv4_mapped", None)
        return (ip, mapped) if mapped is not None else (ip,)
    if not _LEGACY_IPV4_RE.match(host):
        return ()
    found: list[IPAddress] = []
    with contextlib.suppress(OSError):
        found.append(ipaddress.IPv4Address(socket.inet_aton(host)))
    parts = host.split(".")
    # 010.0.0.1 is octal to glibc but decimal to other resolvers: guard both readings.
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        with contextlib.suppress(ValueError):
            found.append(ipaddress.IPv4Address(".".join(str(int(p)) for p in parts)))
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class _DsnTarget:
    host: str
    ips: tuple[IPAddress, ...]
    port: int
    database: str | None
    label: str


def _string_list(spec: Mapping[str, Any], key: str) -> list[str]:
    values = spec.get(key) or []
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise InvalidInputError(f"production.{key} must be a list of strings, e.g. [{values!r}]")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"production.{key} entry {value!r} must be a non-empty string")
    return [v.strip() for v in values]


class ProductionGuard:
    """Production endpoints named by a drill spec; build with ``from_spec``."""

    def __init__(
        self, *, hosts: Iterable[str] = (), cidrs: Iterable[str] = (), dsns: Iterable[str] = ()
    ) -> None:
        self._patterns: list[str] = []
        self._networks: list[tuple[IPNetwork, str]] = []
        self._dsn_targets: list[_DsnTarget] = []
        self._spec: dict[str, list[str]] = {"hosts": [], "cidrs": [], "dsns": []}
        self._resolved: dict[str, tuple[IPAddress, ...]] = {}
        self._lock = threading.Lock()
        for entry in hosts:
            self._add_host(entry)
        for entry in cidrs:
            try:
                network = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise InvalidInputError(
                    f"production.cidrs entry {entry!r} is not an IPv4/IPv6 network; write it as "
                    "10.20.0.0/16 or fd00::/8"
                ) from exc
            self._networks.append((network, f"in production network {network}"))
            self._spec["cidrs"].append(str(network))
        for entry in dsns:
            self._add_dsn(entry)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> ProductionGuard:
        """Validate the spec's ``production`` block: ``hosts``, ``cidrs`` and ``dsns`` lists."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise InvalidInputError("production must be a mapping with hosts, cidrs and dsns lists")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise InvalidInputError(
                f"production: unknown key(s) {', '.join(map(str, unknown))}; use hosts, cidrs, dsns"
            )
        return cls(
            hosts=_string_list(spec, "hosts"),
            cidrs=_string_list(spec, "cidrs"),
            dsns=_string_list(spec, "dsns"),
        )

    def _add_host(self, entry: str) -> None:
        pattern = normalize_host(entry)
        ips = ip_candidates(pattern) if not any(c in pattern for c in "*?[") else ()
        if ips:
            # An address listed as a host must also match its mapped and bracketed spellings.
            for ip in ips:
                self._networks.append((ipaddress.ip_network(ip), f"the production host {entry}"))
        elif not _GLOB_RE.match(pattern) or not _balanced(pattern):
            raise InvalidInputError(
                f"production.hosts entry {entry!r} is not a host name or glob; use names such as "
                "db.prod.internal or *.prod.example.com ([...] classes must be closed)"
            )
        self._patterns.append(pattern)
        self._spec["hosts"].append(pattern)

    def _add_dsn(self, entry: str) -> None:
        target = parse_dsn(entry)
        label = redact_dsn(entry)
        if not target.hosts:
            raise InvalidInputError(
                f"production.dsns entry {label!r} names no host; add host=... (or @host in a URL)"
            )
        for host, port in target.hosts:
            host = normalize_host(host)
            self._dsn_targets.append(
                _DsnTarget(host, ip_candidates(host), port, target.database, label)
            )
        self._spec["dsns"].append(label)

    def addresses(self, host: str) -> tuple[IPAddress, ...]:
        """The addresses of ``host``: its own spelling, or one lookup remembered by this guard."""
        host = normalize_host(host)
        literal = ip_candidates(host)
        if literal:
            return literal
        with self._lock:
            known = self._resolved.get(host)
        if known is None:
            known = resolver.resolve(host)
            with self._lock:
                known = self._resolved.setdefault(host, known)
        return known

    def known(self, host: str) -> bool:
        """True when ``addresses(host)`` needs no lookup (a literal, or looked up already)."""
        host = normalize_host(host)
        with self._lock:
            return bool(ip_candidates(host)) or host in self._resolved

    def _addresses_or_none(self, host: str) -> tuple[IPAddress, ...]:
        try:
            return self.addresses(host)
        except resolver.UnresolvableHostError:
            return ()

    def pin(
        self, host: str, port: int, database: str | None = None, *, service: str
    ) -> tuple[str, ...]:
        """The addresses a check may connect to for ``host`` (in the resolver's order), each
        judged: a client tries them in turn, as it would the name's, and never the name.

        Raises ProductionTargetRefusedError when any address ``host`` has is production (or the
        host is no plain ASCII spelling), UnresolvableHostError when it has none.
        """
        reason = self._host_violation(host, port, database)
        addresses = () if reason else self.addresses(host)
        reason = reason or self._address_violation(normalize_host(host), addresses, port, database)
        if reason is not None:
            raise ProductionTargetRefusedError(
                f"service {service!r} would reach production: {reason}; {_FIX}", service=service
            )
        if ip_candidates(normalize_host(host)):
            # A literal means one address (glibc's reading); the others were judged as
            # readings other resolvers might make, not as places to connect to.
            return (str(addresses[0]),)
        return tuple(str(address) for address in addresses)

    def to_dict(self) -> dict[str, list[str]]:
        """The manifest's ``production`` block; DSN passwords are redacted."""
        return {key: list(values) for key, values in self._spec.items()}

    def _host_violation(
        self, host: str, port: int, database: str | None, *, resolve: bool = False
    ) -> str | None:
        raw, host = host, normalize_host(host)
        if host.startswith("/"):
            return self._dsn_violation(host, (), port, database, resolve=False)
        if not raw.strip().isascii() or not _HOST_CHARS_RE.match(host):
            return (
                f"host {raw!r} is not a plain ASCII host name or address, and a resolver could "
                "read it as another host (look-alike or fullwidth letters and digits); write it "
                "in ASCII (an internationalised name in punycode, xn--...)"
            )
        ips = ip_candidates(host)
        for pattern in self._patterns:
            if fnmatchcase(host, pattern):
                return f"host {host} matches production host {pattern!r}"
        if not ips and resolve:
            ips = self._addresses_or_none(host)
        return self._address_violation(host, ips, port, database, resolve=resolve)

    def _address_violation(
        self,
        host: str,
        ips: tuple[IPAddress, ...],
        port: int,
        database: str | None,
        *,
        resolve: bool = True,
    ) -> str | None:
        seen = f"{host} (address {{ip}})" if ips and not ip_candidates(host) else host
        for ip in ips:
            mapped = getattr(ip, "ipv4_mapped", None)
            for each in (ip, mapped) if mapped is not None else (ip,):
                if each.is_unspecified:
                    return (
                        f"address {seen.format(ip=ip)} is a local wildcard (0.0.0.0 or ::): "
                        "connecting to it reaches this host's own services"
                    )
                for network, label in self._networks:
                    if each.version == network.version and each in network:
                        return f"address {seen.format(ip=ip)} is {label}"
        return self._dsn_violation(host, ips, port, database, resolve=resolve)

    def _dsn_violation(
        self,
        host: str,
        ips: tuple[IPAddress, ...],
        port: int,
        database: str | None,
        *,
        resolve: bool,
    ) -> str | None:
        for target in self._dsn_targets:
            theirs = set(target.ips)
            if resolve and not theirs and ips and not target.host.startswith("/"):
                theirs = set(self._addresses_or_none(target.host))
            same_host = target.host == host or bool(theirs & set(ips))
            same_db = target.database is None or database is None or target.database == database
            if same_host and target.port == port and same_db:
                return f"{host}:{port} is the server of production DSN {target.label}"
        return None

    def violation(
        self, kind: str, endpoint: Any, *, service: str, resolve: bool = False
    ) -> str | None:
        """Why ``endpoint`` is production, or None; malformed endpoints raise InvalidInputError.

        With ``resolve`` a host name is looked up (once per guard) and every address judged; a
        name that does not resolve is judged by its spelling here (its check then errors).
        """
        if kind not in SERVICE_KINDS:
            raise InvalidInputError(
                f"service {service!r} has kind {kind!r}; use one of {', '.join(SERVICE_KINDS)}"
            )
        where = f"service {service!r} endpoint"
        endpoint = normalize_endpoint(kind, endpoint, where=where, strict=False)
        if kind == "http":
            host, port = url_host_port(endpoint["url"], where=where)
            return self._host_violation(host, port, None, resolve=resolve)
        return self._host_violation(
            endpoint["host"],
            endpoint.get("port", DEFAULT_PORT),
            endpoint.get("database"),
            resolve=resolve,
        )

    def check_endpoint(self, service: str, kind: str, endpoint: Any) -> None:
        """Raise ProductionTargetRefusedError if ``endpoint`` is production."""
        reason = self.violation(kind, endpoint, service=service)
        if reason is not None:
            raise ProductionTargetRefusedError(
                f"service {service!r} would reach production: {reason}; {_FIX}", service=service
            )

    def check_manifest(self, manifest: Any, *, resolve: bool = False) -> None:
        """Re-check a manifest from XCom: every endpoint and every DSN, against this guard.

        ``resolve``: judge every address each host name resolves to (see ``violation``).
        """
        offenders: dict[str, str] = {}
        for name, entry in manifest_services(manifest).items():
            if not isinstance(entry, Mapping) or entry.get("resolved_by") not in RESOLVED_BY:
                raise RoutingError(
                    f"routing manifest entry {name!r} is malformed; rebuild it with "
                    "build_manifest()",
                    code="MANIFEST_INVALID",
                )
            reason = self.violation(
                entry.get("kind"), entry.get("endpoint"), service=name, resolve=resolve
            )
            dsn = entry.get("dsn")
            if entry.get("kind") == "postgres" or dsn is not None:
                if not isinstance(dsn, str) or has_password(dsn):
                    raise RoutingError(
                        f"routing manifest entry {name!r} has a missing DSN or one with a "
                        "password; rebuild it with build_manifest(), which never stores secrets",
                        code="MANIFEST_INVALID",
                    )
                target = parse_dsn(dsn)
                if not target.hosts:
                    # libpq would fall back to its default socket: not provably the sandbox.
                    reason = reason or "its DSN names no host, so libpq would use its default"
                for host, port in target.hosts:
                    reason = reason or self._host_violation(
                        host, port, target.database, resolve=resolve
                    )
            if reason:
                offenders[name] = reason
        if offenders:
            raise ProductionTargetRefusedError(
                "routing manifest reaches production: "
                + "; ".join(f"service {n!r}: {r}" for n, r in offenders.items())
                + f". For each: {_FIX}",
                services=sorted(offenders),
            )


def _balanced(pattern: str) -> bool:
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                return False
            depth = 1
        elif char == "]" and depth:
            depth = 0
    return depth == 0
