"""Database errors are translated once, where the store meets the database (cds.store.boundary): an
outage becomes StoreUnavailable (message for the caller, cause for the log), a refusal for good
DatabaseRefused, and on the command line either is a one-line CdsError. Real databases, real faults."""
from __future__ import annotations

import pytest
from sqlalchemy import insert

from cds.errors import CdsError
from cds.store import StoreUnavailable
from cds.store.boundary import DatabaseRefused, database_errors, database_errors_said
from cds.store.engine import make_engine
from cds.store.schema import call_table
from store_fixtures import backend, open_store  # noqa: F401 - pytest fixtures
from store_support import call_record


def _call_row(call_id: str) -> dict:
    from datetime import datetime, timezone
    return {"call_id": call_id, "recorded_at": datetime.now(timezone.utc), "service_id": "s", "hook": "order-select",
            "kb_version": "k", "card_count": 0, "unresolved_drugs": [], "fhir_errors": [], "reasons": []}


def test_an_outage_is_store_unavailable_with_its_cause_kept_apart(backend, open_store):
    open_store().close()                           # the schema exists
    backend.down()
    engine = make_engine(backend.url, 1.0)
    try:
        with pytest.raises(StoreUnavailable) as raised, database_errors("retry the feedback later"):
            with engine.begin() as conn:
                conn.execute(insert(call_table).values(**_call_row("c-1")))
    finally:
        engine.dispose()
    assert str(raised.value) == "retry the feedback later"                  # what a caller may be shown
    assert raised.value.cause and raised.value.cause != str(raised.value)   # the database's own words, for the log


def test_a_constraint_is_refused_for_good_not_retried(backend, open_store):
    store = open_store()
    record = call_record()
    store.record_call(record)
    assert store.flush()
    with pytest.raises(DatabaseRefused) as raised, database_errors():
        with store.engine.begin() as conn:
            conn.execute(insert(call_table).values(**_call_row(record.call_id)))   # the same primary key
    assert "IntegrityError" in str(raised.value) or "UniqueViolation" in str(raised.value)
    assert "DETAIL" not in str(raised.value)    # PostgreSQL's DETAIL repeats the row: content stays out of the log


def test_the_command_line_says_what_could_not_be_done_and_why(backend, open_store):
    open_store().close()
    backend.down()
    engine = make_engine(backend.url, 1.0)
    try:
        with pytest.raises(CdsError) as raised, database_errors_said("cannot read the audit database"):
            with engine.connect() as conn:
                conn.execute(insert(call_table).values(**_call_row("c-2")))
    finally:
        engine.dispose()
    message = str(raised.value)
    assert message.startswith("cannot read the audit database: ") and "\n" not in message
