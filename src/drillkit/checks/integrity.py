"""Integrity checks: read every user table in full, then verify btree indexes with amcheck.

``count(*)`` alone can be answered from an index: only a sequential read of every column meets each
heap page, and with data checksums a damaged page then fails with "invalid page in block".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from drillkit.checks.results import (
    AMCHECK_UNAVAILABLE,
    DATA_CORRUPTION,
    INDEX_CORRUPTION,
    CheckTimedOut,
    Outcome,
)
from drillkit.checks.sql import begin_read_only, connect, is_sandbox, pg_message, query_failure
from drillkit.exceptions import CheckError
from drillkit.findings import Finding

if TYPE_CHECKING:
    from drillkit.checks.engine import CheckContext

EXPECTATION = "every user table reads in full; every btree index passes amcheck"
# pg_* schemas are PostgreSQL's own (catalog, toast, temp); users cannot create such schemas.
_TABLES = text(
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'm') AND c.relispopulated AND c.relpersistence <> 't' "
    "AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1, 2"
)
_INDEXES = text(
    "SELECT c.oid, n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' "
    "AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 2, 3"
)
_AMCHECK_SCHEMA = text(
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'amcheck'"
)
_AMCHECK_AVAILABLE = text("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'")
_FORCE_HEAP_READS = ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan")


def run_integrity_check(ctx: CheckContext) -> Outcome:
    sandbox = is_sandbox(ctx.entry)
    with connect(ctx, read_only=not sandbox) as conn:
        try:
            schema, why_not = _amcheck(
                conn, sandbox=sandbox, resolved_by=ctx.entry.get("resolved_by")
            )
            begin_read_only(conn)
            for setting in _FORCE_HEAP_READS:
                conn.exec_driver_sql(f"SET LOCAL {setting} = off")
            quote = conn.dialect.identifier_preparer.quote_identifier
            tables = conn.execute(_TABLES).all()
            corrupt: list[tuple[str, str, str]] = []  # (code, relation, message)
            errors: list[str] = []
            rows = 0
            for nsp, rel in tables:
                name = f"{nsp}.{rel}"
                sql = f"SELECT count(*), sum(length(t::text)) FROM {quote(nsp)}.{quote(rel)} AS t"
                outcome = _guarded(conn, ctx, name, text(sql), {})
                if isinstance(outcome, tuple):
                    rows += outcome[0]
                elif outcome.status == "failed":
                    corrupt.append((DATA_CORRUPTION, name, outcome.detail))
                else:
                    errors.append(f"{name}: {outcome.detail}")
            checked = 0
            if schema is not None:
                verify = text(
                    f"SELECT {quote(schema)}.bt_index_check(CAST(CAST(:oid AS oid) AS regclass))"
                )
                for oid, nsp, rel in conn.execute(_INDEXES).all():
                    index = f"{nsp}.{rel}"
                    outcome = _guarded(conn, ctx, index, verify, {"oid": oid})
                    if isinstance(outcome, tuple):
                        checked += 1
                    elif outcome.status == "failed":
                        corrupt.append((INDEX_CORRUPTION, index, outcome.detail))
                    else:
                        errors.append(f"amcheck of {index}: {outcome.detail}")
            conn.rollback()
        except DBAPIError as exc:
            return query_failure(exc, ctx, EXPECTATION, f"integrity check {ctx.spec.name}")
    return _verdict(ctx, len(tables), rows, checked, schema is not None, why_not, corrupt, errors)


def _amcheck(conn: Connection, *, sandbox: bool, resolved_by: Any) -> tuple[str | None, str]:
    """The schema amcheck lives in, creating it on a sandbox; else None and why not."""
    schema = conn.execute(_AMCHECK_SCHEMA).scalar()
    if schema is None and not conn.execute(_AMCHECK_AVAILABLE).scalar():
        why = "amcheck is not available on this server (install PostgreSQL's contrib modules)"
    elif schema is None and not sandbox:
        why = (
            f"amcheck is not installed and the target is not a provisioned sandbox (resolved_by="
            f"{resolved_by}), so drillkit does not create it there: run CREATE EXTENSION amcheck "
            "on it, or drill a provisioned sandbox"
        )
    elif schema is None:
        try:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
            conn.commit()
            schema, why = conn.execute(_AMCHECK_SCHEMA).scalar(), ""
        except DBAPIError as exc:  # e.g. still in recovery, or the contrib files are missing
            why = f"CREATE EXTENSION amcheck failed ({pg_message(exc)})"
    else:
        why = ""
    conn.rollback()  # the next transaction must start with SET TRANSACTION READ ONLY
    return schema, why


def _guarded(
    conn: Connection, ctx: CheckContext, relation: str, sql: Any, params: dict[str, Any]
) -> tuple[Any, ...] | Outcome:
    """Run one relation's statement in a savepoint, so one damaged relation does not hide others.

    Returns the row, or an Outcome whose status says corruption (failed) or another error.
    """
    try:
        with conn.begin_nested():
            return tuple(conn.execute(sql, params).one())
    except DBAPIError as exc:
        try:
            status = query_failure(exc, ctx, EXPECTATION, relation).status
        except CheckTimedOut:
            raise
        except CheckError:
            status = "error"
        return Outcome(status="failed" if status == "failed" else "error", detail=pg_message(exc))


def _verdict(
    ctx: CheckContext,
    tables: int,
    rows: int,
    indexes: int,
    amcheck_ran: bool,
    why_not: str,
    corrupt: list[tuple[str, str, str]],
    errors: list[str],
) -> Outcome:
    amcheck = "skipped"
    if amcheck_ran:
        amcheck = "failed" if any(c[0] == INDEX_CORRUPTION for c in corrupt) else "passed"
    observed = {"tables": tables, "rows": rows, "indexes_checked": indexes, "amcheck": amcheck}
    findings = [
        Finding(
            code=code,
            message=f"{relation} on {ctx.service} is damaged ({message}): the restored data cannot "
            "be trusted; verify the backup (pg_verifybackup) and drill another one",
            subject=relation,
        )
        for code, relation, message in corrupt
    ]
    parts = [f"read {tables} table(s), {rows} row(s)"]
    if amcheck_ran:
        parts.append(f"amcheck verified {indexes} btree index(es)")
    else:
        # Skipped, never passed: say so in the result and as a finding.
        parts.append(f"btree indexes NOT verified, amcheck skipped: {why_not}")
        findings.append(
            Finding(
                code=AMCHECK_UNAVAILABLE,
                message=f"{ctx.spec.name}: {why_not}",
                severity="warning",
                subject=ctx.service,
            )
        )
    parts += [f"{relation}: {message}" for _code, relation, message in corrupt]
    parts += errors
    status = "failed" if corrupt else ("error" if errors else "passed")
    return Outcome(
        status=status,
        observed=observed,
        expectation=EXPECTATION,
        detail="; ".join(parts),
        findings=tuple(findings),
    )
