"""Who may use the workbench: anyone in development mode (CDS_AUTH=off); otherwise whoever holds the
admin token (CDS_ADMIN_TOKEN), the same secret that guards /admin.

A browser cannot attach a bearer header to a link, so the login page takes the token once and opens a
session: a fresh random id per login, kept server-side in the host's local state file (shared by
every worker) until it expires (CDS_SESSION_MINUTES) or the user logs out, and sent to the browser in
a cookie signed with itsdangerous (keyed by the admin token, so changing the token ends every
session): HttpOnly, SameSite=Strict, limited to /workbench. A cookie is accepted only if its
signature and age check out and its id is still open. Failed logins are counted per client address
and refused for a while after CDS_LOGIN_ATTEMPTS of them. Scripts may send
`Authorization: Bearer <token>` instead, as for /admin.

People who change the policy sign in to their own account (cds.policy.accounts: password or the
hospital's single sign-on); the admin token opens the read-only pages only. Every form that posts
carries a token the server checks (CSRF): the account session's own token, or, before signing in, a
random token in a SameSite=Strict cookie that the form repeats (double submit); a post whose Origin is
another site is refused as well.
"""
from __future__ import annotations

import hmac
import secrets

from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "pgx_workbench"                  # a session opened with the admin token (read-only access)
SESSION_COOKIE = "pgx_session"            # a signed-in account's session (cds.policy.accounts)
CSRF_COOKIE = "pgx_csrf"                  # the forms' token for a browser without an account session
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SALT = "pgx-cds workbench session v2"
LOGIN_WINDOW = 300.0                  # seconds over which failed logins are counted


def development_mode(runtime) -> bool:
    return runtime.verifier is None


def token_matches(token: str | None, given: str | None) -> bool:
    """Constant-time comparison, so the time taken says nothing about how much of a guess was right."""
    if not token or given is None:
        return False
    return hmac.compare_digest(token.encode(), given.encode())


def _serializer(token: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(token, salt=_SALT)


def session_lifetime(runtime) -> float:
    return runtime.settings.session_minutes * 60


def open_session(runtime) -> str:
    """A new session (new id every login); the signed cookie value."""
    sid = secrets.token_urlsafe(32)
    runtime.local_state.open_session(sid, session_lifetime(runtime))
    return _serializer(runtime.settings.admin_token).dumps({"sid": sid})


def _session_id(runtime, cookie: str | None) -> str | None:
    token = runtime.settings.admin_token
    if not cookie or not token:
        return None
    try:
        # itsdangerous compares the age with max_age as a number: a fractional lifetime is meant
        data = _serializer(token).loads(cookie, max_age=session_lifetime(runtime))  # type: ignore[arg-type]
    except BadSignature:              # also SignatureExpired
        return None
    sid = data.get("sid") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


def close_session(runtime, request: Request) -> None:
    sid = _session_id(runtime, request.cookies.get(COOKIE))
    if sid is not None:
        runtime.local_state.close_session(sid)


def is_allowed(runtime, request: Request) -> bool:
    if development_mode(runtime):
        return True
    token = runtime.settings.admin_token
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and token_matches(token, header[len("Bearer "):]):
        return True
    sid = _session_id(runtime, request.cookies.get(COOKIE))
    return sid is not None and runtime.local_state.session_live(sid)


def login_refused(runtime, client: str) -> bool:
    """Too many failed logins from this client lately."""
    return runtime.local_state.login_failures(client, LOGIN_WINDOW) >= runtime.settings.login_attempts


def login_failed(runtime, client: str) -> None:
    runtime.local_state.record_login_failure(client)


def login_succeeded(runtime, client: str) -> None:
    runtime.local_state.clear_login_failures(client)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def same_origin(request: Request) -> bool:
    """A browser's post names the page's origin; one from another site is refused (with the token check)."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return origin.rstrip("/") == request.host_url.rstrip("/")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
