"""CDS Hooks 2.0 feedback: stored against issued cards, refused for unknown cards and bad input.

The accepted and overridden bodies follow the examples in the CDS Hooks specification's Feedback
section (cds-hooks/docs, docs/specification/current.md, Apache-2.0), with our card uuids.
"""
from __future__ import annotations

import pytest

from cds.errors import CdsError
from cds.store import InvalidFeedback, StoreUnavailable, UnknownCard
from store_support import call_record
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures


def accepted(card: str, suggestion: str = "e56e1945-20b3-4393-8503-a1a20fd73152") -> dict:
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
            "outcomeTimestamp": "2020-12-11T00:00:00Z"}


def overridden(card: str, code: str | None = "d7ecf885", comment: str | None = None,
               at: str = "2020-12-11T00:00:00Z") -> dict:
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": at}
    reason = {}
    if code:
        reason["reason"] = {"code": code, "system": "https://example.com/cds-hooks/override-reason-system"}
    if comment:
        reason["userComment"] = comment
    if reason:
        item["overrideReason"] = reason
    return item


def test_feedback_is_stored_against_the_card(open_store, db):
    store = open_store()
    record = call_record(cards=2)
    store.record_call(record)
    first, second = (c.uuid for c in record.cards)
    # No flush here: feedback right after the response must find the card still in the queue.
    store.record_feedback("pgx-order-select", [accepted(first),
                                               overridden(second, comment="A comment entered by the clinician.")])
    rows = db.rows("SELECT card_uuid, outcome, reason_system, reason_code, user_comment, service_id "
                   "FROM cds_feedback ORDER BY outcome")
    assert rows == [
        (first, "accepted", None, None, None, "pgx-order-select"),
        (second, "overridden", "https://example.com/cds-hooks/override-reason-system", "d7ecf885",
         "A comment entered by the clinician.", "pgx-order-select"),
    ]
    suggestions = db.scalar("SELECT accepted_suggestions FROM cds_feedback WHERE outcome = 'accepted'")
    assert "e56e1945-20b3-4393-8503-a1a20fd73152" in str(suggestions)


def test_the_whole_request_body_is_accepted_too(open_store, db):
    store = open_store()
    record = call_record()
    store.record_call(record)
    store.record_feedback("pgx-order-select", {"feedback": [overridden(record.cards[0].uuid, code=None)]})
    assert db.scalar("SELECT count(*) FROM cds_feedback") == 1


def test_repeated_feedback_for_one_card_is_kept(open_store, db):
    store = open_store()
    record = call_record()
    store.record_call(record)
    card = record.cards[0].uuid
    store.record_feedback("pgx-order-select", [overridden(card)])
    store.record_feedback("pgx-order-select", [overridden(card)])
    assert db.scalar("SELECT count(*) FROM cds_feedback WHERE card_uuid = :c", c=card) == 2


def test_feedback_for_a_card_never_issued_is_unknown_and_nothing_is_stored(open_store, db):
    store = open_store()
    record = call_record()
    store.record_call(record)
    with pytest.raises(UnknownCard) as raised:
        store.record_feedback("pgx-order-select", [overridden(record.cards[0].uuid),
                                                   overridden("00000000-0000-0000-0000-000000000000")])
    assert raised.value.card_uuids == ["00000000-0000-0000-0000-000000000000"]
    assert isinstance(raised.value, CdsError)
    assert db.scalar("SELECT count(*) FROM cds_feedback") == 0  # all or nothing


@pytest.mark.parametrize("items, message", [
    ([], "non-empty array"),
    ("accepted", "non-empty array"),
    (["x"], "feedback[0] must be an object"),
    ([{"outcome": "accepted"}], "feedback[0].card is required"),
    ([{"card": "CARD", "outcome": "ignored", "outcomeTimestamp": "2020-12-11T00:00:00Z"}],
     "outcome must be 'accepted' or 'overridden'"),
    ([{"card": "CARD", "outcome": "overridden"}], "outcomeTimestamp is required"),
    ([{"card": "CARD", "outcome": "overridden", "outcomeTimestamp": "yesterday"}], "not an ISO 8601"),
    ([{"card": "CARD", "outcome": "accepted", "outcomeTimestamp": "2020-12-11T00:00:00Z"}],
     "acceptedSuggestions is required for an accepted outcome"),
    ([{"card": "CARD", "outcome": "accepted", "acceptedSuggestions": [{}],
       "outcomeTimestamp": "2020-12-11T00:00:00Z"}], "acceptedSuggestions[0].id is required"),
    ([{"card": "CARD", "outcome": "overridden", "overrideReason": {"reason": {"code": "x"}},
       "outcomeTimestamp": "2020-12-11T00:00:00Z"}], "needs both 'code' and 'system'"),
    ([{"card": "CARD", "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}],
       "overrideReason": {"userComment": "no"}, "outcomeTimestamp": "2020-12-11T00:00:00Z"}],
     "overrideReason only belongs to an overridden outcome"),
])
def test_malformed_feedback_is_refused_with_the_reason(open_store, db, items, message):
    store = open_store()
    record = call_record()
    store.record_call(record)
    if isinstance(items, list):
        items = [{**i, "card": record.cards[0].uuid} if isinstance(i, dict) and "card" in i else i for i in items]
    with pytest.raises(InvalidFeedback) as raised:
        store.record_feedback("pgx-order-select", items)
    assert message in str(raised.value)
    assert db.scalar("SELECT count(*) FROM cds_feedback") == 0


def test_feedback_during_an_outage_for_a_card_this_process_issued_is_kept(backend, open_store, db):
    store = open_store()
    backend.down()
    record = call_record()
    store.record_call(record)  # its audit goes to the spool
    store.record_feedback("pgx-order-select", [overridden(record.cards[0].uuid)])  # and its feedback after it
    backend.up()
    assert store.replay_now(timeout=30)
    assert db.scalar("SELECT count(*) FROM cds_feedback WHERE card_uuid = :c", c=record.cards[0].uuid) == 1


def test_feedback_during_an_outage_for_a_card_this_process_cannot_vouch_for_is_unavailable(
        backend, open_store, db):
    issuing = open_store()
    record = call_record()
    issuing.record_call(record)
    assert issuing.flush()
    other_replica = open_store()
    backend.down()
    with pytest.raises(StoreUnavailable):
        other_replica.record_feedback("pgx-order-select", [overridden(record.cards[0].uuid)])
