"""Secrets out of anything shown or stored: reports, telemetry events, pages and downloads.

Key names that hold secrets, passwords inside connection strings, and the MAC of a signed drill
context (a bearer ticket) become ``***``. Idempotent, so readers can apply it again.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

REDACTED = "***"
_SECRET_NAMES = r"password|passwd|pwd|secret|token|api_?key|private_?key|signing_?key|credentials?"
_SECRET_KEY_RE = re.compile(rf"(^|_|ssl|pg)({_SECRET_NAMES})$", re.IGNORECASE)
_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
# libpq key=value (and shell/env) password keys: password, sslpassword, PGPASSWORD, pwd...
_KV_KEY_RE = re.compile(
    r"(?<![\w%./-])((?:pg_?)?(?:ssl)?(?:password|passwd|pwd))(\s*=\s*)", re.IGNORECASE
)
# a quoted secret key in JSON, a dict's repr or YAML: "password": ..., 'api_key': ...
_QUOTED_KEY_RE = re.compile(
    rf"([\"'])((?:[\w-]*_|ssl|pg)?(?:{_SECRET_NAMES}))\1(\s*[:=]\s*)", re.IGNORECASE
)
# a URL query parameter, whose name may be percent-encoded (libpq decodes it: pass%77ord)
_QUERY_RE = re.compile(r"([?&])([^=&#\s]+)=([^&#\s]*)")
# A signed drill context: keep who and when, drop the MAC that makes it a bearer ticket.
_CONTEXT_MAC_RE = re.compile(r"\b(v1\.[0-9a-f-]{36}\.[a-z0-9-]+\.\d+\.\d+\.)[A-Za-z0-9_-]{43}\b")


def _value_end(text: str, i: int, *, stop: str = "") -> int:
    """End of the value starting at ``i``: a quoted one (libpq: backslash escapes inside; an
    unterminated quote runs to the end) or a bare one up to whitespace or ``stop``, where a
    backslash escapes the next character (libpq: ``a\\ b`` is one value)."""
    n = len(text)
    if i < n and text[i] in "'\"":
        quote, j = text[i], i + 1
        while j < n:
            if text[j] == "\\":
                j += 2
            elif text[j] == quote:
                return j + 1
            else:
                j += 1
        return n
    j = i
    while j < n and not text[j].isspace() and text[j] not in stop:
        j += 2 if text[j] == "\\" else 1
    return min(j, n)


def _redact_values(text: str, key_re: re.Pattern[str], *, stop: str = "") -> str:
    """Replace the value after each ``key_re`` match, keeping its quotes."""
    out: list[str] = []
    pos = 0
    for match in key_re.finditer(text):
        if match.start() < pos:
            continue  # inside a value already replaced
        start = match.end()
        end = _value_end(text, start, stop=stop)
        quote = text[start] if start < len(text) and text[start] in "'\"" else ""
        out.append(text[pos:start] + f"{quote}{REDACTED}{quote}")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_query(match: re.Match[str]) -> str:
    sep, key, _value = match.groups()
    if _SECRET_KEY_RE.search(unquote(key)):
        return f"{sep}{key}={REDACTED}"
    return match.group(0)


def redact_text(text: str) -> str:
    """Every secret in free text (logs, error messages, DSNs of any form) as ``***``.

    Understands libpq key=value quoting (``password='it\\'s'``, ``password=a\\ b``), URLs
    (user info, query parameters with percent-encoded names), quoted keys of JSON or a dict's
    repr, ``PGPASSWORD=...``, and the MAC of a signed drill context. Idempotent.
    """
    text = _URL_PASSWORD_RE.sub(rf"\g<1>{REDACTED}@", text)
    text = _redact_values(text, _KV_KEY_RE)
    text = _redact_values(text, _QUOTED_KEY_RE, stop=",}]")
    text = _QUERY_RE.sub(_redact_query, text)
    return _CONTEXT_MAC_RE.sub(rf"\g<1>{REDACTED}", text)


_redact_text = redact_text  # the one path for raw text; kept under its old name for callers


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-named field and every password or MAC in text
    replaced by ``***``. Idempotent: readers of stored reports apply it again."""
    if isinstance(value, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and _SECRET_KEY_RE.search(k) and v not in (None, "")
            else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    return value
