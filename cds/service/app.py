"""The Flask app factory: everything costly is built once here; a request only parses, matches, renders.

    GET  /cds-services                  discovery (from hooks/*.yaml)
    POST /cds-services/{id}             a hook call → cards
    POST /cds-services/{id}/feedback    CDS Hooks feedback → audit store
    GET  /admin/report                  committee report (admin token unless development mode)
    GET  /healthz                       liveness and knowledge version
    GET  /readyz                        readiness: knowledge loaded and the audit database answering now
    GET  /metrics                       Prometheus metrics (cds.service.metrics)
    GET  /openapi.json
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, jsonify, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from cds.cdshooks import Gathered, RequestError, case_from_hook, parse_feedback, parse_hook_request
from cds.decision import decide
from cds.dosing.advice import dosing_keys_not_needed
from cds.engine import Engine
from cds.errors import CdsError
from cds.knowledge.loader import KnowledgeBase, load_knowledge
from cds.knowledge.models import HookService
from cds.pipeline import Advice, Advisor
from cds.policy.active import PolicyHolder, Snapshot
from cds.policy.store import PolicyStore
from cds.service import logs, metrics
from cds.service.config import Settings
from cds.service.fhir_servers import FhirServerPolicy, FhirServerRefused, parse_networks
from cds.service.jsonio import OrjsonProvider
from cds.service.openapi import openapi_document
from cds.service.prefetch import FhirFetcher

log = logging.getLogger("cds.service")


@dataclass
class Runtime:
    """What every request shares; built once by create_app."""

    settings: Settings
    policy: PolicyHolder       # the local policy served now (cds.policy.active): knowledge, engine, advisor
    fetcher: FhirFetcher
    services: dict[str, HookService]
    store: Any = None          # cds.store.Store, or None when auditing is off
    verifier: Any = None       # cds.service.auth.JwtVerifier, or None in development mode
    fhir_policy: FhirServerPolicy | None = None
    local_state: Any = None    # cds.store.local_state.LocalState: sessions, login throttling

    # A request takes the policy snapshot current when it first asks and keeps it to its end, so a call
    # in flight finishes on the version it started with while a newer one is swapped in.
    @property
    def snapshot(self) -> Snapshot:
        if not has_request_context():
            return self.policy.current()
        pinned = g.get("pgx_policy")
        if pinned is None:
            pinned = g.pgx_policy = self.policy.current()
        return pinned

    @property
    def kb(self) -> KnowledgeBase:
        return self.snapshot.kb

    @property
    def engine(self) -> Engine:
        return self.snapshot.engine

    @property
    def advisor(self) -> Advisor:
        return self.snapshot.advisor


def _runtime() -> Runtime:
    return current_app.extensions["pgx-cds"]


def create_app(settings: Settings | None = None, *, store: Any = None) -> Flask:
    """Build the service. Raises KnowledgeError (with the validator's messages) if the knowledge is broken."""
    settings = settings or Settings.from_env()
    kb = load_knowledge(settings.knowledge_dir, cache_dir=settings.knowledge_cache_dir())
    fetcher = FhirFetcher.from_settings(settings)
    if store is None and settings.audit:
        from cds.store import Store

        store = Store.open(settings.database_url, settings.spool_dir, settings.audit_key,
                           audit_key_file=settings.audit_key_file)
    governed = store is not None and settings.policy == "database"
    policy = PolicyHolder.start_up(kb, PolicyStore(store.engine) if governed else None, settings.policy_poll)
    verifier = None
    development = settings.auth_mode == "off"
    if development:
        log.warning("AUTHENTICATION IS OFF (CDS_AUTH=off): development mode. Any caller can use this service; "
                    "never run it like this with real patient data.")
    else:
        from cds.service.auth import AuthConfig, JwtVerifier, replay_cache

        verifier = JwtVerifier(AuthConfig.configured(settings.auth_mode, settings.trusted_issuers),
                               replay_cache(settings.redis_url, settings.local_state))
    from cds.store.local_state import LocalState

    fhir_policy = FhirServerPolicy(parse_networks(settings.fhir_private_networks), development=development)
    runtime = Runtime(settings, policy, fetcher, {s.id: s for s in kb.services}, store, verifier,
                      fhir_policy, LocalState(settings.local_state))

    app = Flask("pgx-cds")
    app.json = OrjsonProvider(app)
    # Werkzeug refuses a longer body with 413 as soon as it is read (answered as JSON below).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["pgx-cds"] = runtime
    app.before_request(runtime.policy.ensure_watching)   # in whichever process serves (not gunicorn's master)
    app.register_blueprint(hooks)
    app.register_blueprint(admin)
    _register_errors(app)
    _register_cors(app, settings.cors_origins)
    _register_security_headers(app)
    try:
        from cds.workbench import workbench  # the pharmacist's workbench, when installed
        app.register_blueprint(workbench)
    except ImportError:
        pass
    from cds.smartapp import smartapp  # the SMART summary page the cards' smart links open
    app.register_blueprint(smartapp)
    metrics.start(runtime.services, _configured_fhir_servers(verifier))
    log.info("pgx-cds ready: knowledge %s, policy version %s, %d services, %d drugs, audit %s", runtime.kb.version,
             policy.version or "rules/ files", len(kb.services), len(runtime.engine.compiled.drugs),
             "on" if store else "off")
    return app


def _configured_fhir_servers(verifier: Any) -> list[str]:
    """The FHIR servers the trusted issuers may name (none known in development mode)."""
    if verifier is None:
        return []
    return sorted({base for issuer in verifier.config.issuers.values() for base in issuer.fhir_servers})


# --- errors and CORS ---------------------------------------------------------------------------


_ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                412: "precondition_failed", 413: "payload_too_large", 415: "unsupported_media_type",
                429: "too_many_requests", 431: "request_header_fields_too_large", 503: "unavailable"}


