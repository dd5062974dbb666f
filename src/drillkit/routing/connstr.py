"""Connection strings pointed at a sandbox: SQLAlchemy/libpq URLs and libpq key=value DSNs.

Everything but the target (host, port or socket directory, database) is kept; passwords are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from drillkit.exceptions import InvalidInputError

DEFAULT_PORT = 5432
REDACTED = "***"

_URL_RE = re.compile(r"^(postgres(?:ql)?)(\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9._:%-]+$")
_SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Keys that choose where libpq connects: all of them are replaced together, or a stale hostaddr
# would still send the drill to production.
_TARGET_KEYS = frozenset({"host", "hostaddr", "port"})
# Never quote-free in key=value form: libpq ends an unquoted value at whitespace, treats a
# backslash as an escape and a leading quote as a quoted value.
_NEEDS_QUOTES_RE = re.compile(r"[ \t\n\r\f\v'\\]")
# libpq splits on C isspace(), which is ASCII only.
_SPACE = frozenset(" \t\n\r\f\v")
_SECRET_KEYS = frozenset({"password", "sslpassword"})

_DSN_FORMS = "postgresql://user@host:5432/db or host=... port=... dbname=..."


@dataclass(frozen=True)
class PgTarget:
    """Where a DSN points: ``(host, port)`` pairs (hostaddr entries included) and the database."""

    hosts: tuple[tuple[str, int], ...]
    database: str | None
    user: str | None


@dataclass(frozen=True)
class _Url:
    scheme: str
    user_raw: str | None
    password_raw: str | None
    hosts_raw: str
    path_raw: str | None
    params: tuple[tuple[str, str, str], ...]  # (decoded key, raw "k=v" piece, decoded value)


def is_url(dsn: str) -> bool:
    """True for ``postgresql://``, ``postgresql+driver://`` and ``postgres://`` URLs."""
    return bool(_URL_RE.match(dsn))


def validate_host(value: Any, *, where: str) -> str:
    """A TCP host (IPv6 brackets removed) or a unix-socket directory (starts with ``/``)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"{where}: host must be a non-empty string (a name, IP or /socket/dir)"
        )
    if _CONTROL_RE.search(value) or value != value.strip() or "," in value:
        raise InvalidInputError(
            f"{where}: host contains whitespace, a control character or a comma; "
            "give exactly one host name, IP address or socket directory"
        )
    if value.startswith("/"):
        return value.rstrip("/") or "/"
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not _HOSTNAME_RE.match(host):
        raise InvalidInputError(
            f"{where}: host {value!r} is not a host name, IP address or absolute socket directory; "
            "use e.g. db.internal, 10.0.0.5, ::1 or /tmp/sandbox/run"
        )
    return host


def validate_port(value: Any, *, where: str) -> int:
    """A TCP port as an int; digit strings are accepted because Airflow params arrive as text."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInputError(f"{where}: port {value!r} is not a number from 1 to 65535")
    return value


def parse_keyvalue(dsn: str) -> list[tuple[str, str]]:
    """Parse a libpq key=value DSN exactly as libpq does, quotes and backslash escapes included.

    Error messages give a character offset, never a fragment: the text may hold a password.
    """
    if "://" in dsn:
        raise InvalidInputError(
            f"DSN is a URL of a scheme other than postgresql://; use {_DSN_FORMS}"
        )
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n:
            break
        start = i
        while i < n and dsn[i] != "=" and dsn[i] not in _SPACE:
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n or dsn[i] != "=":
            raise InvalidInputError(
                f"key=value DSN: missing '=' after the key at character {start}; "
                f"write key=value pairs separated by spaces and quote values with spaces as 'a b'"
            )
        if not _KEY_RE.match(key):
            raise InvalidInputError(
                f"key=value DSN: the key at character {start} is not a libpq parameter name; "
                "keys are letters, digits and _ (e.g. sslmode)"
            )
        i += 1
        while i < n and dsn[i] in _SPACE:
            i += 1
        chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise InvalidInputError(
                        f"key=value DSN: the quoted value of '{key}' has no closing quote; "
                        r"end it with ' and escape quotes inside as \' and backslashes as \\"
                    )
                if dsn[i] == "\\" and i + 1 < n:
                    chars.append(dsn[i + 1])
                    i += 2
                elif dsn[i] == "'":
                    i += 1
                    break
                else:
                    chars.append(dsn[i])
                    i += 1
        else:
            while i < n and dsn[i] not in _SPACE:
                if dsn[i] == "\\":
                    # libpq drops a trailing lone backslash of an unquoted value.
                    chars.append(dsn[i + 1 : i + 2])
                    i += 2
                else:
                    chars.append(dsn[i])
                    i += 1
        pairs.append((key, "".join(chars)))
    if not pairs:
        raise InvalidInputError(f"DSN is empty: give a connection string ({_DSN_FORMS})")
    return pairs


