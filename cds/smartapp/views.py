"""The SMART app the cards link to ("Open pharmacogenomic summary", a CDS Hooks `smart` link):

    GET /smart/launch?launch=…&iss=…      SMART App Launch (EHR launch): discovery at
                                         {iss}/.well-known/smart-configuration, then the EHR's
                                         authorization endpoint (authorization code with PKCE S256)
    GET /smart/callback?code=…&state=…   token exchange; the token response's appContext (the card's)
                                         or, without it, the patient's Observations read from {iss}
    GET /smart/launch?appContext=…       development mode only (CDS_AUTH=off): the card's appContext
                                         straight in the URL, for clients that open links directly
    POST /smart/fhir                     the page's interpretation as a FHIR Bundle (Genomics Reporting STU3)
    POST /smart/patient-summary[.pdf]    the patient's own summary: a page to print, or a PDF (downloads.py)

Configuration: CDS_SMART_CLIENT_ID (default "pgx-cds"), CDS_SMART_ISSUERS (comma-separated FHIR base
URLs allowed to launch us; any in development mode, none otherwise — we fetch from `iss`, so it must not
be any URL a link names), CDS_SMART_SECRET (signs the launch state; every worker must share it).

A face of its own: it reads the runtime the service built and the decision core, never the workbench.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from urllib.parse import urlencode, urljoin, urlparse

import requests
from flask import Blueprint, current_app, redirect, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup

from cds.cards import app_context
from cds.errors import CdsError
from cds.fhir.mappings import default_mappings
from cds.knowledge.prefetch import genomic_search_codes
from cds.patient_summary import words
from cds.pipeline import patient_facts
from cds.populations import population_words
from cds.smartapp import downloads
from cds.smartapp.summary import build_summary, parse_app_context

log = logging.getLogger("cds.smartapp")

smartapp = Blueprint("smartapp", __name__, url_prefix="/smart", template_folder="templates",
                     static_folder="static", static_url_path="/static")
EXTENSION = "pgx-cds-smartapp"
COOKIE = "pgx_smart_launch"
LAUNCH_SECONDS = 600          # a launch must come back from the authorization server within this
SCOPE = "launch openid fhirUser patient/Observation.{}"   # .rs (SMART v2) or .read (v1), as the server offers
FETCH_TIMEOUT = 5.0
# A bound on the pages read (200 results each): a patient's pharmacogenomic results are a few pages; when
# it is reached the page says its results may be incomplete, never that nothing is affected.
MAX_PAGES = 100


class LaunchError(Exception):
    """A launch we refuse, with the reason shown to the user (HTTP 400)."""


@smartapp.record_once
def _configure(state) -> None:
    runtime = state.app.extensions["pgx-cds"]
    settings = runtime.settings               # read once by the app factory
    secret = settings.smart_secret
    if not secret and runtime.verifier is not None:
        log.warning("CDS_SMART_SECRET is not set: SMART launches work only when the callback reaches the same worker")
    issuers = settings.smart_issuers
    state.app.extensions[EXTENSION] = {
        "signer": URLSafeTimedSerializer(secret or secrets.token_hex(32), salt="pgx-cds smart launch"),
        "client_id": settings.smart_client_id,
        "issuers": issuers,
        "csp": page_policy(frame_ancestors(issuers, runtime.verifier, settings.smart_frame_ancestors)),
    }


def frame_ancestors(smart_issuers: list[str], verifier, configured: list[str] | None = None) -> list[str]:
    """The origins that may show this page in a frame (EHRs open SMART apps in one): `configured`
    (CDS_SMART_FRAME_ANCESTORS), else the origins of the SMART issuers and of the trusted CDS Hooks issuers
    (an EHR's `iss`)."""
    urls = list(configured or [])
    if not urls:
        urls = smart_issuers + (sorted(verifier.config.issuers) if verifier is not None else [])
    origins = []
    for url in urls:
        parts = urlparse(url)
        if parts.scheme in ("http", "https") and parts.netloc and "'" not in parts.netloc and ";" not in parts.netloc:
            origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return sorted(set(origins))


def page_policy(ancestors: list[str]) -> str:
    """The page's Content-Security-Policy: this origin's scripts and styles only (the stylesheet is a
    file, so no inline style is needed or allowed), framed by this origin and `ancestors` only."""
    sources = " ".join(["'self'", *ancestors])
    return ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
            f"frame-ancestors {sources}")


