"""Errors the storage layer raises to its callers.

`UnknownCard` and `InvalidFeedback` are the client's fault (the service answers 404 and 400);
`StoreUnavailable` is ours: the database cannot be reached and the request cannot be answered
truthfully now (the service answers 503 so the client retries).
"""
from __future__ import annotations

from cds.errors import CdsError


class InvalidFeedback(CdsError):
    """A CDS Hooks feedback request that does not follow the specification."""


class UnknownCard(CdsError):
    """Feedback names a card uuid this service never issued."""

    def __init__(self, card_uuids: list[str]):
        self.card_uuids = card_uuids
        super().__init__(f"unknown card uuid(s): {', '.join(card_uuids)}")


class StoreUnavailable(Exception):
    """The database is unreachable and the answer depends on it. The message is for the caller;
    `cause` (the database's own error, which may name hosts) is for the log."""

    def __init__(self, message: str = "the audit database is unavailable", *, cause: str | None = None):
        super().__init__(message)
        self.cause = cause or message
