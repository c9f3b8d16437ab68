"""Bring the database schema to the newest migration, safely from several processes at once.

The Alembic scripts ship inside the package (cds/store/migrations/); no alembic.ini is needed.
Concurrent start-ups serialise on a lock: a PostgreSQL advisory lock held for the migration's
transaction, or an exclusive lock on a file beside the SQLite database.
"""
from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant naming "pgx-cds schema migration" among advisory locks on the server.
_PG_LOCK_KEY = 0x70677863_6473


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision`. Raises SQLAlchemy errors if the database is down."""
    config = alembic_config()
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        if current_revision(connection) == head_revision() and revision == "head":
            return
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    lock_path = Path(f"{engine.url.database}.migrate-lock")
    with open(lock_path, "a+") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
