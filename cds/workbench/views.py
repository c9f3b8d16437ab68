"""The pharmacist's workbench: server-rendered pages under /workbench (see docs/workbench.md).

The knowledge pages read: each shows the knowledge and policy version the service is running, except
the validation page, which re-reads the files on disk. Changing the policy (propose, impact, approve,
roll back) and accounts are in cds/workbench/governance.py, on the same blueprint.
"""
from __future__ import annotations

import logging
import uuid
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlencode

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from cds.errors import CdsError, KnowledgeError
from cds.knowledge.loader import load_knowledge
from cds.ruletests import run_case
from cds.workbench import access, governance, markdown, stats, trial
from cds.workbench.catalogue import HOOKS, Catalogue, build_catalogue, classification_label

log = logging.getLogger("cds.workbench")

workbench = Blueprint("workbench", __name__, url_prefix="/workbench",
                      template_folder="templates", static_folder="static")
EXTENSION = "pgx-cds-workbench"


@workbench.record_once
def _build_catalogue(state) -> None:
    # Start-up work for the policy served now; a newer policy version builds its own on first use.
    _catalogue_of(state.app.extensions["pgx-cds"].policy.current())


def _catalogue_of(snapshot) -> Catalogue:
    return snapshot.view(EXTENSION, lambda s: build_catalogue(s.kb, s.engine))


def _runtime():
    return current_app.extensions["pgx-cds"]


def _catalogue() -> Catalogue:
    return _catalogue_of(_runtime().snapshot)


@workbench.app_template_filter("markdown")
def _markdown(text: str | None):
    return markdown.render(text)


@workbench.app_template_filter("http_url")
def _http_url(url: str | None) -> str | None:
    """Only http(s) links become anchors; anything else (javascript:, data:) is shown as text."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


@workbench.context_processor
def _globals():
    runtime = _runtime()
    session = g.get("wb_session")
    return {"kb_version": runtime.kb.version, "development_mode": access.development_mode(runtime),
            "policy_version": runtime.snapshot.version, "account": session.account if session else None,
            "governance_on": governance.enabled(), "csrf_token": csrf_token, "today": date.today(),
            "classification_label": classification_label, "card_json": trial.card_json,
            "rule_ids": _catalogue().rule_sources}   # membership: which card rule ids are rules


# --- access ---------------------------------------------------------------------------------------

_OPEN_ENDPOINTS = ("workbench.login", "workbench.static", "workbench.sso_start", "workbench.sso_callback")


@workbench.before_request
def _require_access():
    runtime = _runtime()
    g.wb_session = governance.account_session(request)
    if request.endpoint in _OPEN_ENDPOINTS:
        return _check_csrf()
    if g.wb_session is None and not access.is_allowed(runtime, request):
        if not runtime.settings.admin_token and not governance.enabled():
            return render_template("workbench/message.html", title="Workbench unavailable",
                                   message="The workbench needs the admin token: set CDS_ADMIN_TOKEN (or run in "
                                           "development mode, CDS_AUTH=off, on a machine without patient data)."), 503
        return _login_page(request.full_path.rstrip("?"), status=401)
    return _check_csrf()


def _check_csrf():
    """Every post carries the form's token; a post from another site's page is refused."""
    if request.method != "POST":
        return None
    given = request.form.get(access.CSRF_FIELD) or request.headers.get(access.CSRF_HEADER)
    origins_ok = access.same_origin(request) or request.headers.get("Origin", "").rstrip("/") == \
        (_runtime().settings.base_url or "").rstrip("/")
    if origins_ok and access.csrf_matches(_expected_csrf(), given):
        return None
    log.warning("workbench post to %s refused: CSRF token or origin does not match", request.path)
    return render_template("workbench/message.html", title="Form expired",
                           message="This form could not be accepted: it expired, or it was sent from another "
                                   "site. Go back, reload the page and send it again."), 403


def _expected_csrf() -> str | None:
    session = g.get("wb_session")
    return session.csrf_token if session is not None else request.cookies.get(access.CSRF_COOKIE)


def csrf_token() -> str:
    """The token this page's forms carry (templates: {{ csrf_token() }})."""
    session = g.get("wb_session")
    if session is not None:
        return session.csrf_token
    token = request.cookies.get(access.CSRF_COOKIE) or g.get("wb_new_csrf")
    if not token:
        token = g.wb_new_csrf = access.new_csrf_token()
    return token


@workbench.after_request
def _set_csrf_cookie(response):
    token = g.get("wb_new_csrf")
    if token:
        response.set_cookie(access.CSRF_COOKIE, token, path="/workbench", httponly=True, samesite="Strict",
                            secure=request.is_secure)
    response.headers.setdefault("Cache-Control", "no-store")   # pages show who is signed in and their tokens
    return response


# RFC 9110 §11.6.1: a 401 names how to authenticate (scripts: the admin token as a bearer token).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pgx-cds workbench"'}


