"""SQL smoke checks, and the PostgreSQL connection every postgres check opens.

Connections: SQLAlchemy + psycopg 3, NullPool, connect and statement timeouts from the check's
budget, read-only unless the check may write (and only a provisioned sandbox may be written to).
On a sandbox drillkit provisioned, checks log in as the sandbox's check role (never superuser),
whose password is read from the sandbox's 0600 file at connect time; a check's statement goes
through the extended protocol, which refuses a second statement. A TCP host is resolved once and
judged by the production guard; libpq then connects to that address (``hostaddr``), keeping
``host`` for TLS verification.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from drillkit.checks.results import (
    CHECK_ENDED_TRANSACTION,
    CHECK_ERRORED,
    CHECK_MULTIPLE_STATEMENTS,
    CHECK_NOT_PERMITTED,
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
from drillkit.sandbox.roles import read_login

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
_INSUFFICIENT_PRIVILEGE = "42501"
_SYNTAX_ERROR = "42601"
DRIVER = "postgresql+psycopg"
_CORRUPTION = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted


def is_sandbox(entry: Mapping[str, Any]) -> bool:
    """Only a sandbox drillkit provisioned itself may be written to; overrides may be shared."""
    return entry.get("resolved_by") == SANDBOX_RESOLUTION


def with_sandbox_login(
    manifest: Mapping[str, Any], sandbox: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    """The manifest with each provisioned postgres service that points at ``sandbox`` given the
    sandbox's check roles (``login``: role names and the password file's path, no password)."""
    roles = (sandbox or {}).get("check_roles") or {}
    # A login comes only from the sandbox record, never from the manifest itself.
    services = {
        name: {k: v for k, v in entry.items() if k != "login"}
        if isinstance(entry, Mapping)
        else entry
        for name, entry in (manifest.get("services") or {}).items()
    }
    manifest = {**manifest, "services": services}
    if not roles.get("roles_file"):
        return manifest
    ours = {
        (e.get("host"), e.get("port"))
        for e in ((sandbox or {}).get("endpoints") or {}).values()
        if isinstance(e, Mapping)
    }
    for name, entry in services.items():
        endpoint = entry.get("endpoint") or {} if isinstance(entry, Mapping) else {}
        if (
            isinstance(entry, Mapping)
            and entry.get("kind") == "postgres"
            and is_sandbox(entry)
            and (endpoint.get("host"), endpoint.get("port")) in ours
        ):
            login = {
                "read": roles["read"]["user"],
                "write": roles["write"]["user"],
                "roles_file": roles["roles_file"],
            }
            services[name] = {**entry, "login": login}
    return {**manifest, "services": services}


def postgres_url(endpoint: Mapping[str, Any], *, user: str | None = None) -> URL:
    """``postgresql+psycopg://user@/db?host=/dir&port=5432`` for a socket dir, else host:port."""
    host, port = endpoint.get("host"), endpoint.get("port", 5432)
    if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int):
        raise CheckError(f"postgres endpoint {dict(endpoint)!r} needs a host and an integer port")
    user = user or endpoint.get("user", "postgres")
    database = endpoint.get("database", "postgres")
    if host.startswith("/"):
        return URL.create(
            DRIVER,
            username=user,
            database=database,
            query={"host": host, "port": str(port)},
        )
    return URL.create(DRIVER, username=user, host=host, port=port, database=database)


def _orig(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def sqlstate(exc: BaseException) -> str | None:
    orig = _orig(exc)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def pg_message(exc: BaseException) -> str:
    orig = _orig(exc)
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def check_login(entry: Mapping[str, Any], *, write: bool) -> tuple[str, str] | None:
    """``(role, password)`` to log in as on a provisioned sandbox, None elsewhere."""
    login = entry.get("login")
    if not isinstance(login, Mapping) or not is_sandbox(entry):
        return None
    try:
        return read_login(login["roles_file"], "write" if write else "read")
    except (OSError, ValueError, KeyError) as exc:
        # Never fall back to the endpoint's (super)user: the check does not run.
        raise CheckError(
            f"cannot read the sandbox's check-role password file {login.get('roles_file')}: "
            f"{exc}; drillkit must run as the user that provisioned the sandbox"
        ) from exc


@contextmanager
def connect(ctx: CheckContext, *, read_only: bool, write: bool = False) -> Iterator[Connection]:
    """A connection bounded by the check's budget; ``read_only`` makes it the session default.

    On a provisioned sandbox it logs in as the sandbox's read (or, ``write``, write) check role.
    """
    login = check_login(ctx.entry, write=write)
    remaining = max(ctx.remaining(), 0.001)
    endpoint = ctx.entry.get("endpoint") or {}
    url = postgres_url(endpoint, user=login[0] if login else None)
    pinned: dict[str, str] = {}
    if url.host:  # TCP: libpq connects to the judged addresses; host stays for TLS and .pgpass
        addresses = ctx.pin(url.host, url.port or 5432, endpoint.get("database"))
        # libpq pairs host and hostaddr lists entry by entry, trying each in turn. A server
        # certificate is verified against ``tls_server_name`` (a Service's DNS name) when the
        # endpoint is an address.
        name = endpoint.get("tls_server_name") or url.host
        pinned["host"] = ",".join([str(name)] * len(addresses))
        pinned["hostaddr"] = ",".join(addresses)
    if endpoint.get("sslrootcert"):  # a sandbox whose server certificate drillkit can verify
        pinned["sslmode"] = "verify-full"
        pinned["sslrootcert"] = str(endpoint["sslrootcert"])
    options = f"-c statement_timeout={max(1, int(remaining * 1000))}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    connect_args: dict[str, Any] = {
        # libpq takes whole seconds and treats anything below 2 as 2.
        "connect_timeout": max(2, math.ceil(remaining)),
        "options": options,
        "application_name": f"drillkit check {ctx.spec.name}"[:63],
        # psycopg 3 hands out bytes for text of a SQL_ASCII database (initdb under LC_ALL=C)
        # unless the client asks for an encoding; UTF-8 is how psycopg2 read them too.
        "client_encoding": "utf8",
    }
    if login:
        connect_args["password"] = login[1]  # never in the URL, so never in a message
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={**pinned, **connect_args},
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


