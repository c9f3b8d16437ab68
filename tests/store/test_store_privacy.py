"""No raw patient id in the database, the spool, the rejected file or the log, on any path."""
from __future__ import annotations

import dataclasses
import logging

from sqlalchemy import create_engine, inspect, text

from cds.store import CallRecord
from cds.store.pseudonym import PatientHasher
from cds.store.records import audit_entry
from store_support import AUDIT_KEY, call_record, wait_until
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

PATIENT = "pat-77f3c1"  # distinctive, so any leak is found by a plain substring search


def _database_text(url: str) -> str:
    """Every value of every table, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            return "\n".join(repr(row) for table in tables for row in conn.execute(text(f"SELECT * FROM {table}")))
    finally:
        engine.dispose()


def test_the_raw_patient_id_is_never_stored_spooled_or_logged(backend, open_store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)                        # every logger, every level
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # and the SQL echo with parameters
    store = open_store()
    leaky = call_record(PATIENT, fhir_errors=[f"GET Observation?patient={PATIENT} failed",
                                              f"Patient/{PATIENT} not found"],
                        unresolved=[f"text:drug for {PATIENT}."])
    leaky = dataclasses.replace(leaky, facts=[dataclasses.replace(leaky.facts[0],
                                                                  source_ids=[f"Observation/{PATIENT}-cyp"])])
    store.record_call(leaky)
    assert store.flush()

    backend.down()                                         # the spool path
    spooled = call_record(PATIENT)
    store.record_call(spooled)
    assert store.flush(timeout=60)
    spool_text = "".join(p.read_text() for p in (tmp_path / "spool").glob("*.jsonl"))
    assert spooled.call_id in spool_text and PATIENT not in spool_text
    backend.up()
    assert wait_until(lambda: store.database_up and not store.spool.pending())

    clash = dataclasses.replace(call_record(PATIENT), cards=leaky.cards)  # the rejected-file path
    store.record_call(clash)
    assert store.flush()
    rejected = "".join(p.read_text() for p in (tmp_path / "spool").glob("rejected-*.jsonl"))
    assert clash.call_id in rejected and PATIENT not in rejected

    stored = _database_text(backend.direct_url)
    assert leaky.call_id in stored and spooled.call_id in stored
    assert PATIENT not in stored
    assert "GET Observation?patient=[patient] failed" in stored   # the text is kept, the id is not
    assert "Observation/[patient]-cyp" in stored
    assert store.patient_hash(PATIENT) in stored
    assert "audit database unavailable" in caplog.text and "refused by the database" in caplog.text
    assert PATIENT not in caplog.text


def test_scrubbing_replaces_the_id_but_not_words_that_contain_its_characters():
    record = CallRecord(service_id="s", hook="order-select", hook_instance=None, patient_id="19",
                        kb_version="k", fhir_errors=["Patient/19 lookup failed; CYP2C19 and 190 kept; Observation/19-x, 19."])
    entry = audit_entry(record, PatientHasher(AUDIT_KEY.encode()))
    assert entry["fhir_errors"] == ["Patient/[patient] lookup failed; CYP2C19 and 190 kept; "
                                    "Observation/[patient]-x, [patient]."]
    assert entry["patient_hash"] != "19" and len(entry["patient_hash"]) == 64
