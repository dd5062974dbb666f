"""Object-store credentials for a catalog: from a registered resolver (the Airflow adapter turns
``aws_conn_id`` into them) or the worker's own AWS_* environment (the standard credential chain).

They travel as environment variables to boto3 and the barman-cloud tools only: never argv, never a
log line, never XCom (the coordinate carries ``aws_conn_id``, not what it resolves to).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from drillkit.barman.tools import AWS_ENV
from drillkit.exceptions import InvalidInputError

Resolver = Callable[[str], Mapping[str, str]]
_RESOLVER: ContextVar[Resolver | None] = ContextVar("drillkit_aws_resolver", default=None)


@contextmanager
def using_resolver(resolver: Resolver) -> Iterator[None]:
    """Within the block, ``aws_conn_id`` values are resolved by ``resolver``."""
    token = _RESOLVER.set(resolver)
    try:
        yield
    finally:
        _RESOLVER.reset(token)


def resolve(aws_conn_id: str | None) -> dict[str, str]:
    """The AWS_* variables the tools and boto3 get for this catalog."""
    if not aws_conn_id:
        return {k: v for k, v in os.environ.items() if k in AWS_ENV and v}
    resolver = _RESOLVER.get()
    if resolver is None:
        raise InvalidInputError(
            f"catalog.aws_conn_id {aws_conn_id!r} names an Airflow connection, which only a drill "
            "run by Airflow can read; outside Airflow drop aws_conn_id and export AWS_ACCESS_KEY_ID"
            " / AWS_SECRET_ACCESS_KEY (or use an instance role)"
        )
    values = {k: v for k, v in resolver(aws_conn_id).items() if v}
    unknown = sorted(set(values) - set(AWS_ENV))
    if unknown:
        raise InvalidInputError(f"credential resolver returned unknown variables {unknown}")
    return values