def _error(expectation: str, detail: str, code: str, message: str, subject: str) -> Outcome:
    return Outcome(
        status="error",
        expectation=expectation,
        detail=detail,
        findings=(Finding(code=code, message=message, subject=subject),),
    )


def query_failure(
    exc: DBAPIError | psycopg.Error, ctx: CheckContext, expectation: str, subject: str
) -> Outcome:
    """Turn a failed statement into an honest outcome: corruption fails, the rest is an error."""
    code, message = sqlstate(exc), pg_message(exc)
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
    if code == _INSUFFICIENT_PRIVILEGE:
        return _error(
            expectation,
            f"the sandbox refused the check's statement ({message})",
            CHECK_NOT_PERMITTED,
            f"check {ctx.spec.name} tried something its role may not do on {ctx.service} "
            f"({message}): checks run as a non-superuser role that reads every table and "
            "writes only with write: true; no server files, programs or other roles",
            ctx.spec.name,
        )
    if code == _SYNTAX_ERROR and "multiple commands" in message:
        return _error(
            expectation,
            f"the query holds more than one statement ({message})",
            CHECK_MULTIPLE_STATEMENTS,
            f"check {ctx.spec.name} sends more than one statement: a check is one SQL "
            "statement; split it into several checks",
            ctx.spec.name,
        )
    raise CheckError(f"the query failed: {message}", code=CHECK_ERRORED) from exc


def execute_one(conn: Connection, query: str, *, read_only: bool) -> tuple[list[Any], int]:
    """Run the check's single statement: ``(rows, row count)``.

    ``prepare=True`` sends it through the extended protocol, where a second statement is an
    error instead of running; the transaction must still be open (and still read-only)."""
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(query, prepare=True)
        returns_rows = cur.description is not None
        rows = cur.fetchall() if returns_rows else []
        count = len(rows) if returns_rows else max(cur.rowcount, 0)
        if raw.info.transaction_status != TransactionStatus.INTRANS:  # type: ignore[union-attr]
            raise _TransactionEnded
        if read_only:
            cur.execute("SELECT current_setting('transaction_read_only')")
            if cur.fetchone() != ("on",):
                raise _TransactionEnded
    return rows, count


class _TransactionEnded(Exception):
    """The check's statement ended drillkit's transaction (COMMIT, ROLLBACK, ...)."""


def run_sql_check(ctx: CheckContext) -> Outcome:
    config: SqlConfig = ctx.spec.config  # type: ignore[assignment]
    expectation = config.expect.describe()
    if config.write and not is_sandbox(ctx.entry):  # the engine refuses earlier; never rely on it
        raise CheckError(
            "write checks run only against a provisioned sandbox", code=WRITE_CHECK_REFUSED
        )
    with connect(ctx, read_only=not config.write, write=config.write) as conn:
        try:
            if not config.write:
                begin_read_only(conn)
            else:
                conn.exec_driver_sql("SELECT 1")  # opens the transaction the check runs in
            rows, count = execute_one(conn, config.query, read_only=not config.write)
            if config.write:
                conn.commit()  # proves the sandbox commits writes: WAL works, recovery is over
            else:
                conn.rollback()
        except _TransactionEnded:
            conn.rollback()
            return _error(
                expectation,
                "the query ended the check's transaction or its read-only mode",
                CHECK_ENDED_TRANSACTION,
                f"check {ctx.spec.name} ends the transaction drillkit runs it in, or makes it "
                "read-write (COMMIT, ROLLBACK, SET TRANSACTION ...): a check is one statement "
                "inside drillkit's read-only transaction",
                ctx.spec.name,
            )
        except (DBAPIError, psycopg.Error) as exc:
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
