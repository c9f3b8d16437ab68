"""Who may use the workbench: anyone in development mode (CDS_AUTH=off); otherwise whoever holds the
admin token (CDS_ADMIN_TOKEN), the same secret that guards /admin.

A browser cannot attach a bearer header to a link, so the login page takes the token once and sets a
cookie holding an HMAC of it (never the token itself): HttpOnly, SameSite=Strict, limited to
/workbench and to WORKBENCH_SESSION seconds. Changing the token invalidates every cookie. Scripts may
send `Authorization: Bearer <token>` instead, as for /admin.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import Request

COOKIE = "pgx_workbench"
WORKBENCH_SESSION = 8 * 3600          # one working day; then the pharmacist logs in again
_PURPOSE = b"pgx-cds workbench session v1"


def development_mode(runtime) -> bool:
    return runtime.verifier is None


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _PURPOSE, hashlib.sha256).hexdigest()


def token_matches(token: str | None, given: str | None) -> bool:
    return bool(token) and given is not None and hmac.compare_digest(token.encode(), given.encode())


def is_allowed(runtime, request: Request) -> bool:
    if development_mode(runtime):
        return True
    token = runtime.settings.admin_token
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and token_matches(token, header[len("Bearer "):]):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(session_value(token), cookie)
