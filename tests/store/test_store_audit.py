"""The audit trail: what one call leaves in the database, and that replays never duplicate it."""
from __future__ import annotations

import dataclasses
import json

from store_support import call_record
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures


def test_a_call_is_stored_with_its_cards_facts_and_versions(open_store, db):
    store = open_store()
    record = call_record("pat-4711", cards=2, consent="no-consent-restriction",
                         unresolved=["rxnorm:999999"], fhir_errors=["Observation search timed out"])
    store.record_call(record)
    assert store.flush()

    call = db.rows("SELECT service_id, hook, hook_instance, kb_version, consent, latency_ms, card_count, "
                   "unresolved_drugs, fhir_errors, patient_hash FROM cds_call WHERE call_id = :id",
                   id=record.call_id)
    assert len(call) == 1
    service_id, hook, hook_instance, kb_version, consent, latency_ms, card_count, unresolved, errors, patient_hash \
        = call[0]
    assert (service_id, hook, hook_instance, kb_version) == ("pgx-order-select", "order-select",
                                                             record.hook_instance, "kb-0123abcd")
    assert (consent, latency_ms, card_count) == ("no-consent-restriction", 12.5, 2)
    assert _json(unresolved) == ["rxnorm:999999"] and _json(errors) == ["Observation search timed out"]
    assert patient_hash == store.patient_hash("pat-4711") and len(patient_hash) == 64

    cards = db.rows("SELECT card_uuid, rule_id, guideline_id, guideline_version, indicator FROM cds_card "
                    "WHERE call_id = :id ORDER BY position", id=record.call_id)
    assert cards == [(c.uuid, c.rule_id, c.guideline_id, c.guideline_version, c.indicator) for c in record.cards]
    facts = db.rows("SELECT gene, phenotype, lookup_key, source_ids FROM cds_fact WHERE call_id = :id",
                    id=record.call_id)
    assert [(g, p, k, _json(s)) for g, p, k, s in facts] == \
        [("CYP2C19", "Poor Metabolizer", "Poor Metabolizer", ["Observation/cyp2c19-obs"])]


def test_the_same_call_recorded_twice_is_stored_once(open_store, db):
    store = open_store()
    record = call_record()
    store.record_call(record)
    store.record_call(record)
    assert store.flush()
    assert db.scalar("SELECT count(*) FROM cds_call WHERE call_id = :id", id=record.call_id) == 1
    assert db.scalar("SELECT count(*) FROM cds_card WHERE call_id = :id", id=record.call_id) == 1


def test_the_same_patient_gets_the_same_pseudonym_and_another_patient_another(open_store, db):
    store = open_store()
    for patient in ("pat-1", "pat-1", "pat-2"):
        store.record_call(call_record(patient))
    assert store.flush()
    counts = db.rows("SELECT patient_hash, count(*) FROM cds_call GROUP BY patient_hash ORDER BY 2")
    assert sorted(n for _, n in counts) == [1, 2]


def test_a_card_uuid_reused_by_another_call_is_set_aside_not_retried_forever(open_store, db, tmp_path, caplog):
    store = open_store()
    first = call_record()
    clash = dataclasses.replace(call_record(), cards=first.cards)  # a service bug: same card uuid twice
    store.record_call(first)
    store.record_call(clash)
    following = call_record()
    store.record_call(following)
    assert store.flush()
    assert db.scalar("SELECT count(*) FROM cds_call WHERE call_id = :id", id=clash.call_id) == 0
    assert db.scalar("SELECT count(*) FROM cds_call WHERE call_id = :id", id=following.call_id) == 1
    rejected = list((tmp_path / "spool").glob("rejected-*.jsonl"))
    assert len(rejected) == 1
    assert json.loads(rejected[0].read_text().splitlines()[0])["entry"]["call_id"] == clash.call_id
    assert "refused by the database" in caplog.text
    assert not store.spool.pending()  # nothing left to retry


def _json(value):
    return json.loads(value) if isinstance(value, str) else value
