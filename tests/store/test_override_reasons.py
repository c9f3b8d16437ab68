"""Override reasons in two code systems: ours and HL7's non-adherence reason codes (CDS Hooks 3.0 ballot).

The HL7 codes and displays are checked against the code system as HL7 publishes it
(HL7/cds-hooks, input/vocabulary/CodeSystem-non-adherence-reason-codes.json) in cds/override_reasons.py's
own comment; here: what a card offers, what feedback may carry, and how `cds report` shows both.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cds.override_reasons import (HL7_CLINICAL_SELECTION, HL7_CODES, HL7_EQUIVALENT, HL7_SYSTEM, OVERRIDE_REASONS,
                                  PRIVATE_CODES, PRIVATE_SYSTEM, both_codes)
from cds.store import format_report
from cds.store.errors import InvalidFeedback
from cds.store.feedback import feedback_entries
from store_support import call_record
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

WHEN = "2026-03-01T12:05:00Z"


def overridden(card: str, system: str, code: str) -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": WHEN,
            "overrideReason": {"reason": {"system": system, "code": code}}}


def test_cards_offer_ours_then_hl7_clinical_selection_without_duplicates():
    ours = [r for r in OVERRIDE_REASONS if r["system"] == PRIVATE_SYSTEM]
    hl7 = [r for r in OVERRIDE_REASONS if r["system"] == HL7_SYSTEM]
    assert [r["code"] for r in ours] == list(PRIVATE_CODES)          # unchanged, first
    assert OVERRIDE_REASONS[:len(ours)] == ours
    # HL7's clinical selection, in its order, minus the one our "not-applicable" already stands for
    assert [r["code"] for r in hl7] == [c for c in HL7_CLINICAL_SELECTION if c != "cds-not-applicable"]
    assert all(r["display"] == HL7_CODES[r["code"]] for r in hl7)    # CDS Hooks: display SHALL be given
    assert len({(r["system"], r["code"]) for r in OVERRIDE_REASONS}) == len(OVERRIDE_REASONS)


def test_mapping_is_one_to_one_onto_real_hl7_codes():
    assert set(HL7_EQUIVALENT) < set(PRIVATE_CODES)
    assert set(HL7_EQUIVALENT.values()) <= set(HL7_CODES)
    assert len(set(HL7_EQUIVALENT.values())) == len(HL7_EQUIVALENT)
    assert "result-disputed" not in HL7_EQUIVALENT                   # no HL7 code is about the result itself
    assert both_codes(PRIVATE_SYSTEM, "will-monitor").hl7 == "mitigate-risk-negative-outcome"
    assert both_codes(HL7_SYSTEM, "risk-benefit-ratio").private == "benefit-outweighs-risk"
    assert both_codes(HL7_SYSTEM, "patient-refuses").private is None
    assert both_codes("https://example.org/ehr", "x") is None


def test_feedback_accepts_both_systems_and_refuses_codes_they_do_not_have():
    entries = feedback_entries("pgx-order-select", [overridden("c1", HL7_SYSTEM, "patient-refuses"),
                                                    overridden("c2", PRIVATE_SYSTEM, "tolerated-before"),
                                                    overridden("c3", "https://example.org/ehr", "own-code")])
    assert [(e["reason_system"], e["reason_code"]) for e in entries] == [
        (HL7_SYSTEM, "patient-refuses"), (PRIVATE_SYSTEM, "tolerated-before"), ("https://example.org/ehr", "own-code")]
    with pytest.raises(InvalidFeedback, match="'patient-declined' is not a code of http://terminology.hl7.org"):
        feedback_entries("pgx-order-select", [overridden("c1", HL7_SYSTEM, "patient-declined")])
    with pytest.raises(InvalidFeedback, match="'tolerated' is not a code of urn:pgx-cds:override-reason"):
        feedback_entries("pgx-order-select", [overridden("c1", PRIVATE_SYSTEM, "tolerated")])


def test_report_shows_each_reason_with_its_counterpart_and_all_of_them_as_hl7(open_store):
    store = open_store()
    record = call_record("pat-1", rule_id="cpic-clopidogrel", cards=5,
                         time=datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    store.record_call(record)
    a, b, c, d, e = (card.uuid for card in record.cards)
    store.record_feedback("pgx-order-select", [
        overridden(a, PRIVATE_SYSTEM, "will-monitor"),
        overridden(b, HL7_SYSTEM, "mitigate-risk-negative-outcome"),
        overridden(c, PRIVATE_SYSTEM, "result-disputed"),
        overridden(d, HL7_SYSTEM, "patient-refuses"),
        overridden(e, PRIVATE_SYSTEM, "will-monitor"),
    ])
    report = store.report(None, ["cpic-clopidogrel"])
    top = {(r["system"], r["code"]): r for r in report["top_override_reasons"]}
    assert top[(PRIVATE_SYSTEM, "will-monitor")]["count"] == 2
    assert top[(PRIVATE_SYSTEM, "will-monitor")]["hl7_code"] == "mitigate-risk-negative-outcome"
    assert top[(HL7_SYSTEM, "mitigate-risk-negative-outcome")]["private_code"] == "will-monitor"
    assert top[(PRIVATE_SYSTEM, "result-disputed")]["hl7_code"] is None
    as_hl7 = [(r["system"], r["code"], r["count"]) for r in report["override_reasons_hl7"]]
    assert as_hl7 == [(HL7_SYSTEM, "mitigate-risk-negative-outcome", 3), (HL7_SYSTEM, "patient-refuses", 1),
                      (PRIVATE_SYSTEM, "result-disputed", 1)]
    table = format_report(report, "table")
    assert "= HL7: mitigate-risk-negative-outcome" in table and "= ours: will-monitor" in table
    assert "override reasons as HL7 non-adherence reasons" in table
    assert "3  Action taken to mitigate risk of negative outcome  (HL7 mitigate-risk-negative-outcome)" in table
    assert f"(no HL7 equivalent: {PRIVATE_SYSTEM}|result-disputed)" in table