def format_keyvalue(pairs: list[tuple[str, str]]) -> str:
    """Render key=value pairs so that libpq parses them back to the same values."""
    parts = []
    for key, value in pairs:
        if not _KEY_RE.match(key):
            raise InvalidInputError(f"key=value DSN: {key!r} is not a libpq parameter name")
        if value == "" or _NEEDS_QUOTES_RE.search(value):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _decode(raw: str, *, what: str) -> str:
    if _BAD_PERCENT_RE.search(raw):
        raise InvalidInputError(
            f"URL DSN: invalid percent-encoding in the {what}; write a literal % as %25"
        )
    return unquote(raw)


def _split_url(dsn: str) -> _Url:
    match = _URL_RE.match(dsn)
    if match is None:
        raise InvalidInputError(
            f"DSN is not a postgresql:// URL; use {_DSN_FORMS}",
        )
    rest = dsn[match.end() :]
    if "#" in rest or _CONTROL_RE.search(rest) or " " in rest:
        raise InvalidInputError(
            "URL DSN contains '#', a space or a control character; percent-encode them "
            "(# as %23, space as %20)"
        )
    # libpq's rule: credentials end at the first '@' that comes before any '/'.
    user_raw = password_raw = None
    slash, at = rest.find("/"), rest.find("@")
    if at != -1 and (slash == -1 or at < slash):
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_raw, sep, pw = userinfo.partition(":")
        password_raw = pw if sep else None
    elif "@" in rest.partition("?")[0]:
        raise InvalidInputError(
            "URL DSN is ambiguous: an '@' follows the first '/'; percent-encode '/' in the "
            "password as %2F (or '@' in the database name as %40)"
        )
    end = len(rest)
    for sep_char in "/?":
        pos = rest.find(sep_char)
        if pos != -1:
            end = min(end, pos)
    hosts_raw, rest = rest[:end], rest[end:]
    path_raw = None
    if rest.startswith("/"):
        path_raw, _, query = rest[1:].partition("?")
    else:
        query = rest[1:]
    params = []
    for piece in query.split("&") if query else []:
        key_raw, sep, value_raw = piece.partition("=")
        if not sep or not key_raw:
            raise InvalidInputError(
                "URL DSN: a query parameter is not key=value; separate parameters with '&'"
            )
        key = _decode(key_raw, what="query")
        params.append((key, piece, _decode(value_raw, what=f"value of '{key}'")))
    for what, raw in (("user name", user_raw), ("password", password_raw), ("path", path_raw)):
        if raw is not None:
            _decode(raw, what=what)
    _split_hosts(hosts_raw)
    return _Url(match.group(0)[:-3], user_raw, password_raw, hosts_raw, path_raw, tuple(params))


def _split_hosts(hosts_raw: str) -> list[tuple[str, str]]:
    """Netloc host list -> [(decoded host, port text)], brackets removed from IPv6 literals."""
    result = []
    for item in hosts_raw.split(",") if hosts_raw else []:
        if item.startswith("["):
            close = item.find("]")
            if close == -1:
                raise InvalidInputError(
                    "URL DSN: an IPv6 host has no closing ']'; write it as [::1]:5432"
                )
            host, tail = item[1:close], item[close + 1 :]
            if tail and not tail.startswith(":"):
                raise InvalidInputError("URL DSN: only ':port' may follow an IPv6 host")
            port = tail[1:]
        else:
            host, _, port = item.partition(":")
        if port and not port.isdigit():
            raise InvalidInputError("URL DSN: a port is not a number; ports are 1-65535")
        result.append((_decode(host, what="host"), port))
    return result


def _ports(values: list[str], count: int) -> list[int]:
    if not values:
        return [DEFAULT_PORT] * count
    if len(values) == 1 and count > 1:
        values = values * count
    if len(values) != count:
        raise InvalidInputError(
            f"DSN names {count} host(s) but {len(values)} port(s); give one port or one per host"
        )
    ports = []
    for text in values:
        if text and (not text.isdigit() or not 1 <= int(text) <= 65535):
            raise InvalidInputError("DSN: a port is not a number from 1 to 65535; fix the port")
        ports.append(int(text) if text else DEFAULT_PORT)
    return ports


