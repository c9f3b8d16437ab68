"""Who is signed in to the workbench, and the governance objects its pages use (cds.policy): the
accounts and policy workflow over the service's database, and the single sign-on client.

Governance needs the database the policy lives in (the audit database, DATABASE_URL): without it
(CDS_AUDIT=false, or CDS_POLICY=files) the workbench shows the running rules and changes nothing.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app, g, redirect, render_template, request

from cds.policy.accounts import Accounts, Session
from cds.policy.workflow import Governance
from cds.workbench import access
from cds.workbench.oidc import OidcClient, OidcConfig

log = logging.getLogger("cds.workbench")
_GOVERNANCE = "pgx-cds-governance"
_SSO = "pgx-cds-sso"


def _runtime():
    return current_app.extensions["pgx-cds"]


def workflow() -> Governance | None:
    """The policy workflow over the service's database, or None when the policy is the rules/ files."""
    app = current_app
    if _GOVERNANCE not in app.extensions:
        runtime = app.extensions["pgx-cds"]
        store = runtime.policy.store
        app.extensions[_GOVERNANCE] = Governance(store, Accounts(store.engine, store), runtime.policy.base) \
            if store is not None else None
    return app.extensions[_GOVERNANCE]


def required() -> Governance:
    """The workflow, where a view has checked there is one (cds.workbench.governance_views.requires)."""
    gov = workflow()
    if gov is None:
        raise RuntimeError("governance needs the service's database")
    return gov


def enabled() -> bool:
    return workflow() is not None


def sso() -> OidcClient | None:
    app = current_app
    if _SSO not in app.extensions:
        config = OidcConfig.from_env()
        app.extensions[_SSO] = OidcClient(config) if config is not None and enabled() else None
    return app.extensions[_SSO]


def sso_label() -> str | None:
    client = sso()
    return client.config.label if client else None


def session_lifetime() -> timedelta:
    return timedelta(minutes=_runtime().settings.session_minutes)


def account_session(req) -> Session | None:
    gov = workflow()
    sid = req.cookies.get(access.SESSION_COOKIE)
    if gov is None or not sid:
        return None
    try:
        return gov.accounts.session(sid)
    except Exception:
        log.warning("workbench session could not be read (database unavailable?)")
        return None


def close_account_session(req) -> None:
    gov = workflow()
    if gov is not None:
        gov.accounts.close_session(req.cookies.get(access.SESSION_COOKIE))


def signed_in(target: str, account):
    """Open a session for `account` (a new id every login) and go to `target`."""
    sid = required().accounts.open_session(account, session_lifetime())
    response = redirect(target)
    response.set_cookie(access.SESSION_COOKIE, sid, max_age=int(session_lifetime().total_seconds()),
                        path="/workbench", httponly=True, samesite="Strict", secure=request.is_secure)
    response.delete_cookie(access.CSRF_COOKIE, path="/workbench")     # the session brings its own token
    return response


def password_login(client: str, target: str):
    gov = workflow()
    runtime = _runtime()
    if gov is None:
        return _login_again(target, "Accounts need the service's database (this instance runs without one).", 400)
    account = gov.accounts.verify_password(request.form.get("username", ""), request.form.get("password", ""))
    if account is None:
        access.login_failed(runtime, client)
        name = request.form.get("username", "")
        # recorded only under an existing account's name: what was typed may be a password in the wrong box
        if gov.accounts.get(name) is not None:
            gov.store.record(name, "login-failed")
        return _login_again(target, "That user name and password do not match an account.", 401)
    access.login_succeeded(runtime, client)
    return signed_in(target, account)


def _login_again(target: str, message: str, status: int):
    page = render_template("workbench/login.html", next=target, failed=False, message=message,
                           token_login=bool(_runtime().settings.admin_token), accounts=enabled(), sso=sso_label())
    return page, status


def current_session() -> Session | None:
    return g.get("wb_session")
