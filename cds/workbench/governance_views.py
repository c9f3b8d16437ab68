"""Workbench pages that change the policy and the accounts (issue 22): propose with the validator's
messages and the rules' test cases, see the impact, approve or reject another's proposal, roll back,
history; accounts for admins; single sign-on. Each posting form carries its CSRF token, each action
needs its role, and each is recorded with who did it (cds.policy)."""
from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, jsonify, redirect, render_template, request, url_for

from cds.errors import CdsError
from cds.policy import impact as impact_core
from cds.policy.accounts import ROLES, AccessDenied
from cds.policy.review import PolicyRefused, compile_policy, validate_files
from cds.policy.store import diff
from cds.policy.workflow import impact as version_impact
from cds.workbench import access
from cds.workbench.governance import current_session, required, signed_in, sso, workflow
from cds.workbench.views import workbench

log = logging.getLogger("cds.workbench")
STATE_COOKIE = "pgx_oidc_state"
IMPACT_PATIENTS = 300            # patients the workbench's impact page decides (the CLI defaults to 500)
_LOGIN_WINDOW = timedelta(minutes=10)   # a single sign-on must come back within this


def requires(role: str):
    """The view needs a signed-in account with `role` (and a database to keep the policy in)."""
    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            if workflow() is None:
                return _message("Governance needs the database",
                                "This instance serves the rules/ files (no database, or CDS_POLICY=files): the policy "
                                "cannot be changed here.", 409)
            session = current_session()
            if session is None:
                return redirect(url_for("workbench.login", next=request.full_path.rstrip("?")))
            if not session.account.can(role):
                return _message("Not allowed", f"This needs the {role} role; {session.account.username} is a "
                                               f"{session.account.role}.", 403)
            return view(*args, **kwargs)
        return inner
    return wrap


def _message(title: str, message: str, status: int, back: str | None = None):
    return render_template("workbench/message.html", title=title, message=message, back=back), status


def _actor() -> str:
    session = current_session()
    assert session is not None
    return session.account.username


# --- single sign-on ------------------------------------------------------------------------------

def _base_url() -> str:
    from flask import current_app

    return current_app.extensions["pgx-cds"].settings.base_url or request.host_url


@workbench.route("/login/sso")
def sso_start():
    client = sso()
    if client is None:
        abort(404)
    target = request.args.get("next") or url_for("workbench.matrix")
    if not target.startswith("/workbench") or target.startswith("//"):
        target = url_for("workbench.matrix")
    redirect_url = client.redirect_url(_base_url())
    try:
        started = client.start(redirect_url)
    except Exception as err:
        log.warning("single sign-on could not start: %s", err)
        return _message("Sign-in unavailable", "The hospital sign-in service did not answer; try again later, or "
                                               "sign in with a workbench password.", 503)
    required().accounts.begin_oidc(started["state"], started["nonce"], started["code_verifier"], target,
                                   lifetime=_LOGIN_WINDOW)
    response = redirect(started["url"])
    # Lax, not Strict: the provider sends the browser back to us from its own site
    response.set_cookie(STATE_COOKIE, started["state"], max_age=int(_LOGIN_WINDOW.total_seconds()),
                        path="/workbench/login/sso", httponly=True, samesite="Lax", secure=request.is_secure)
    return response


@workbench.route("/login/sso/callback")
def sso_callback():
    client = sso()
    if client is None:
        abort(404)
    state = request.args.get("state", "")
    if request.args.get("error"):
        return _message("Sign-in refused", f"The hospital sign-in said: {request.args.get('error')}.", 401)
    pending = required().accounts.finish_oidc(state) if state else None
    if pending is None or not access.csrf_matches(request.cookies.get(STATE_COOKIE), state):
        return _message("Sign-in expired", "This sign-in was not started from this browser, or took too long. "
                                           "Start again from the login page.", 400, url_for("workbench.login"))
    nonce, verifier, target = pending
    try:
        identity = client.finish(request.args.get("code", ""), client.redirect_url(_base_url()), nonce, verifier)
    except Exception as err:
        log.warning("single sign-on failed: %s", type(err).__name__)
        return _message("Sign-in failed", "The sign-in could not be verified; start again.", 401,
                        url_for("workbench.login"))
    try:
        account = required().accounts.for_oidc(identity.issuer, identity.subject, identity.username, identity.role,
                                               identity.display_name)
    except CdsError as err:
        return _message("No workbench account", str(err), 403)
    if account is None or account.disabled:
        return _message("No workbench account", f"{identity.username} signed in at the hospital, but has no "
                                                "workbench account or role: ask a workbench admin.", 403)
    response = signed_in(target, account)
    # The provider sent the browser here from its site, so a redirect would carry no SameSite=Strict
    # cookie; a page of ours that moves on does.
    page = render_template("workbench/continue.html", target=target, account=account)
    response.set_data(page)
    response.status_code = 200
    response.headers.pop("Location", None)
    response.mimetype = "text/html"
    response.delete_cookie(STATE_COOKIE, path="/workbench/login/sso")
    return response


