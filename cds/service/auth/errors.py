"""The one error of authentication, and how a token-supplied value is shown in it."""
from __future__ import annotations

from typing import Any

from cds.errors import CdsError

MAX_REASON_VALUE = 200                   # longest token-supplied value echoed in a reason


class AuthError(CdsError):
    """The call is not authenticated. `reason` is short, safe for a JSON body, and never holds the token.

    `status` is 401 when the caller's credentials are wrong or cannot be checked against the issuer's
    keys, 503 when our own replay store is unavailable (the caller did nothing wrong; retry later).
    """

    def __init__(self, reason: str, status: int = 401):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def shown(value: Any) -> str:
    """A token-supplied value, cut short, for an error reason or a log line."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_REASON_VALUE else text[:MAX_REASON_VALUE] + "…"