@smartapp.after_request
def _headers(response):
    # The app's default for HTML is frame-ancestors 'none' with X-Frame-Options: DENY; a page that sets its
    # own policy sends no X-Frame-Options (it cannot name origins, and frame-ancestors supersedes it).
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = _config()["csp"]
    return response


def _runtime():
    return current_app.extensions["pgx-cds"]


def _config() -> dict:
    return current_app.extensions[EXTENSION]


def _development_mode() -> bool:
    return _runtime().verifier is None


@smartapp.app_template_filter("population_words")
def _population_words(code: str) -> str:
    return population_words(code)


def _error(message: str, status: int = 400):
    return render_template("smartapp/message.html", title="Cannot open the pharmacogenomic summary",
                           message=message), status


def _page(context: dict, launched_from: str | None, patient: str | None = None):
    runtime = _runtime()
    summary = build_summary(runtime.engine, runtime.advisor.renderer, context)
    signed = _config()["signer"].dumps({"context": context, "patient": patient})
    return render_template("smartapp/summary.html", summary=summary, kb_version=runtime.kb.version,
                           launched_from=launched_from, development_mode=_development_mode(), signed=signed)


def _signed_summary():
    """The page's results from its signed form field, and the patient (when the launch named one)."""
    try:
        body = _config()["signer"].loads(request.form.get("results", ""), max_age=downloads.DOWNLOAD_SECONDS)
    except BadSignature:
        raise LaunchError("these results are not from a summary page of this service, or the page is older than "
                          "an hour: open the summary again from the card") from None
    runtime = _runtime()
    return build_summary(runtime.engine, runtime.advisor.renderer, body["context"]), body.get("patient")


@smartapp.route("/fhir", methods=["POST"])
def fhir_download():
    """The page's interpretation as a FHIR Bundle of Genomics Reporting (STU3) resources, to download."""
    from cds.fhir.interpretation import interpretation_resources

    try:
        summary, patient = _signed_summary()
    except (LaunchError, CdsError) as err:
        return _error(str(err))
    runtime = _runtime()
    made = interpretation_resources(runtime.kb, summary.evaluation, evidence=downloads.evidence(summary),
                                    patient_ref=f"Patient/{patient}" if patient else None, scope=patient or "",
                                    as_bundle=True)
    response = current_app.response_class(json.dumps(made.bundle(), indent=2, ensure_ascii=False),
                                          mimetype="application/fhir+json")
    response.headers["Content-Disposition"] = 'attachment; filename="pharmacogenomic-results.fhir.json"'
    return response


@smartapp.route("/patient-summary", methods=["POST"])
def patient_summary_page():
    """The patient's own summary to print: results in plain words, the drugs they change, a wallet card."""
    from cds.patient_summary.pdf import qr_code

    try:
        summary, _ = _signed_summary()
    except (LaunchError, CdsError) as err:
        return _error(str(err))
    runtime = _runtime()
    mine = downloads.patient_summary(runtime.kb, runtime.advisor.renderer, summary)
    qr = qr_code(mine.qr_text).svg_inline(scale=1, omitsize=True, border=2)
    return render_template("smartapp/patient_summary.html", summary=mine, qr_svg=Markup(qr), words=words,
                           signed=request.form.get("results", ""))


