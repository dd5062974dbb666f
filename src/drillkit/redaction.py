"""Secrets out of anything shown or stored: reports, telemetry events, pages and downloads.

Key names that hold secrets, passwords inside connection strings, and the MAC of a signed drill
context (a bearer ticket) become ``***``. Idempotent, so readers can apply it again.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
_SECRET_KEY_RE = re.compile(
    r"(^|_)(password|passwd|pwd|secret|token|api_?key|private_?key|signing_?key|credentials?)$",
    re.IGNORECASE,
)
_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_KV_PASSWORD_RE = re.compile(r"\b((?:ssl)?password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
# A signed drill context: keep who and when, drop the MAC that makes it a bearer ticket.
_CONTEXT_MAC_RE = re.compile(r"\b(v1\.[0-9a-f-]{36}\.[a-z0-9-]+\.\d+\.\d+\.)[A-Za-z0-9_-]{43}\b")


def _redact_text(text: str) -> str:
    text = _URL_PASSWORD_RE.sub(rf"\g<1>{REDACTED}@", text)
    text = _KV_PASSWORD_RE.sub(rf"\g<1>{REDACTED}", text)
    return _CONTEXT_MAC_RE.sub(rf"\g<1>{REDACTED}", text)


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
