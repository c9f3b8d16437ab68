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
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest migration in MIGRATIONS (a test holds it to Alembic's own answer). A database already
# there is left alone without importing Alembic, a tenth of a second of every start-up and of every
# screening run's record. Stale, it would only send every start through Alembic, which then decides.
HEAD_REVISION = "0006"
# Arbitrary constant naming "pgx-cds schema migration" among advisory locks on the server.
_PG_LOCK_KEY = 0x70677863_6473


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None          # the package ships its migrations
    return head


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision`. Raises SQLAlchemy errors if the database is down."""
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

    config = alembic_config()
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        if current_revision(connection) == head_revision() and revision == "head":
            return
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _at_head(engine: Engine) -> bool:
    """Whether the database says it is at HEAD_REVISION. Read outside the migration lock: a migration
    running meanwhile has not committed its version yet, so this reads the old one and the caller
    takes the lock and waits. A database that is down raises here, as it would in Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False        # a new database: Alembic creates everything
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


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