@smartapp.route("/patient-summary.pdf", methods=["POST"])
def patient_summary_pdf():
    from cds.patient_summary.pdf import summary_pdf

    try:
        summary, _ = _signed_summary()
        runtime = _runtime()
        body = summary_pdf(downloads.patient_summary(runtime.kb, runtime.advisor.renderer, summary),
                           runtime.settings.pdf_font)
    except (LaunchError, CdsError) as err:
        return _error(str(err))
    response = current_app.response_class(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = 'attachment; filename="pharmacogenomic-summary.pdf"'
    return response


@smartapp.route("/launch")
def launch():
    iss, launch_token = request.args.get("iss"), request.args.get("launch")
    try:
        if iss and launch_token:
            return _start_launch(iss.rstrip("/"), launch_token)
        if request.args.get("appContext") is not None:
            if not _development_mode():
                raise LaunchError("this page is opened by a SMART launch from the EHR (launch and iss); "
                                  "appContext in the URL is accepted in development mode only")
            return _page(parse_app_context(request.args["appContext"]), None)
        raise LaunchError("a SMART launch needs the 'launch' and 'iss' parameters the EHR adds to the link")
    except (LaunchError, CdsError) as err:
        return _error(str(err))


def _start_launch(iss: str, launch_token: str):
    config = _config()
    if not _development_mode() and iss not in config["issuers"]:
        raise LaunchError(f"the FHIR server {iss} is not among the issuers allowed to launch this app "
                          "(CDS_SMART_ISSUERS)")
    if urlparse(iss).scheme not in ("https", "http"):
        raise LaunchError("iss must be an http(s) FHIR base URL")
    smart = _get_json(f"{iss}/.well-known/smart-configuration", None, "the SMART configuration")
    authorize, token = smart.get("authorization_endpoint"), smart.get("token_endpoint")
    if not isinstance(authorize, str) or not isinstance(token, str):
        raise LaunchError(f"{iss}/.well-known/smart-configuration names no authorization_endpoint and token_endpoint")
    scope = SCOPE.format("rs" if offers_v2_scopes(smart) else "read")
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    state = config["signer"].dumps({"iss": iss, "token": token, "nonce": nonce})
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": config["client_id"], "redirect_uri": _redirect_uri(),
             "launch": launch_token, "scope": scope, "state": state, "aud": iss,
             "code_challenge": challenge, "code_challenge_method": "S256"}
    response = redirect(f"{authorize}{'&' if '?' in authorize else '?'}{urlencode(query)}")
    # In an EHR's frame this page is a third party: over HTTPS the launch cookie is SameSite=None (else the
    # browser would not send it back to the callback) and Partitioned (kept per embedding site, CHIPS).
    framed = {"samesite": "None", "secure": True, "partitioned": True} if request.is_secure else {"samesite": "Lax"}
    response.set_cookie(COOKIE, config["signer"].dumps({"nonce": nonce, "verifier": verifier}), max_age=LAUNCH_SECONDS,
                        path="/smart", httponly=True, **framed)
    return response


def offers_v2_scopes(smart: dict) -> bool:
    """SMART App Launch 2: a server that takes v2 scopes (`.rs`) says "permission-v2" in its capabilities, or
    lists such scopes; one that does not (a v1 server) is asked for `.read`."""
    capabilities = smart.get("capabilities")
    if isinstance(capabilities, list) and "permission-v2" in capabilities:
        return True
    scopes = smart.get("scopes_supported")
    return isinstance(scopes, list) and any(isinstance(s, str) and s.split(".")[-1] in ("rs", "cruds") for s in scopes)


def _redirect_uri() -> str:
    base = (_runtime().settings.base_url or request.host_url).rstrip("/")
    return f"{base}/smart/callback"


@smartapp.route("/callback")
def callback():
    config = _config()
    try:
        if request.args.get("error"):
            raise LaunchError("the EHR refused the launch: "
                              f"{request.args.get('error_description') or request.args['error']}")
        try:
            state = config["signer"].loads(request.args.get("state", ""), max_age=LAUNCH_SECONDS)
            cookie = config["signer"].loads(request.cookies.get(COOKIE, ""), max_age=LAUNCH_SECONDS)
        except BadSignature:
            raise LaunchError("the launch state is missing, expired or not ours: start again from the card") from None
        if not secrets.compare_digest(state["nonce"], cookie["nonce"]):
            raise LaunchError("the launch state belongs to another launch: start again from the card")
        code = request.args.get("code")
        if not code:
            raise LaunchError("the authorization server sent no code")
        try:
            answer = requests.post(state["token"], data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": _redirect_uri(),
                "client_id": config["client_id"], "code_verifier": cookie["verifier"]}, timeout=FETCH_TIMEOUT,
                allow_redirects=False)
        except requests.RequestException as err:
            raise LaunchError(f"the token endpoint could not be reached ({type(err).__name__})") from None
        token = _json_object(answer, "the token endpoint")
        context_text = token.get("appContext")
        if isinstance(context_text, str) and context_text:
            context = parse_app_context(context_text)
        else:
            context = _context_from_fhir(state["iss"], token)
        patient = token.get("patient") if isinstance(token.get("patient"), str) else None
        response = current_app.make_response(_page(context, state["iss"], patient))
        response.delete_cookie(COOKIE, path="/smart")
        return response
    except (LaunchError, CdsError) as err:
        return _error(str(err))