def _error(status: int, message: str, **extra: Any):
    body = {"error": _ERROR_NAMES.get(status, "error"),
            "message": message, **{k: v for k, v in extra.items() if v is not None}}
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        # RFC 6750 §3: a 401 names the scheme; with credentials that failed, also why (no error code
        # when none were sent, §3.1).
        challenge = 'Bearer realm="pgx-cds"'
        if not message.startswith("missing Authorization"):
            reason = message.replace("\\", "").replace('"', "'")[:200]
            challenge += f', error="invalid_token", error_description="{reason}"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def _request_error(err: RequestError):
        return _error(err.status, str(err), field=err.field)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = err.code or 500
        message = err.description or err.name
        if code == 413:
            message = (f"the request body is larger than this service accepts "
                       f"({current_app.config['MAX_CONTENT_LENGTH']} bytes, CDS_MAX_BODY_BYTES)")
        response = _error(code, message)
        if code == 405:
            response.headers["Allow"] = ", ".join(sorted(getattr(err, "valid_methods", None) or ()))
        return response

    @app.errorhandler(Exception)
    def _bug(err: Exception):
        incident = str(uuid.uuid4())
        log.exception("internal error %s", incident)
        return _error(500, "internal error; the service log has the details", incident=incident)


CORS_PATH = "/cds-services"


def _register_cors(app: Flask, origins: list[str]) -> None:
    # The public CDS Hooks sandbox calls services from the browser, so they need CORS; nothing else
    # does (the workbench, /admin, /metrics, the SMART page): another origin's script may not read them.
    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin")
        if not (request.path == CORS_PATH or request.path.startswith(CORS_PATH + "/")):
            return response
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Max-Age"] = "600"
            if "*" not in origins:
                response.headers["Vary"] = "Origin"
        return response


def _register_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response):
        # Pages (the workbench) may not be framed and load only this origin's scripts and styles;
        # nothing is sniffed into another type.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/html":
            if "Content-Security-Policy" not in response.headers:   # a page with its own (the SMART page) frames itself
                response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                               "object-src 'none'; base-uri 'none'; "
                                                               "form-action 'self'; frame-ancestors 'none'")
                response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


# --- CDS Hooks ---------------------------------------------------------------------------------

hooks = Blueprint("hooks", __name__)


@hooks.route("/cds-services", methods=["GET", "OPTIONS"])
def discovery():
    services = []
    for s in _runtime().services.values():
        item: dict[str, Any] = {"hook": s.hook, "title": s.title, "description": s.description, "id": s.id}
        if s.prefetch:
            item["prefetch"] = dict(s.prefetch)
        services.append(item)
    return jsonify({"services": services})


def _service(service_id: str) -> HookService:
    service = _runtime().services.get(service_id)
    if service is None:
        raise RequestError(f"no CDS service '{service_id}' (see GET /cds-services)", status=404)
    return service


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise RequestError("send the request as JSON (Content-Type: application/json)", status=415)
    body = request.get_json(silent=True)
    if body is None:
        raise RequestError("the request body is not valid JSON")
    return body


def _authenticate() -> dict | None:
    runtime = _runtime()
    if runtime.verifier is None:
        return None
    # Never the Host header: the caller controls it (Settings refuses to start without CDS_BASE_URL).
    base_url = runtime.settings.base_url
    assert base_url is not None          # a verifier exists only with authentication on, which needs it
    audience = base_url + request.path
    try:
        return runtime.verifier.verify(request.headers.get("Authorization"), audience)
    except CdsError as err:
        raise RequestError(getattr(err, "reason", None) or str(err), status=getattr(err, "status", 401)) from None


