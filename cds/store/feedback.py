"""Validate CDS Hooks 2.0 feedback and turn it into entries for the feedback table.

The specification (https://cds-hooks.hl7.org/2.0/#feedback): the request body is
`{"feedback": [Feedback, …]}`; each Feedback has
  card               REQUIRED  the card.uuid from the response
  outcome            REQUIRED  "accepted" or "overridden"
  acceptedSuggestions CONDITIONAL  [{ "id": suggestion uuid }], required for accepted outcomes
  overrideReason     OPTIONAL  { reason: Coding (code and system REQUIRED, display), userComment }
                               (a code of our own system or of HL7's non-adherence reason codes must be
                               one of that system's codes: cds/override_reasons.py; other systems as sent)
  outcomeTimestamp   REQUIRED  ISO timestamp in UTC when the action was taken
A client may send feedback for the same card more than once; each item is kept.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cds.override_reasons import unknown_code_problem
from cds.store.errors import InvalidFeedback
from cds.store.records import ENTRY_VERSION, utc

OUTCOMES = ("accepted", "overridden")
_MAX_TEXT = 2000  # a userComment longer than this is cut: it is a comment, not a document


def feedback_entries(service_id: str, items: Any, received_at: datetime | None = None) -> list[dict]:
    """Entries for the feedback table; raises InvalidFeedback naming the first problem found."""
    if not isinstance(service_id, str) or not service_id:
        raise InvalidFeedback("service id is missing")
    if isinstance(items, dict) and "feedback" in items:  # the whole request body was passed
        items = items["feedback"]
    if not isinstance(items, list) or not items:
        raise InvalidFeedback("'feedback' must be a non-empty array of Feedback objects")
    received = utc(received_at or datetime.now(UTC)).isoformat()
    return [_entry(service_id, item, f"feedback[{i}]", received) for i, item in enumerate(items)]


def _entry(service_id: str, item: Any, where: str, received: str) -> dict:
    if not isinstance(item, dict):
        raise InvalidFeedback(f"{where} must be an object")
    card = item.get("card")
    if not isinstance(card, str) or not card.strip():
        raise InvalidFeedback(f"{where}.card is required: the card.uuid from the CDS Hooks response")
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        raise InvalidFeedback(f"{where}.outcome must be 'accepted' or 'overridden', not {outcome!r}")
    outcome_at = _timestamp(item.get("outcomeTimestamp"), f"{where}.outcomeTimestamp")
    suggestion_ids = _accepted_suggestions(item.get("acceptedSuggestions"), outcome, where)
    reason_system = reason_code = reason_display = comment = None
    override = item.get("overrideReason")
    if override is not None:
        if outcome != "overridden":
            raise InvalidFeedback(f"{where}.overrideReason only belongs to an overridden outcome")
        if not isinstance(override, dict):
            raise InvalidFeedback(f"{where}.overrideReason must be an object")
        reason_system, reason_code, reason_display = _override_coding(override.get("reason"), where)
        comment = override.get("userComment")
        if comment is not None and not isinstance(comment, str):
            raise InvalidFeedback(f"{where}.overrideReason.userComment must be a string")
        comment = comment[:_MAX_TEXT] if comment else None

    return {
        "kind": "feedback",
        "v": ENTRY_VERSION,
        "feedback_id": str(uuid.uuid4()),
        "card_uuid": card.strip(),
        "service_id": service_id,
        "outcome": outcome,
        "outcome_at": outcome_at,
        "received_at": received,
        "accepted_suggestions": suggestion_ids,
        "reason_system": reason_system,
        "reason_code": reason_code,
        "reason_display": reason_display,
        "user_comment": comment,
    }


def _accepted_suggestions(suggestions: Any, outcome: str, where: str) -> list[str]:
    """The ids of the suggestions an accepted outcome names (required there, refused elsewhere)."""
    if outcome != "accepted":
        if suggestions:
            raise InvalidFeedback(f"{where}.acceptedSuggestions only belongs to an accepted outcome")
        return []
    if not isinstance(suggestions, list) or not suggestions:
        raise InvalidFeedback(f"{where}.acceptedSuggestions is required for an accepted outcome")
    suggestion_ids = []
    for j, suggestion in enumerate(suggestions):
        sid = suggestion.get("id") if isinstance(suggestion, dict) else None
        if not isinstance(sid, str) or not sid:
            raise InvalidFeedback(f"{where}.acceptedSuggestions[{j}].id is required (the suggestion uuid)")
        suggestion_ids.append(sid)
    return suggestion_ids


def _override_coding(reason: Any, where: str) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) of an override's reason Coding, each checked; all None without one."""
    if reason is None:
        return None, None, None
    if not isinstance(reason, dict):
        raise InvalidFeedback(f"{where}.overrideReason.reason must be a Coding object")
    reason_code, reason_system = reason.get("code"), reason.get("system")
    if not isinstance(reason_code, str) or not reason_code or not isinstance(reason_system, str) \
            or not reason_system:
        raise InvalidFeedback(f"{where}.overrideReason.reason needs both 'code' and 'system'")
    unknown = unknown_code_problem(reason_system, reason_code)
    if unknown:
        raise InvalidFeedback(f"{where}.overrideReason.reason: {unknown}")
    display = reason.get("display")
    return reason_system, reason_code, display if isinstance(display, str) else None


def _timestamp(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidFeedback(f"{where} is required (ISO 8601, UTC)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidFeedback(f"{where} is not an ISO 8601 timestamp: {value!r}") from None
    return utc(moment).isoformat()  # the spec says UTC; a timestamp without zone is read as UTC