def parse_dsn(dsn: str) -> PgTarget:
    """Where a URL or key=value DSN connects (the production guard uses this)."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidInputError(f"DSN is empty: give a connection string ({_DSN_FORMS})")
    values: dict[str, str] = {}
    if is_url(dsn):
        url = _split_url(dsn)
        netloc = _split_hosts(url.hosts_raw)
        if netloc:
            values["host"] = ",".join(host for host, _ in netloc)
            if any(port for _, port in netloc):
                values["port"] = ",".join(port for _, port in netloc)
        if url.user_raw:
            values["user"] = unquote(url.user_raw)
        if url.path_raw:
            values["dbname"] = unquote(url.path_raw)
        values.update({key: value for key, _, value in url.params})  # query wins, as in libpq
    else:
        values.update(parse_keyvalue(dsn))
    names = {
        key: [h.strip() for h in values[key].split(",")] if values.get(key) else []
        for key in ("host", "hostaddr")
    }
    if names["host"] and names["hostaddr"] and len(names["host"]) != len(names["hostaddr"]):
        raise InvalidInputError(
            f"DSN names {len(names['host'])} host(s) but {len(names['hostaddr'])} hostaddr(s); "
            "give one hostaddr per host or drop hostaddr"
        )
    count = max(len(names["host"]), len(names["hostaddr"]))
    ports = _ports(
        [p.strip() for p in values["port"].split(",")] if "port" in values else [], count
    )
    # hostaddr is where libpq really connects; host may only name it for TLS and auth.
    hosts = [
        (name, port)
        for key in ("host", "hostaddr")
        for name, port in zip(names[key], ports, strict=False)
        if name
    ]
    return PgTarget(tuple(hosts), values.get("dbname") or None, values.get("user") or None)


def _refuse_service(keys: list[str]) -> None:
    if "service" in keys:
        raise InvalidInputError(
            "DSN uses service=...: its pg_service.conf entry may set hostaddr and send the drill "
            "to production; spell the parameters out in the DSN, or write a sandbox entry with "
            "drillkit.routing.connstr.pg_service_entry() and use that service name"
        )


def _endpoint_target(endpoint: Mapping[str, Any]) -> tuple[str, int | None, str | None]:
    if not isinstance(endpoint, Mapping):
        raise InvalidInputError("endpoint must be a mapping with host, port and database")
    host = validate_host(endpoint.get("host"), where="endpoint")
    port = endpoint.get("port")
    port = None if port is None else validate_port(port, where="endpoint")
    database = endpoint.get("database")
    if database is not None and (not isinstance(database, str) or not database):
        raise InvalidInputError("endpoint: database must be a non-empty string")
    return host, port, database


def _url_netloc_host(host: str, port: int | None) -> str:
    text = f"[{host}]" if ":" in host else host
    return text if port is None else f"{text}:{port}"


def _query_value(value: str) -> str:
    # '+' is encoded because SQLAlchemy decodes it as a space and libpq does not.
    return quote(value, safe="/")


def override_dsn(dsn: str, endpoint: Mapping[str, Any], *, keep_password: bool = False) -> str:
    """Point a URL or key=value DSN at ``endpoint`` (host, optional port and database).

    User, options, sslmode and every other parameter are kept; password and sslpassword are
    dropped unless ``keep_password`` (a drill must not carry production credentials).
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidInputError(f"DSN is empty: give a connection string ({_DSN_FORMS})")
    host, port, database = _endpoint_target(endpoint)
    drop = set(_TARGET_KEYS)
    if database is not None:
        drop.add("dbname")
    if not keep_password:
        drop |= _SECRET_KEYS
    if not is_url(dsn):
        pairs = parse_keyvalue(dsn)
        _refuse_service([key for key, _ in pairs])
        target = [("host", host)] + ([("port", str(port))] if port is not None else [])
        target += [("dbname", database)] if database is not None else []
        return format_keyvalue(target + [(k, v) for k, v in pairs if k not in drop])
    url = _split_url(dsn)
    _refuse_service([key for key, _, _ in url.params])
    userinfo = url.user_raw or ""
    if keep_password and url.password_raw is not None:
        userinfo += ":" + url.password_raw
    elif url.user_raw is None:
        userinfo = None
    pieces = [piece for key, piece, _ in url.params if key not in drop]
    if host.startswith("/"):
        netloc_host = ""
        target = [f"host={_query_value(host)}"] + ([f"port={port}"] if port is not None else [])
        pieces = target + pieces
    else:
        netloc_host = _url_netloc_host(host, port)
    path = f"/{quote(database, safe='')}" if database is not None else ""
    if database is None and url.path_raw is not None:
        path = f"/{url.path_raw}"
    netloc = f"{userinfo}@{netloc_host}" if userinfo is not None else netloc_host
    query = f"?{'&'.join(pieces)}" if pieces else ""
    return f"{url.scheme}://{netloc}{path}{query}"