def _login_page(target: str, status: int = 200, **flags):
    page = render_template("workbench/login.html", next=target, failed=flags.pop("failed", False),
                           token_login=bool(_runtime().settings.admin_token), accounts=governance.enabled(),
                           sso=governance.sso_label(), **flags)
    return (page, status, _CHALLENGE) if status == 401 else (page, status)


def _safe_target(target: str | None) -> str:
    if not target or not target.startswith("/workbench") or target.startswith("//"):
        return url_for("workbench.matrix")   # never redirect off the workbench
    return target


@workbench.route("/login", methods=["GET", "POST"])
def login():
    runtime = _runtime()
    target = _safe_target(request.values.get("next"))
    if request.method == "GET":
        return _login_page(target)
    client = request.remote_addr or "unknown"
    if access.login_refused(runtime, client):
        minutes = round(access.LOGIN_WINDOW / 60)
        page, status = _login_page(target, status=429, throttled=minutes)
        return page, status, {"Retry-After": str(int(access.LOGIN_WINDOW))}
    if "username" in request.form:
        return governance.password_login(client, target)
    if not access.token_matches(runtime.settings.admin_token, request.form.get("token")):
        access.login_failed(runtime, client)
        return _login_page(target, status=401, failed=True)
    access.login_succeeded(runtime, client)
    response = redirect(target)
    response.set_cookie(access.COOKIE, access.open_session(runtime), max_age=int(access.session_lifetime(runtime)),
                        path="/workbench", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


@workbench.route("/logout", methods=["POST"])
def logout():
    access.close_session(_runtime(), request)     # the old cookie is worthless from now on
    governance.close_account_session(request)
    response = redirect(url_for("workbench.login"))
    response.delete_cookie(access.COOKIE, path="/workbench")
    response.delete_cookie(access.SESSION_COOKIE, path="/workbench")
    return response


@workbench.errorhandler(Exception)
def _unexpected(err: Exception):
    from werkzeug.exceptions import HTTPException

    if isinstance(err, HTTPException):
        return render_template("workbench/message.html", title=err.name, message=err.description), err.code
    incident = str(uuid.uuid4())
    log.exception("workbench error %s", incident)
    return render_template("workbench/message.html", title="Internal error",
                           message=f"Something went wrong on our side; the service log has the details "
                                   f"(incident {incident})."), 500


def _not_found(what: str, name: str, listing: str):
    return render_template("workbench/message.html", title=f"No such {what}",
                           message=f"There is no {what} '{name}' in the running knowledge.",
                           back=url_for(listing)), 404


# --- knowledge ------------------------------------------------------------------------------------

@workbench.route("/")
def matrix():
    # ?source=CPIC|DPWG shows one source's guidelines; by default both (each cell names its source)
    asked = request.args.get("source", "").upper()
    shown = [s for s in ("CPIC", "DPWG") if asked in ("", "ALL", s)] or ["CPIC", "DPWG"]
    return render_template("workbench/matrix.html", catalogue=_catalogue(), hooks=HOOKS, shown=shown)


@workbench.route("/guidelines")
def guidelines():
    kb = _runtime().kb
    return render_template("workbench/guidelines.html", guidelines=sorted(kb.guidelines.values(), key=lambda g: g.id),
                           files=_catalogue().guideline_files)


@workbench.route("/guidelines/<guideline_id>")
def guideline(guideline_id: str):
    kb = _runtime().kb
    found = kb.guidelines.get(guideline_id)
    if found is None:
        return _not_found("guideline", guideline_id, "workbench.guidelines")
    catalogue = _catalogue()
    file, line = catalogue.guideline_files[guideline_id]
    return render_template("workbench/guideline.html", guideline=found, file=file, line=line,
                           rules=catalogue.guideline_rules.get(guideline_id, []),
                           rows=[catalogue.row(d.name) for d in found.drugs])


@workbench.route("/rules")
def rules():
    return render_template("workbench/rules.html", rules=_runtime().kb.rules, catalogue=_catalogue())


@workbench.route("/rules/<rule_id>")
def rule(rule_id: str):
    runtime = _runtime()
    found = next((r for r in runtime.kb.rules if r.id == rule_id), None)
    if found is None:
        return _not_found("rule", rule_id, "workbench.rules")
    results = [run_case(runtime.engine, runtime.advisor.renderer, found, case) for case in found.tests]
    links = [_try_link(case) for case in found.tests]
    catalogue = _catalogue()
    return render_template("workbench/rule.html", rule=found, results=list(zip(results, links, strict=True)),
                           source=catalogue.rule_sources.get(found.id), governs=catalogue.governs.get(found.id, {}),
                           guideline=runtime.kb.guidelines.get(found.guideline or ""))


def _try_link(case) -> str:
    query = {"genotypes": "\n".join(f"{g}={v}" for g, v in case.genotypes.items()),
             "drugs": ", ".join(case.drugs), "hook": case.hook}
    if case.population:
        query["population"] = case.population
    return url_for("workbench.try_patient") + "?" + urlencode(query)


# --- try a patient --------------------------------------------------------------------------------

@workbench.route("/try")
def try_patient():
    runtime = _runtime()
    args = request.args
    form = {"genotypes": args.get("genotypes", ""), "drugs": args.get("drugs", ""),
            "hook": args.get("hook", "order-sign"), "population": args.get("population", "")}
    form |= {k: args.get(k, "") for k in CLINICAL_FIELDS}
    result, error = None, None
    if "genotypes" in args or "drugs" in args:
        try:
            result = trial.from_results(runtime, trial.split_genotypes(form["genotypes"]),
                                        trial.split_drugs(form["drugs"]), form["hook"], form["population"] or None,
                                        {k: form[k] for k in CLINICAL_FIELDS})
        except CdsError as err:
            error = str(err)
    return _try_page(form, result, error, pasted="", mode="results")


@workbench.route("/try/request", methods=["GET", "POST"])
def try_request():
    runtime = _runtime()
    pasted = request.form.get("request", "") if request.method == "POST" else ""
    result, error = None, None
    if request.method == "POST":
        try:
            result = trial.from_request(runtime, pasted)
        except CdsError as err:
            error = str(err)
    form = {"genotypes": "", "drugs": "", "hook": "order-sign", "population": ""} | {k: "" for k in CLINICAL_FIELDS}
    return _try_page(form, result, error, pasted=pasted, mode="request")


CLINICAL_FIELDS = ("age", "height", "weight", "race", "medications")   # a dosing algorithm's inputs (warfarin)


@workbench.route("/try/pharmcat", methods=["GET", "POST"])
def try_pharmcat():
    """Cards for an uploaded PharmCAT output (phenotype.json, report.json or outside-call TSV)."""
    runtime = _runtime()
    values = request.form if request.method == "POST" else request.args
    form = {"genotypes": "", "drugs": values.get("drugs", ""), "hook": values.get("hook", "order-sign"),
            "population": values.get("population", "")} | {k: "" for k in CLINICAL_FIELDS}
    result, error = None, None
    if request.method == "POST":
        upload = request.files.get("pharmcat")
        try:
            result = trial.from_pharmcat(runtime, upload.read(trial.MAX_UPLOAD + 1) if upload else b"",
                                         (upload.filename or "") if upload else "", trial.split_drugs(form["drugs"]),
                                         form["hook"], form["population"] or None)
        except CdsError as err:
            error = str(err)
    return _try_page(form, result, error, pasted="", mode="pharmcat")


def _try_page(form: dict, result, error: str | None, pasted: str, mode: str):
    catalogue = _catalogue()
    page = render_template("workbench/try.html", form=form, result=result, error=error, pasted=pasted, mode=mode,
                           hooks=trial.FORM_HOOKS, drugs=catalogue.drugs, populations=catalogue.populations,
                           example=trial.example_request_text())
    return page, (400 if error else 200)


# --- validation and statistics --------------------------------------------------------------------

@workbench.route("/validation")
def validation():
    runtime = _runtime()
    root = Path(runtime.kb.root)
    diagnostics, problem, disk_version = [], None, None
    try:
        disk_version = load_knowledge(root, use_cache=False).version   # the files, as `cds validate` reads them
    except KnowledgeError as err:
        texts: dict[str, list[str]] = {}
        diagnostics = [(d, _source_line(root, d.file, d.line, texts)) for d in err.diagnostics]
    except CdsError as err:
        problem = str(err)
    return render_template("workbench/validation.html", diagnostics=diagnostics, problem=problem, root=root,
                           disk_version=disk_version, running_version=runtime.kb.version,
                           checked_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))


