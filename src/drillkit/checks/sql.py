"""SQL smoke checks, and the PostgreSQL connection every postgres check opens.

Connections: SQLAlchemy + psycopg2, NullPool, connect and statement timeouts from the check's
budget, read-only unless the check may write (and only a provisioned sandbox may be written to).
A TCP host is resolved once and judged by the production guard; libpq then connects to that
address (``hostaddr``), keeping ``host`` for TLS verification.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from drillkit.checks.results import (
    CHECK_ERRORED,
    DATA_CORRUPTION,
    WRITE_CHECK_REFUSED,
    WRITE_IN_READ_ONLY_CHECK,
    CheckTimedOut,
    EndpointUnreachable,
    Outcome,
    seconds_text,
)
from drillkit.exceptions import CheckError
from drillkit.findings import Finding

if TYPE_CHECKING:
    from drillkit.checks.engine import CheckContext
    from drillkit.checks.spec import SqlConfig

SANDBOX_RESOLUTION = "provisioned"
# libpq's words for "nobody answered": the service is unreachable, not misconfigured.
_UNREACHABLE_MARKERS = (
    "connection refused",
    "no such file or directory",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "timeout expired",
    "no route to host",
    "network is unreachable",
)
_QUERY_CANCELED = "57014"
_READ_ONLY_TRANSACTION = "25006"
_CORRUPTION = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted


def is_sandbox(entry: Mapping[str, Any]) -> bool:
    """Only a sandbox drillkit provisioned itself may be written to; overrides may be shared."""
    return entry.get("resolved_by") == SANDBOX_RESOLUTION


def postgres_url(endpoint: Mapping[str, Any]) -> URL:
    """``postgresql+psycopg2://user@/db?host=/dir&port=5432`` for a socket dir, else host:port."""
    host, port = endpoint.get("host"), endpoint.get("port", 5432)
    if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int):
        raise CheckError(f"postgres endpoint {dict(endpoint)!r} needs a host and an integer port")
    user, database = endpoint.get("user", "postgres"), endpoint.get("database", "postgres")
    if host.startswith("/"):
        return URL.create(
            "postgresql+psycopg2",
            username=user,
            database=database,
            query={"host": host, "port": str(port)},
        )
    return URL.create("postgresql+psycopg2", username=user, host=host, port=port, database=database)


def pg_message(exc: DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]


@contextmanager
def connect(ctx: CheckContext, *, read_only: bool) -> Iterator[Connection]:
    """A connection bounded by the check's budget; ``read_only`` makes it the session default."""
    remaining = max(ctx.remaining(), 0.001)
    endpoint = ctx.entry.get("endpoint") or {}
    url = postgres_url(endpoint)
    pinned: dict[str, str] = {}
    if url.host:  # TCP: libpq connects to the judged addresses; host stays for TLS and .pgpass
        addresses = ctx.pin(url.host, url.port or 5432, endpoint.get("database"))
        # libpq pairs host and hostaddr lists entry by entry, trying each in turn.
        pinned["host"] = ",".join([url.host] * len(addresses))
        pinned["hostaddr"] = ",".join(addresses)
    options = f"-c statement_timeout={max(1, int(remaining * 1000))}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            **pinned,
            # libpq takes whole seconds and treats anything below 2 as 2.
            "connect_timeout": max(2, math.ceil(remaining)),
            "options": options,
            "application_name": f"drillkit check {ctx.spec.name}"[:63],
        },
    )
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            message = pg_message(exc)
            if any(marker in str(exc.orig).lower() for marker in _UNREACHABLE_MARKERS):
                raise EndpointUnreachable(f"cannot connect to {ctx.service}: {message}") from exc
            raise CheckError(f"connecting to {ctx.service} failed: {message}") from exc
        with conn:
            # The watchdog cancels the running statement when the check runs out of time.
            ctx.on_cancel(conn.connection.dbapi_connection.cancel)  # type: ignore[union-attr]
            yield conn
    finally:
        engine.dispose()


def begin_read_only(conn: Connection) -> None:
    """Start a READ ONLY transaction: it must be the transaction's first statement."""
    conn.exec_driver_sql("SET TRANSACTION READ ONLY")


def query_failure(exc: DBAPIError, ctx: CheckContext, expectation: str, subject: str) -> Outcome:
    """Turn a failed statement into an honest outcome: corruption fails, the rest is an error."""
    code, message = getattr(exc.orig, "pgcode", None), pg_message(exc)
    if code == _QUERY_CANCELED:
        raise CheckTimedOut(f"timed out after {seconds_text(ctx.budget)} ({message})") from exc
    if code in _CORRUPTION:
        return Outcome(
            status="failed",
            expectation=expectation,
            detail=f"{subject}: {message}",
            findings=(
                Finding(
                    code=DATA_CORRUPTION,
                    message=f"reading {subject} on {ctx.service} failed with {message!r}: the "
                    "restored data is damaged; verify the backup (pg_verifybackup) and drill "
                    "another one",
                    subject=subject,
                ),
            ),
        )
    if code == _READ_ONLY_TRANSACTION:
        # An error, not a failure: the check never measured what it declares.
        return Outcome(
            status="error",
            expectation=expectation,
            detail=f"the query tried to write in a read-only check ({message})",
            findings=(
                Finding(
                    code=WRITE_IN_READ_ONLY_CHECK,
                    message=f"check {ctx.spec.name} tried to write to {ctx.service}, but checks "
                    "are read-only: make the query read-only, or give it write: true and target a "
                    "provisioned sandbox",
                    subject=ctx.spec.name,
                ),
            ),
        )
    raise CheckError(f"the query failed: {message}", code=CHECK_ERRORED) from exc


def run_sql_check(ctx: CheckContext) -> Outcome:
    config: SqlConfig = ctx.spec.config  # type: ignore[assignment]
    expectation = config.expect.describe()
    if config.write and not is_sandbox(ctx.entry):  # the engine refuses earlier; never rely on it
        raise CheckError(
            "write checks run only against a provisioned sandbox", code=WRITE_CHECK_REFUSED
        )
    with connect(ctx, read_only=not config.write) as conn:
        try:
            if not config.write:
                begin_read_only(conn)
            # no_parameters: a literal % or :name in the query is SQL, not a placeholder.
            result = conn.exec_driver_sql(config.query, execution_options={"no_parameters": True})
            rows = result.fetchall() if result.returns_rows else []
            count = len(rows) if result.returns_rows else max(result.rowcount, 0)
            if config.write:
                conn.commit()  # proves the sandbox commits writes: WAL works, recovery is over
            else:
                conn.rollback()
        except DBAPIError as exc:
            return query_failure(exc, ctx, expectation, f"check {ctx.spec.name}")
    observed: Any = rows[0][0] if rows else (count if not config.expect.judges_value else None)
    problems = []
    if config.expect.judges_value:
        if not rows:
            problems.append("the query returned no rows, so there is no value to judge")
        else:
            why = config.expect.check_value(observed)
            if why:
                problems.append(why)
    why_rows = config.expect.check_rows(count)
    if why_rows:
        problems.append(why_rows)
    return Outcome(
        status="failed" if problems else "passed",
        observed=observed,
        expectation=expectation,
        detail="; ".join(problems) if problems else f"{count} row(s); expectation met",
    )
