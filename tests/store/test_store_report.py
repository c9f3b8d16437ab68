"""The committee report, computed from a known set of calls and feedback."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from cds.errors import CdsError
from cds.store import format_report
from store_support import call_record
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

SINCE = datetime(2025, 1, 1, tzinfo=timezone.utc)
RULES = ["cpic-clopidogrel", "cpic-codeine", "cpic-warfarin", "old-rule"]
R1 = {"code": "tolerated", "system": "https://example.org/override-reasons", "display": "Previously tolerated"}
R2 = {"code": "not-relevant", "system": "https://example.org/override-reasons", "display": "Not relevant"}


def at(day: int) -> datetime:
    return datetime(2026, 3, day, 12, 0, tzinfo=timezone.utc)


def fb(card, outcome, when, reason=None, comment=None):
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": when}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "suggestion-1"}]
    if reason or comment:
        item["overrideReason"] = {k: v for k, v in (("reason", reason), ("userComment", comment)) if v}
    return item


@pytest.fixture
def report_store(open_store):
    store = open_store()
    old = call_record("pat-old", rule_id="old-rule", time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    clopidogrel_1 = call_record("pat-1", rule_id="cpic-clopidogrel", cards=3, time=at(1))
    clopidogrel_2 = call_record("pat-2", rule_id="cpic-clopidogrel", cards=1, time=at(2),
                                fhir_errors=["Observation search returned HTTP 500"])
    codeine = call_record("pat-3", rule_id="cpic-codeine", cards=2, time=at(3), unresolved=["text:mystery tablet"])
    refused = call_record("pat-4", cards=0, time=at(4), consent="consent-denied",
                          unresolved=["text:mystery tablet", "rxnorm:000"])
    for record in (old, clopidogrel_1, clopidogrel_2, codeine, refused):
        store.record_call(record)
    a, b, c = (card.uuid for card in clopidogrel_1.cards)
    e, f = (card.uuid for card in codeine.cards)
    store.record_feedback("pgx-order-select", [
        fb(a, "accepted", "2026-03-01T12:05:00Z"),
        fb(b, "overridden", "2026-03-01T12:05:00Z", reason=R1),
        fb(c, "overridden", "2026-03-01T12:05:00Z", reason=R2),
        fb(c, "accepted", "2026-03-01T12:09:00Z"),              # later: the card counts as accepted
        fb(e, "overridden", "2026-03-03T12:01:00Z", reason=R1),
        fb(f, "overridden", "2026-03-03T12:01:00Z", comment="free text only"),
        fb(old.cards[0].uuid, "overridden", "2020-01-01T00:05:00Z", reason=R2),  # before the period
    ])
    return store


def test_report_counts_and_rates(report_store):
    report = report_store.report(SINCE, RULES)
    assert report["since"] == "2025-01-01T00:00:00+00:00"
    assert (report["calls"], report["cards"]) == (4, 6)
    assert report["calls_consent_withheld"] == 1
    assert report["calls_with_fhir_errors"] == 1
    assert report["calls_with_unresolved_drugs"] == 2
    assert report["top_unresolved_drugs"] == [{"drug": "text:mystery tablet", "count": 2},
                                             {"drug": "rxnorm:000", "count": 1}]
    assert report["kb_versions"] == ["kb-0123abcd"]
    by_rule = {r["rule_id"]: r for r in report["rules"]}
    assert by_rule["cpic-clopidogrel"] == {"rule_id": "cpic-clopidogrel", "alerts": 4, "accepted": 2,
                                           "overridden": 1, "no_feedback": 1, "acceptance_rate": 0.5,
                                           "override_rate": 0.25}
    assert by_rule["cpic-codeine"] == {"rule_id": "cpic-codeine", "alerts": 2, "accepted": 0, "overridden": 2,
                                       "no_feedback": 0, "acceptance_rate": 0.0, "override_rate": 1.0}
    assert by_rule["cpic-warfarin"]["alerts"] == 0 and by_rule["cpic-warfarin"]["acceptance_rate"] is None
    assert [r["rule_id"] for r in report["rules"]][:2] == ["cpic-clopidogrel", "cpic-codeine"]
    assert report["top_override_reasons"] == [
        {"system": R1["system"], "code": "tolerated", "display": "Previously tolerated", "count": 2,
         "private_code": None, "hl7_code": None},
        {"system": None, "code": None, "display": "(no reason given)", "count": 1,
         "private_code": None, "hl7_code": None},
    ]
    assert report["never_fired"] == ["cpic-warfarin", "old-rule"]


def test_report_without_since_covers_every_call(report_store):
    report = report_store.report(None, RULES)
    assert (report["calls"], report["cards"]) == (5, 7)
    old = next(r for r in report["rules"] if r["rule_id"] == "old-rule")
    assert (old["alerts"], old["overridden"], old["override_rate"]) == (1, 1, 1.0)
    assert report["never_fired"] == ["cpic-warfarin"]
    assert {r["code"]: r["count"] for r in report["top_override_reasons"]} == {"tolerated": 2, None: 1,
                                                                              "not-relevant": 1}


def test_report_formats(report_store):
    report = report_store.report(SINCE, RULES)
    assert json.loads(format_report(report, "json")) == report

    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert [r["rule_id"] for r in rows] == ["cpic-clopidogrel", "cpic-codeine", "cpic-warfarin", "old-rule"]
    assert rows[0] == {"rule_id": "cpic-clopidogrel", "alerts": "4", "accepted": "2", "overridden": "1",
                       "no_feedback": "1", "acceptance_rate": "0.5000", "override_rate": "0.2500",
                       "never_fired": "no"}
    assert rows[2]["never_fired"] == "yes" and rows[2]["acceptance_rate"] == ""

    table = format_report(report, "table")
    assert "cpic-clopidogrel" in table and "50.0%" in table and "25.0%" in table
    assert "Previously tolerated" in table and "(no reason given)" in table
    assert "rules that never fired (2):" in table and "  cpic-warfarin" in table

    with pytest.raises(CdsError, match="report format must be one of"):
        format_report(report, "xml")


def test_report_per_rule_and_policy_version(open_store):
    """The committee judges a policy change after the fact: the same rule's cards under version 1
    (mostly overridden) and version 2 (accepted), counted apart; cards from the rules/ files too."""
    store = open_store()
    before = call_record("pat-1", cards=4, time=at(1), policy_version=1)
    after = call_record("pat-2", cards=2, time=at(5), policy_version=2)
    files = call_record("pat-3", cards=1, time=at(6))
    for record in (before, after, files):
        store.record_call(record)
    store.record_feedback("pgx-order-select",
                          [fb(c.uuid, "overridden", "2026-03-01T12:05:00Z", reason=R1) for c in before.cards[:3]]
                          + [fb(c.uuid, "accepted", "2026-03-05T12:05:00Z") for c in after.cards])
    report = store.report(SINCE, RULES)
    rows = {r["policy_version"]: r for r in report["rule_versions"] if r["rule_id"] == "cpic-clopidogrel"}
    assert rows[1] == {"rule_id": "cpic-clopidogrel", "policy_version": 1, "alerts": 4, "accepted": 0,
                       "overridden": 3, "no_feedback": 1, "acceptance_rate": 0.0, "override_rate": 0.75}
    assert (rows[2]["alerts"], rows[2]["accepted"], rows[2]["acceptance_rate"]) == (2, 2, 1.0)
    assert (rows[None]["alerts"], rows[None]["no_feedback"]) == (1, 1)
    table = format_report(report, "table")
    assert "per rule and policy version" in table and "rules/ files" in table
