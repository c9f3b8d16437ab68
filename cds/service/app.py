"""The Flask app factory: everything costly is built once here; a request only parses, matches, renders.

    GET  /cds-services                  discovery (from hooks/*.yaml)
    POST /cds-services/{id}             a hook call → cards
    POST /cds-services/{id}/feedback    CDS Hooks feedback → audit store
    GET  /admin/report                  committee report (admin token unless development mode)
    GET  /healthz, /openapi.json
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from cds.cdshooks import Gathered, RequestError, case_from_hook, parse_feedback, parse_hook_request
from cds.decision import decide
from cds.engine import Engine
from cds.errors import CdsError
from cds.knowledge.loader import KnowledgeBase, load_knowledge
from cds.knowledge.models import HookService
from cds.pipeline import Advice, Advisor
from cds.service.config import Settings
from cds.service.jsonio import OrjsonProvider
from cds.service.openapi import openapi_document
from cds.service.prefetch import FhirFetcher

log = logging.getLogger("cds.service")


@dataclass
class Runtime:
    """What every request shares; built once by create_app."""

    settings: Settings
    kb: KnowledgeBase
    engine: Engine
    advisor: Advisor
    fetcher: FhirFetcher
    services: dict[str, HookService]
    store: Any = None          # cds.store.Store, or None when auditing is off
    verifier: Any = None       # cds.service.auth.JwtVerifier, or None in development mode


def _runtime() -> Runtime:
    return current_app.extensions["pgx-cds"]


def create_app(settings: Settings | None = None, *, store: Any = None) -> Flask:
    """Build the service. Raises KnowledgeError (with the validator's messages) if the knowledge is broken."""
    settings = settings or Settings.from_env()
    kb = load_knowledge(settings.knowledge_dir)
    engine = Engine.from_knowledge(kb)
    advisor = Advisor.build(engine)
    fetcher = FhirFetcher.from_settings(settings)
    if store is None and settings.audit:
        from cds.store import Store

        store = Store.open(settings.database_url)
    verifier = None
    if settings.auth_mode == "off":
        log.warning("AUTHENTICATION IS OFF (CDS_AUTH=off): development mode. Any caller can use this service; "
                    "never run it like this with real patient data.")
    else:
        from cds.service.auth import AuthConfig, JwtVerifier, replay_cache_from_env

        verifier = JwtVerifier(AuthConfig.from_env(), replay_cache_from_env())
    runtime = Runtime(settings, kb, engine, advisor, fetcher, {s.id: s for s in kb.services}, store, verifier)

    app = Flask("pgx-cds")
    app.json = OrjsonProvider(app)
    app.extensions["pgx-cds"] = runtime
    app.register_blueprint(hooks)
    app.register_blueprint(admin)
    _register_errors(app)
    _register_cors(app, settings.cors_origins)
    try:
        from cds.workbench import workbench  # the pharmacist's workbench, when installed
        app.register_blueprint(workbench)
    except ImportError:
        pass
    log.info("pgx-cds ready: knowledge %s, %d services, %d drugs, audit %s", kb.version, len(kb.services),
             len(engine.compiled.drugs), "on" if store else "off")
    return app


# --- errors and CORS ---------------------------------------------------------------------------


def _error(status: int, message: str, **extra: Any):
    body = {"error": {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                      412: "precondition_failed", 415: "unsupported_media_type", 503: "unavailable"}.get(status, "error"),
            "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return jsonify(body), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def _request_error(err: RequestError):
        return _error(err.status, str(err), field=err.field)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        return _error(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def _bug(err: Exception):
        incident = str(uuid.uuid4())
        log.exception("internal error %s", incident)
        return _error(500, "internal error; the service log has the details", incident=incident)


def _register_cors(app: Flask, origins: list[str]) -> None:
    # The public CDS Hooks sandbox calls services from the browser, so it needs CORS.
    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Max-Age"] = "600"
            if "*" not in origins:
                response.headers["Vary"] = "Origin"
        return response


# --- CDS Hooks ---------------------------------------------------------------------------------

hooks = Blueprint("hooks", __name__)


@hooks.route("/cds-services", methods=["GET", "OPTIONS"])
def discovery():
    services = []
    for s in _runtime().services.values():
        item = {"hook": s.hook, "title": s.title, "description": s.description, "id": s.id}
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
    base = (runtime.settings.base_url or request.host_url).rstrip("/")
    audience = base + request.path
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
    _authenticate()
    hook_request = parse_hook_request(_json_body(), service)
    runtime = _runtime()
    gathered = runtime.fetcher.gather(hook_request)
    advice = decide(runtime.advisor, case_from_hook(hook_request, gathered), runtime.settings.require_consent)
    response = {"cards": [c.card for c in advice.cards]}
    _audit(runtime, hook_request, advice, gathered, started)
    return jsonify(response)


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
    cards = [CardRecord(c.uuid, c.rule_id, c.guideline_id, c.guideline_version, c.indicator, c.card["summary"],
                        "+".join(c.sources) or None)
             for c in advice.cards]
    runtime.store.record_call(CallRecord(
        service_id=hook_request.service.id, hook=hook_request.hook, hook_instance=hook_request.hook_instance,
        patient_id=hook_request.patient_id, kb_version=runtime.kb.version, cards=cards, facts=facts,
        unresolved_drugs=advice.unresolved, fhir_errors=gathered.audit_reasons(),
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
    body = {"status": "ok", "knowledge_version": runtime.kb.version,
            "authentication": "off" if runtime.verifier is None else "required"}
    if runtime.store is not None:
        body["database"] = "up" if runtime.store.database_up else "down (audit is spooled)"
    return jsonify(body)


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
    if not token or given != f"Bearer {token}":
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