def _source_line(root: Path, file: str, line: int, texts: dict[str, list[str]]) -> str | None:
    """The text of a reported line, so the author sees it beside the message (each file read once)."""
    if file not in texts:
        try:
            texts[file] = (root / file).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            texts[file] = []
    lines = texts[file]
    return lines[line - 1] if 0 < line <= len(lines) else None


@workbench.route("/statistics")
def statistics():
    runtime = _runtime()
    since_text = request.args.get("since", "").strip()
    if runtime.store is None:
        return render_template("workbench/statistics.html", report=None, since=since_text, chart=None,
                               problem="No audit store on this instance (CDS_AUDIT=false): nothing is counted."), 200
    since = None
    if since_text:
        try:
            since = datetime.fromisoformat(since_text)
        except ValueError:
            return render_template("workbench/statistics.html", report=None, since=since_text, chart=None,
                                   problem=f"'{since_text}' is not a date; write it as 2026-01-31."), 400
    from cds.store import StoreUnavailable

    try:
        report = runtime.store.report(since, [r.id for r in runtime.kb.rules])
    except StoreUnavailable as err:
        return render_template("workbench/statistics.html", report=None, since=since_text, chart=None,
                               problem=f"{err}; try again later."), 503
    from cds.store.report import not_counted

    return render_template("workbench/statistics.html", report=report, since=since_text, chart=stats.rule_chart(report),
                           problem=None, not_counted=not_counted(report), outcomes=stats.OUTCOMES,
                           bar_height=stats.BAR_HEIGHT,
                           label_width=stats.LABEL_WIDTH)