def redact_dsn(dsn: str) -> str:
    """The same DSN with every password replaced by ``***`` (safe for logs and XCom)."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidInputError(f"DSN is empty: give a connection string ({_DSN_FORMS})")
    if not is_url(dsn):
        pairs = parse_keyvalue(dsn)
        return format_keyvalue([(k, REDACTED if k in _SECRET_KEYS else v) for k, v in pairs])
    url = _split_url(dsn)
    userinfo = url.user_raw
    if url.password_raw is not None:
        userinfo = f"{url.user_raw or ''}:{REDACTED}"
    pieces = [
        f"{piece.partition('=')[0]}={REDACTED}" if key in _SECRET_KEYS else piece
        for key, piece, _ in url.params
    ]
    netloc = f"{userinfo}@{url.hosts_raw}" if userinfo is not None else url.hosts_raw
    path = f"/{url.path_raw}" if url.path_raw is not None else ""
    query = f"?{'&'.join(pieces)}" if pieces else ""
    return f"{url.scheme}://{netloc}{path}{query}"


def has_password(dsn: str) -> bool:
    """True when a DSN carries a password or sslpassword (URL user info or a parameter)."""
    if is_url(dsn):
        url = _split_url(dsn)
        return url.password_raw is not None or any(k in _SECRET_KEYS for k, _, _ in url.params)
    return any(key in _SECRET_KEYS for key, _ in parse_keyvalue(dsn))


def build_url(
    endpoint: Mapping[str, Any], *, user: str, database: str, driver: str | None = None
) -> str:
    """A password-less URL for ``endpoint``; a socket directory goes in the ``host`` parameter."""
    host, port, _ = _endpoint_target(endpoint)
    if driver is not None and not re.fullmatch(r"[A-Za-z0-9_]+", driver):
        raise InvalidInputError(f"driver {driver!r} is not a driver name such as psycopg2")
    scheme = "postgresql" if driver is None else f"postgresql+{driver}"
    userinfo = quote(user, safe="")
    path = quote(database, safe="")
    if host.startswith("/"):
        query = f"host={_query_value(host)}" + (f"&port={port}" if port is not None else "")
        return f"{scheme}://{userinfo}@/{path}?{query}"
    return f"{scheme}://{userinfo}@{_url_netloc_host(host, port)}/{path}"


def env_vars(endpoint: Mapping[str, Any], *, user: str, database: str) -> dict[str, str]:
    """libpq environment variables plus ``DATABASE_URL`` (SQLAlchemy, psycopg2 driver)."""
    host, port, _ = _endpoint_target(endpoint)
    env = {"PGHOST": host} | ({"PGPORT": str(port)} if port is not None else {})
    env |= {"PGDATABASE": database, "PGUSER": user}
    env["DATABASE_URL"] = build_url(endpoint, user=user, database=database, driver="psycopg2")
    return env


def pg_service_entry(name: str, endpoint: Mapping[str, Any], *, user: str, database: str) -> str:
    """One ``pg_service.conf`` section; libpq reads its values verbatim, so none may span lines."""
    if not isinstance(name, str) or not _SERVICE_NAME_RE.match(name):
        raise InvalidInputError(
            f"service name {name!r} is not usable in pg_service.conf; use letters, digits, _ . -"
        )
    host, port, _ = _endpoint_target(endpoint)
    lines = [f"[{name}]", f"host={host}"]
    if port is not None:
        lines.append(f"port={port}")
    lines += [f"dbname={database}", f"user={user}"]
    for line in lines[1:]:
        value = line.partition("=")[2]
        if not value or value != value.strip() or _CONTROL_RE.search(value):
            raise InvalidInputError(
                f"pg_service.conf value for {line.partition('=')[0]} is empty or has leading or "
                "trailing whitespace or a control character, which the file format cannot hold"
            )
    return "\n".join(lines) + "\n"