@hooks.route("/cds-services/<service_id>", methods=["POST", "OPTIONS"])
def call_service(service_id: str):
    if request.method == "OPTIONS":
        return "", 204
    started = time.perf_counter()
    service = _service(service_id)
    status = 500
    scrubbing = None
    try:
        claims = _authenticate()
        hook_request = parse_hook_request(_json_body(), service)
        from cds.patient_ids import scrubber

        # Whatever is logged while this call runs loses the patient id (bare or as Patient/X).
        scrubbing = logs.current_scrubber.set(scrubber(hook_request.patient_id))
        runtime = _runtime()
        origin = _checked_fhir_server(runtime, hook_request, claims)
        gathered = runtime.fetcher.gather(hook_request, dosing_keys_not_needed(runtime.advisor, hook_request))
        case = case_from_hook(hook_request, gathered)
        case.app_url = smart_app_url(runtime)
        advice = decide(runtime.advisor, case, runtime.settings.require_consent)
        response = {"cards": [c.card for c in advice.cards]}
        _audit(runtime, hook_request, advice, gathered, started)   # journaled before the answer leaves
        _count(runtime, hook_request, advice, gathered, origin)
        status = 200
        return jsonify(response)
    except RequestError as err:
        status = err.status
        raise
    except HTTPException as err:
        status = err.code or 500
        raise
    finally:
        if scrubbing is not None:
            logs.current_scrubber.reset(scrubbing)
        metrics.HOOK_REQUESTS.labels(service.id, str(status)).inc()
        metrics.HOOK_LATENCY.labels(service.id).observe(time.perf_counter() - started)


def _checked_fhir_server(runtime: Runtime, hook_request, claims: dict | None) -> str | None:
    """Refuse a fhirServer this caller may not make us contact, before any fetch; its origin, for metrics."""
    if not hook_request.fhir_server:
        return None
    allowed = None
    if runtime.verifier is not None and claims is not None:
        allowed = runtime.verifier.config.issuers[claims["iss"]].fhir_servers
    assert runtime.fhir_policy is not None    # the app factory always sets one
    try:
        base = runtime.fhir_policy.check(hook_request.fhir_server, allowed)
    except FhirServerRefused as err:
        log.warning("refused fhirServer for %s: %s", (claims or {}).get("iss", "development mode"), err)
        raise RequestError(str(err), status=err.status, field="fhirServer") from None
    return metrics.fhir_origin(base)


def _count(runtime: Runtime, hook_request, advice: Advice, gathered: Gathered, origin: str | None) -> None:
    for card in advice.cards:
        metrics.CARDS.labels(card.indicator, card.rule_id).inc()
    failed_fetches = [k for k in gathered.errors if k not in hook_request.prefetch]
    if failed_fetches and origin:
        metrics.FHIR_FETCH_ERRORS.labels(origin).inc(len(failed_fetches))
    if advice.unresolved:
        metrics.UNRESOLVED_ORDERS.labels(hook_request.service.id).inc(len(advice.unresolved))
    if runtime.store is not None:
        metrics.AUDIT_QUEUE.set(runtime.store.queue_depth)


def smart_app_url(runtime: Runtime) -> str:
    """The SMART summary page the cards link to, absolute since the EHR opens it: CDS_BASE_URL behind a
    proxy, else the host this request came to."""
    # scheme and Host as werkzeug read them; request.host_url's IRI round trip was a measurable share of a call
    return (runtime.settings.base_url or f"{request.scheme}://{request.host}").rstrip("/") + "/smart/launch"


def _audit(runtime: Runtime, hook_request, advice: Advice, gathered: Gathered, started: float) -> None:
    if runtime.store is None:
        return
    from cds.store import CallRecord, CardRecord, FactRecord

    facts = []
    for gene, items in advice.facts.interpretations.items():
        for i in items:
            facts.append(FactRecord(gene, i.phenotype, i.lookup_key, list(i.source_ids)))
    for gene, ids in advice.facts.conflicts.items():
        facts.append(FactRecord(gene, "conflicting results", None, list(ids)))
    version = runtime.snapshot.version
    cards = [CardRecord(c.uuid, c.rule_id, c.guideline_id, c.guideline_version, c.indicator, c.card["summary"],
                        "+".join(c.sources) or None, version)
             for c in advice.cards]
    runtime.store.record_call(CallRecord(
        service_id=hook_request.service.id, hook=hook_request.hook, hook_instance=hook_request.hook_instance,
        patient_id=hook_request.patient_id, kb_version=runtime.kb.version, cards=cards, facts=facts,
        unresolved_drugs=advice.unresolved, fhir_errors=gathered.audit_reasons(),
        reasons=advice.reasons(),
        consent=advice.consent, latency_ms=round(1000 * (time.perf_counter() - started), 2)))


