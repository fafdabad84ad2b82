"""A database that does not answer is a 503 for the audit routes, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from asyncpg import InterfaceError as PgInterfaceError
from asyncpg import PostgresConnectionError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mlgate.errors import ServiceUnavailable

log = logging.getLogger("mlgate.audit")


_UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    PostgresConnectionError,
    PgInterfaceError,
    OSError,
    TimeoutError,
)


@contextmanager
def database_required() -> Iterator[None]:
    """Turn "the database is down or locked" into 503 with Retry-After."""
    try:
        yield
    except _UNAVAILABLE as exc:
        log.warning("database unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        raise ServiceUnavailable(
            "the database is not answering: retry later", headers={"Retry-After": "5"}
        ) from exc