def _context_from_fhir(iss: str, token: dict) -> dict:
    """No appContext in the token response: search the patient's pharmacogenomic Observations on the EHR's
    FHIR server by the codes the reader maps (the hooks' own search), every page on the same origin, and
    read them with the same reader the service uses. What could not be read is said on the page
    (`incomplete`, and the results on file that could not be interpreted), never left out in silence."""
    patient, access = token.get("patient"), token.get("access_token")
    if not isinstance(patient, str) or not patient or not isinstance(access, str):
        raise LaunchError("the token response names no patient and access token, and carries no appContext")
    codes = ",".join(genomic_search_codes(default_mappings()))
    query = urlencode({"patient": patient, "code": codes, "_count": 200})
    bundles, incomplete = _search_pages(iss, f"{iss}/Observation?{query}", access)
    runtime = _runtime()
    facts = patient_facts(runtime.engine, bundles, patient_ref=f"Patient/{patient}", reader=runtime.advisor.reader)
    context = json.loads(app_context(facts.interpretations, facts.results))
    context["incomplete"] = incomplete
    context["unreadable"] = {gene: reasons for gene, reasons in facts.unreadable_by_gene.items()
                             if gene not in facts.interpretations}
    if facts.conflicts:
        context["conflicts"] = facts.conflicts
    return context


def _search_pages(iss: str, url: str, access: str) -> tuple[list[dict], list[str]]:
    """Every page of a search (FHIR R4 http.html#paging), and why the results may be incomplete: a page
    that could not be read, a next link to another server (never followed with the patient's token), or
    more than MAX_PAGES pages. The first page failing is a LaunchError (nothing to show)."""
    bundles: list[dict] = []
    incomplete: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        if len(bundles) == MAX_PAGES:
            incomplete.append(f"the search has more than {MAX_PAGES} pages; the rest were not read")
            break
        try:
            bundle = _get_json(next_url, access, "the patient's pharmacogenomic results")
        except LaunchError as err:
            if not bundles:
                raise
            incomplete.append(f"page {len(bundles) + 1} could not be read ({err})")
            break
        bundles.append(bundle)
        next_url = next((link.get("url") for link in bundle.get("link", []) if isinstance(link, dict)
                         and link.get("relation") == "next" and isinstance(link.get("url"), str)), None)
        if next_url is not None:
            next_url = urljoin(iss + "/", next_url)
            if urlparse(next_url).netloc != urlparse(iss).netloc:
                incomplete.append("the next page of results is on another server; it was not read (the access "
                                  "token is for the EHR's FHIR server only)")
                next_url = None
    return bundles, incomplete


def _get_json(url: str, access_token: str | None, what: str) -> dict:
    headers = {"Accept": "application/fhir+json, application/json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    try:
        response = requests.get(url, headers=headers, timeout=FETCH_TIMEOUT, allow_redirects=False)
    except requests.RequestException as err:
        raise LaunchError(f"{what} could not be read from {urlparse(url).netloc} ({type(err).__name__})") from None
    return _json_object(response, f"{what}: {urlparse(url).netloc}")


def _json_object(response: requests.Response, who: str) -> dict:
    """The JSON object of a 200 answer, or a LaunchError naming `who` answered what instead."""
    if response.status_code != 200:
        raise LaunchError(f"{who} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise LaunchError(f"{who} answered with something that is not JSON") from None
    if not isinstance(body, dict):
        raise LaunchError(f"{who} answered with JSON that is not an object")
    return body