@hooks.route("/cds-services/<service_id>/feedback", methods=["POST", "OPTIONS"])
def feedback(service_id: str):
    if request.method == "OPTIONS":
        return "", 204
    _service(service_id)
    _authenticate()
    items = parse_feedback(_json_body())
    runtime = _runtime()
    if runtime.store is None:
        raise RequestError("feedback is not stored: auditing is off on this instance (CDS_AUDIT=false)", status=503)
    from cds.store import InvalidFeedback, StoreUnavailable, UnknownCard

    try:
        runtime.store.record_feedback(service_id, items)
    except UnknownCard as err:
        raise RequestError(str(err), status=404) from None
    except InvalidFeedback as err:
        raise RequestError(str(err), status=400) from None
    except StoreUnavailable as err:
        raise RequestError(str(err), status=503) from None
    return "", 200


# --- operations --------------------------------------------------------------------------------

admin = Blueprint("admin", __name__)


@admin.route("/healthz")
def health():
    runtime = _runtime()
    body = {"status": "ok", "knowledge_version": runtime.kb.version, "policy_version": runtime.snapshot.version,
            "authentication": "off" if runtime.verifier is None else "required"}
    if runtime.store is not None:
        body["database"] = "up" if runtime.store.database_up else "down (audit is spooled)"
        body["audit_backlog"] = runtime.store.backlog().as_dict()    # on this host's disk, for the database
    return jsonify(body)


READY_SECONDS = 2.0   # /readyz answers within this, whatever a dependency does


@admin.route("/readyz")
def ready():
    """Ready when the knowledge is loaded and everything a call needs answers now (not a cached flag):
    the audit database and the JWT replay store. Each check runs in a thread of its own, and /readyz
    answers within READY_SECONDS: a dependency that hangs is "no answer", not a held worker."""
    runtime = _runtime()
    ok = runtime.kb is not None and runtime.engine is not None and bool(runtime.services)
    checks: dict[str, str] = {"knowledge": runtime.kb.version if ok else "not loaded"}
    probes = {}
    if runtime.store is not None:
        probes["database"] = lambda: _database_answers(runtime.store.engine)
    else:
        checks["database"] = "not used (CDS_AUDIT=false)"
    if runtime.verifier is not None:
        probes["replay store"] = runtime.verifier.replay_cache.readiness
    else:
        checks["replay store"] = "not used (development mode)"
    for name, outcome in _within(probes, READY_SECONDS).items():
        checks[name] = outcome
        ok = ok and (outcome == "up" or outcome.startswith("up ("))
    return jsonify({"status": "ready" if ok else "not ready", "checks": checks}), 200 if ok else 503


def _database_answers(engine) -> str:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return ""


def _within(probes: dict[str, Any], seconds: float) -> dict[str, str]:
    """Run each probe in its own daemon thread; "up" (and what it said) for those that returned within `seconds`, the
    reason for the others (a probe still running goes on to its own timeout, unwaited for)."""
    outcomes: dict[str, str] = {}

    def run(name: str, probe) -> None:
        try:
            what = probe()
            outcomes[name] = f"up ({what})" if what else "up"
        except Exception as err:
            outcomes[name] = f"unreachable ({type(err).__name__})"

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in probes.items()]
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: outcomes.get(name, f"no answer within {seconds:g} s") for name in probes}


@admin.route("/metrics")
def prometheus_metrics():
    runtime = _runtime()
    token = runtime.settings.metrics_token
    given = request.headers.get("Authorization", "")
    if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise RequestError("/metrics needs 'Authorization: Bearer <CDS_METRICS_TOKEN>'", status=401)
    spool_dir = None
    if runtime.store is not None:
        metrics.AUDIT_QUEUE.set(runtime.store.queue_depth)
        spool_dir = runtime.store.spool.directory
    body, content_type = metrics.exposition(spool_dir)
    return Response(body, content_type=content_type)


@admin.route("/openapi.json")
def openapi():
    return jsonify(openapi_document(_runtime().services.values()))


def require_admin() -> None:
    """Admin pages need the admin bearer token, except in development mode (CDS_AUTH=off)."""
    runtime = _runtime()
    if runtime.verifier is None:
        return
    token = runtime.settings.admin_token
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise RequestError("admin endpoints need 'Authorization: Bearer <CDS_ADMIN_TOKEN>'", status=401)


@admin.route("/admin/report")
def report():
    require_admin()
    runtime = _runtime()
    if runtime.store is None:
        raise RequestError("no audit store on this instance (CDS_AUDIT=false)", status=503)
    since = request.args.get("since")
    from datetime import datetime

    from cds.store import StoreUnavailable

    try:
        since_dt = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise RequestError("since must be an ISO date, e.g. 2026-01-31") from None
    try:
        return jsonify(runtime.store.report(since_dt, [r.id for r in runtime.kb.rules]))
    except StoreUnavailable as err:
        raise RequestError(str(err), status=503) from None