# --- policy ---------------------------------------------------------------------------------------

@workbench.route("/policy")
def policy():
    gov = workflow()
    if gov is None:
        return render_template("workbench/policy.html", governed=False, versions=[], active=None)
    history = gov.store.history()
    active = gov.store.active()
    return render_template("workbench/policy.html", governed=True, versions=history,
                           active=active.version if active else None)


def _active_files() -> dict[str, str]:
    return required().active().files


@workbench.route("/policy/propose", methods=["GET", "POST"])
@requires("author")
def propose():
    files = _active_files()
    name = request.values.get("file") or "rules/antiplatelets.yaml"
    if name not in files and not request.form.get("new_file"):
        name = sorted(files)[0]
    text = request.form.get("text", files.get(name, ""))
    reason = request.form.get("reason", "")
    context: dict[str, Any] = {"files": sorted(files), "file": name, "text": text, "reason": reason, "problems": None,
               "checked": False, "impact": None, "error": None}
    action = request.form.get("action")
    if request.method == "GET" or action is None:
        return render_template("workbench/propose.html", **context)
    proposed = {**files, name: text}
    if action == "propose":
        try:
            number = required().propose({name: text}, _actor(), reason)
        except PolicyRefused as err:
            context.update(problems=_located(err, proposed), checked=True)
            return render_template("workbench/propose.html", **context), 400
        except CdsError as err:
            context["error"] = str(err)
            return render_template("workbench/propose.html", **context), 400
        return redirect(url_for("workbench.policy_version", number=number))
    try:
        candidate = compile_policy(required().base, proposed)     # validation, then every test case
    except PolicyRefused as err:
        context.update(problems=_located(err, proposed), checked=True)
        return render_template("workbench/propose.html", **context), 400
    try:
        context.update(problems=[], checked=True)
        if action == "impact":
            context["impact"] = _impact_against_active(candidate)
    finally:
        candidate.engine.close()
    return render_template("workbench/propose.html", **context)


def _impact_against_active(candidate):
    gov = required()
    active = compile_policy(gov.base, gov.active().files)
    try:
        name, cohort = impact_core.cohort_for(gov.base, gov.store.engine, IMPACT_PATIENTS)
        return impact_core.compare(active.advisor, candidate.advisor, cohort, name)
    finally:
        active.engine.close()


def _located(err: PolicyRefused, files: dict[str, str]) -> list[dict]:
    """Each problem with the text of the line it names, so the author sees it beside the message."""
    out = []
    for d in err.diagnostics:
        lines = files.get(d.file, "").splitlines()
        out.append({"file": d.file, "line": d.line, "message": d.message,
                    "text": lines[d.line - 1] if 0 < d.line <= len(lines) else None})
    return out


@workbench.route("/policy/check", methods=["POST"])
@requires("author")
def check():
    """Validation as the author types (no engine, no test cases: those run on "Check" and on proposing)."""
    name = request.form.get("file", "")
    files = {**_active_files(), name: request.form.get("text", "")}
    try:
        validate_files(required().base, files)
    except PolicyRefused as err:
        return jsonify({"valid": False, "problems": _located(err, files)})
    return jsonify({"valid": True, "problems": []})


