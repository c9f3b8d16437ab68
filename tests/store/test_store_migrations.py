"""The shipped Alembic migration builds exactly the schema the models describe."""
from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cds.store import migrate
from cds.store.engine import make_engine
from cds.store.schema import Base
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures


def test_migrations_match_the_models(backend):
    engine = make_engine(backend.direct_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("older, recorded", [("base", None), ("0004", "0004")])
def test_a_database_at_an_older_revision_is_upgraded_to_the_head(backend, db, older, recorded):
    """Down to nothing, or to one migration before the head, then up again: Alembic takes the database
    to HEAD_REVISION, which is what the store's quick check compares with."""
    engine = make_engine(backend.direct_url)
    try:
        migrate.upgrade(engine)
        config = migrate.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, older)
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == recorded
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.HEAD_REVISION
        assert db.scalar("SELECT count(*) FROM cds_call") == 0
    finally:
        engine.dispose()


def test_the_head_revision_the_store_checks_is_alembics():
    assert migrate.HEAD_REVISION == migrate.head_revision()
