"""One-line answers when Airflow refuses a drill run's configuration at creation.

Airflow validates a run's conf against the DAG's params (JSON schema) when the run is created
(``POST /api/v2/dags/{dag_id}/dagRuns``, which the Trigger form calls too) and answers 400 with
the validator's text: the message, then the whole failing schema and the instance. For a drill,
this root middleware (a plugin's ``fastapi_root_middlewares``) keeps the refusal and replaces that
dump with one line naming the parameter, the value and the fix. It changes nothing else: the
refusal itself (status, which values are refused) is Airflow's, and it only reads what Airflow
answered after authenticating the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRIGGER_PATH = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
_INVALID = re.compile(r"^Invalid input for param (?P<param>[A-Za-z0-9_]+): (?P<rest>.*)$", re.S)
TARGET_EXAMPLES = "2026-11-21T08:00:00Z, 2026-11-21 08:00:00.25+02:00 or 2026-11-21T08:00:30 UTC"


def one_line(detail: str, conf: Any) -> str | None:
    """The one-line message for Airflow's param refusal ``detail``; None when it is not one."""
    match = _INVALID.match(detail)
    if not match:
        return None
    param, rest = match.group("param"), match.group("rest")
    if param == "target_time":
        value = conf.get("target_time") if isinstance(conf, dict) else None
        return f"target_time {target_problem(value)}"
    first = rest.strip().splitlines()[0] if rest.strip() else "invalid value"
    return f"Invalid input for param {param}: {first}"


def target_problem(value: Any) -> str:
    """Why ``value`` is no recovery target, in the words of drillkit's own parser."""
    from drillkit.exceptions import InvalidInputError
    from drillkit.timeutil import parse_target_time

    if not isinstance(value, str):
        return f"must be a text timestamp or empty, not {value!r}"
    try:
        parse_target_time(value)
    except InvalidInputError as exc:
        reason = str(exc).removeprefix("target time ")
        return f"{reason} (examples: {TARGET_EXAMPLES})"
    return f"{value!r} is refused: use ISO 8601 with a zone, e.g. {TARGET_EXAMPLES}"


def is_drill_dag(dag_id: str) -> bool:
    """Whether ``dag_id`` is a restore drill (the DAG factory tags each one)."""
    from airflow.models.dag import DagTag
    from airflow.utils.session import create_session
    from drillkit.plugins.history import RESTORE_DRILL_TAG
    from sqlalchemy import select

    with create_session() as session:
        found = session.scalar(
            select(DagTag.dag_id).where(DagTag.dag_id == dag_id, DagTag.name == RESTORE_DRILL_TAG)
        )
    return found is not None


class DrillConfErrors:
    """ASGI middleware: rewrite a drill trigger's 400 param refusal into one line."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        match = TRIGGER_PATH.search(str(scope.get("path", "")))
        if match is None:
            await self.app(scope, receive, send)
            return
        # The request is read first (a trigger's body is small) and replayed to Airflow as is.
        body = bytearray()
        pending: list[Message] = []
        while True:
            message = await receive()
            pending.append(message)
            body.extend(message.get("body", b""))
            if message.get("type") != "http.request" or not message.get("more_body"):
                break

        async def reading() -> Message:
            return pending.pop(0) if pending else await receive()

        held: list[Message] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 400:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                for out in await _rewritten(match.group("dag_id"), bytes(body), held):
                    await send(out)
                held.clear()

        await self.app(scope, reading, sending)


async def _rewritten(dag_id: str, request: bytes, held: list[Message]) -> list[Message]:
    """The held 400 response, its detail made one line when it is a drill's param refusal."""
    import anyio

    answer = b"".join(m.get("body", b"") for m in held[1:])
    try:
        detail = json.loads(answer)["detail"]
        conf = (json.loads(request or b"{}") or {}).get("conf")
    except (ValueError, KeyError, TypeError, AttributeError):
        return held
    line = one_line(detail, conf) if isinstance(detail, str) else None
    if line is None or not await anyio.to_thread.run_sync(is_drill_dag, dag_id):
        return held
    payload = json.dumps({"detail": line}).encode()
    start = dict(held[0])
    start["headers"] = [
        (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
    ] + [(b"content-length", str(len(payload)).encode())]
    return [start, {"type": "http.response.body", "body": payload, "more_body": False}]
