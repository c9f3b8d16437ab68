"""Where the database's errors become the store's own, once (as httpx maps httpcore's exceptions to its
own at its transport boundary): code inside `with database_errors():` talks SQLAlchemy, code outside
sees only

- `StoreUnavailable`: an outage or overload worth retrying later (connection refused or lost, timeout,
  database locked, tables missing until migrations run); the entry is kept, the request answered 503;
- `DatabaseRefused`: the database refuses this for good (a constraint, a failed migration): retrying
  cannot help.

The command line has one more boundary, `database_errors_said`: any database error is a `CdsError` that
says what could not be done and why, in one line.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cds.errors import CdsError
from cds.store.errors import StoreUnavailable

_TRANSIENT = (OperationalError, InterfaceError, InternalError, DisconnectionError, PoolTimeout,
              ProgrammingError,  # e.g. tables missing until migrations run: keep the entry, do not drop it
              OSError)


class DatabaseRefused(Exception):
    """The database refuses this for good (a constraint, a malformed value); `str()` says why."""


@contextmanager
def database_errors(unavailable: str = "the audit database is unavailable") -> Iterator[None]:
    """Translate SQLAlchemy's (and the driver's) errors raised inside the block; `unavailable` is the
    message a caller may show (the cause, which names hosts, is only in `StoreUnavailable.cause`)."""
    try:
        yield
    except (SQLAlchemyError, OSError) as err:
        if _transient(err):
            raise StoreUnavailable(unavailable, cause=describe(err)) from err
        raise DatabaseRefused(describe(err)) from err


@contextmanager
def database_errors_said(what: str) -> Iterator[None]:
    """For the command line: a database error inside the block becomes `CdsError("{what}: {why}")`."""
    try:
        yield
    except SQLAlchemyError as err:
        raise CdsError(f"{what}: {describe(err)}") from None


def _transient(err: BaseException) -> bool:
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(err, _TRANSIENT)


def describe(err: BaseException) -> str:
    """A short description of a database error for the log, without statement parameters or PostgreSQL's
    DETAIL (which repeats the failing row: audit content)."""
    original = getattr(err, "orig", None)
    text = f"{type(original).__name__}: {original}" if original is not None else f"{type(err).__name__}: {err}"
    return " ".join(text.split("DETAIL:", 1)[0].split())[:300]
