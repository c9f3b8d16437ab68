"""Fixtures for the store tests (imported by each test module: a conftest.py here would shadow the
`conftest` module other tests import). The backend follows $DATABASE_URL: a postgresql URL runs every
test against that server (each test in a schema of its own, reached through a TCP proxy the test
can cut); anything else runs against a fresh SQLite file per test.

    DATABASE_URL=sqlite:///  /tmp/venv/bin/pytest tests/store
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test  /tmp/venv/bin/pytest tests/store
"""
from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from cds.store import Store
from store_support import AUDIT_KEY, PostgresBackend, SqliteBackend


def _wants_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgresql")


@pytest.fixture
def backend(tmp_path):
    db = PostgresBackend(os.environ["DATABASE_URL"]) if _wants_postgres() else SqliteBackend(str(tmp_path))
    yield db
    db.close()


@pytest.fixture
def open_store(backend, tmp_path):
    """Open Stores on the test's database and spool; all are closed after the test."""
    opened: list[Store] = []

    def _open(**options) -> Store:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("audit_key", AUDIT_KEY)
        options.setdefault("retry_interval", 0.1)
        options.setdefault("db_timeout", 1.0)
        store = Store.open(backend.url, **options)
        opened.append(store)
        return store

    yield _open
    backend.up()
    for store in opened:
        store.close()


@pytest.fixture
def db(backend):
    """A direct connection to the test's database (bypassing any proxy) for assertions."""
    engine = create_engine(backend.direct_url)

    class Query:
        def scalar(self, sql: str, **params):
            with engine.connect() as conn:
                return conn.execute(text(sql), params).scalar()

        def rows(self, sql: str, **params):
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), params)]

    yield Query()
    engine.dispose()
