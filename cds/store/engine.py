"""Database engines with short timeouts, so a sick database fails fast instead of holding threads.

SQLite (the default, one file under ./var/) runs in WAL mode so readers do not block the writer and
several local processes can share the file; PostgreSQL (`postgresql+psycopg://…`) is for replicas
that share one audit trail. Statement parameters are hidden from exception messages: they would
otherwise carry audit content into the logs.
"""
from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cds.errors import CdsError

URL_ENV = "DATABASE_URL"
DEFAULT_URL = "sqlite:///./var/pgx-cds.sqlite3"


def database_url(url: str | None = None) -> str:
    """`url` (a face passes DATABASE_URL, cds.settings), else SQLite under ./var/."""
    return url or DEFAULT_URL


def make_engine(url: str | None = None, timeout_s: float = 3.0) -> Engine:
    """An engine for `url` (default: SQLite under ./var/)."""
    raw = database_url(url)
    try:
        parsed = make_url(raw)
    except ArgumentError as err:
        raise CdsError(f"{URL_ENV} is not a database URL: {err}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, timeout_s)
    if backend == "postgresql":
        return _postgresql_engine(parsed, timeout_s)
    raise CdsError(f"{URL_ENV} must be sqlite:///PATH or postgresql+psycopg://…, not {parsed.drivername}")


def _json_text(value) -> str:
    # The JSON columns (reasons, errors, source ids) of every audit row: orjson, as the journal
    # and the responses use, rather than the standard library's encoder on the writer's hot path.
    return orjson.dumps(value).decode()


def _sqlite_engine(url, timeout_s: float) -> Engine:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise CdsError("an in-memory SQLite database would lose the audit trail at exit; give a file path")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": timeout_s}, hide_parameters=True,
                           pool_pre_ping=True, pool_timeout=timeout_s, json_serializer=_json_text)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")   # a committed audit row survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _postgresql_engine(url, timeout_s: float) -> Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the pinned driver
    timeout_ms = int(timeout_s * 1000)
    connect_args = {
        # psycopg bounds the whole connection (TCP, TLS, start-up and authentication) by it
        "connect_timeout": max(1, round(timeout_s)),
        # A peer that vanishes without closing the socket must not hang the writer thread.
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
        "tcp_user_timeout": timeout_ms * 2,
    }
    engine = create_engine(url, connect_args=connect_args, hide_parameters=True, pool_pre_ping=True,
                           pool_timeout=timeout_s, pool_size=4, max_overflow=4, json_serializer=_json_text)

    connection_class = _bounded_connection_class(timeout_s)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):
        return connection_class.connect(*cargs, **cparams)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {timeout_ms}")
            cursor.execute(f"SET lock_timeout = {timeout_ms}")
        dbapi_connection.commit()  # a SET inside the implicit transaction would be rolled back

    return engine


def _bounded_connection_class(timeout_s: float):
    """A psycopg connection whose every exchange with the server (statement, fetch, commit, rollback,
    ping) ends within `timeout_s` however the peer behaves. The server's statement_timeout only helps
    while the server answers; a peer that accepts and never answers (a hung server, a proxy or firewall
    that stops forwarding) is acknowledged by TCP, so neither keepalives nor tcp_user_timeout fire.
    Past the bound the connection is closed, so the pool drops it, and OperationalError is raised."""
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen, interval=0.1, timeout=None):
            try:
                return super().wait(gen, interval=interval, timeout=timeout_s if timeout is None else timeout)
            except errors._WaitTimeout:
                self.pgconn.finish()
                raise psycopg.OperationalError(f"no answer from the database within {timeout_s:g} s") from None

    return BoundedConnection