@workbench.route("/policy/versions/<int:number>")
def policy_version(number: int):
    gov = workflow()
    if gov is None:
        abort(404)
    try:
        version = gov.store.version(number)
    except CdsError:
        return _message("No such version", f"There is no policy version {number}.", 404, url_for("workbench.policy"))
    base = gov.store.version(version.base_version) if version.base_version else None
    active = gov.store.active()
    return render_template("workbench/policy_version.html", version=version, base=base,
                           diff=diff(base.files, version.files) if base else "",
                           active=active.version if active else None)


@workbench.route("/policy/versions/<int:number>/impact")
def policy_impact(number: int):
    gov = workflow()
    if gov is None:
        abort(404)
    try:
        result, active = version_impact(gov, number, IMPACT_PATIENTS)
    except PolicyRefused as err:
        return _message("Policy refused", str(err), 400)
    except CdsError as err:
        return _message("No impact", str(err), 404)
    return render_template("workbench/policy_impact.html", number=number, active=active, impact=result)


def _decide(number: int, decide):
    try:
        decide()
    except PolicyRefused as err:
        return _message("Policy refused", str(err), 400, url_for("workbench.policy_version", number=number))
    except AccessDenied as err:
        return _message("Not allowed", str(err), 403, url_for("workbench.policy_version", number=number))
    except CdsError as err:
        return _message("Not done", str(err), 400, url_for("workbench.policy_version", number=number))
    return redirect(url_for("workbench.policy_version", number=number))


@workbench.route("/policy/versions/<int:number>/approve", methods=["POST"])
@requires("approver")
def approve(number: int):
    when = _parse_moment(request.form.get("activate_at", ""))
    if when is False:
        return _message("Not done", "The activation time is not a date and time (2027-03-01T08:00).", 400)
    return _decide(number, lambda: required().approve(number, _actor(), request.form.get("comment") or None, when))


@workbench.route("/policy/versions/<int:number>/reject", methods=["POST"])
@requires("approver")
def reject(number: int):
    return _decide(number, lambda: required().reject(number, _actor(), request.form.get("comment", "")))


@workbench.route("/policy/rollback", methods=["POST"])
@requires("approver")
def rollback():
    raw = request.form.get("version", "").strip()
    target = int(raw) if raw.isdigit() else None
    try:
        number = required().rollback(_actor(), request.form.get("reason", ""), target)
    except PolicyRefused as err:
        return _message("Policy refused", str(err), 400, url_for("workbench.policy"))
    except CdsError as err:
        return _message("Not done", str(err), 400, url_for("workbench.policy"))
    return redirect(url_for("workbench.policy_version", number=number))


def _parse_moment(text: str):
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment if moment.tzinfo else moment.astimezone(UTC)   # a browser's local time


# --- accounts (admin) -----------------------------------------------------------------------------

@workbench.route("/accounts", methods=["GET", "POST"])
@requires("admin")
def accounts():
    gov = required()
    error = None
    if request.method == "POST":
        form = request.form
        try:
            gov.accounts.add(form.get("username", "").strip(), form.get("role", ""), _actor(),
                             password=form.get("password") or None, display_name=form.get("display_name") or None,
                             oidc=(form["sso_issuer"].strip(), None) if form.get("sso_issuer", "").strip() else None)
        except CdsError as err:
            error = str(err)
        else:
            return redirect(url_for("workbench.accounts"))
    return render_template("workbench/accounts.html", accounts=gov.accounts.all(), roles=ROLES, error=error,
                           events=[e for e in gov.store.events(100) if e.subject or e.action.startswith("log")]), \
        (400 if error else 200)


@workbench.route("/accounts/<username>", methods=["POST"])
@requires("admin")
def account(username: str):
    gov = required()
    change = request.form.get("change")
    try:
        if change == "role":
            gov.accounts.set_role(username, request.form.get("role", ""), _actor())
        elif change in ("disable", "enable"):
            if username == _actor():
                raise CdsError("an admin cannot disable their own account")
            gov.accounts.set_disabled(username, change == "disable", _actor())
        elif change == "password":
            gov.accounts.set_password(username, request.form.get("password", ""), _actor())
        else:
            raise CdsError("unknown change")
    except CdsError as err:
        return _message("Not done", str(err), 400, url_for("workbench.accounts"))
    return redirect(url_for("workbench.accounts"))
