"""The OpenAPI 3.1 description of our endpoints (served at /openapi.json)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds import __version__
from cds.cdshooks import OPTIONAL_CONTEXT, REQUIRED_CONTEXT
from cds.knowledge.models import HookService

_CODING = {"type": "object", "required": ["code", "display"],
           "properties": {"system": {"type": "string"}, "code": {"type": "string"}, "display": {"type": "string"}}}
_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}
_ACTION = {"type": "object", "required": ["type", "description"],
           "properties": {"type": {"enum": ["create", "update", "delete"]}, "description": {"type": "string"},
                          "resource": {"type": "object"}, "resourceId": {"type": "string"}}}
_CARD = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "maxLength": 139},
        "detail": {"type": "string", "description": "GitHub-flavoured Markdown"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {"type": "object", "required": ["label"],
                   "properties": {"label": {"type": "string"}, "url": {"type": "string"}, "topic": _CODING}},
        "suggestions": {"type": "array", "items": {
            "type": "object", "required": ["label"],
            "properties": {"label": {"type": "string"}, "uuid": {"type": "string"},
                           "isRecommended": {"type": "boolean"}, "actions": {"type": "array", "items": _ACTION}}}},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": _CODING},
        "links": {"type": "array", "items": {"type": "object", "required": ["label", "url", "type"],
                                              "properties": {"label": {"type": "string"}, "url": {"type": "string"},
                                                             "type": {"enum": ["absolute", "smart"]}}}},
    },
}
_NON_BLANK = {"type": "string", "pattern": "\\S"}
_BUNDLE = {"type": "object", "required": ["resourceType"],
           "properties": {"resourceType": {"const": "Bundle"}, "entry": {"type": "array"}}}
# As cds.cdshooks.parse_hook_request checks it: the schema accepts exactly what the service does.
_CONTEXT_FIELDS = {
    "userId": _NON_BLANK,
    "patientId": {"type": "string", "pattern": "^(Patient/)?[A-Za-z0-9\\-.]{1,64}$",
                  "description": "a FHIR Patient id, optionally as Patient/<id>"},
    "encounterId": {"type": "string"},
    "selections": {"type": "array", "items": {"type": "string"}},
    "draftOrders": _BUNDLE,
    "medications": {"type": ["object", "array"]},
}


def _hook_request(hook: str) -> dict[str, Any]:
    """The request body of a service answering `hook`."""
    required = list(REQUIRED_CONTEXT[hook])
    context = {"type": "object", "required": required,
               "properties": {name: _CONTEXT_FIELDS[name] for name in [*required, *OPTIONAL_CONTEXT]}}
    return {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"const": hook},
            "hookInstance": _NON_BLANK,
            "fhirServer": {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
            "fhirAuthorization": {"type": "object", "required": ["access_token"],
                                  "properties": {"access_token": {"type": "string", "minLength": 1},
                                                 "token_type": {"type": "string"}, "expires_in": {"type": "integer"},
                                                 "scope": {"type": "string"}, "subject": {"type": "string"}}},
            "context": context,
            "prefetch": {"type": ["object", "null"], "additionalProperties": {"type": ["object", "null"]}},
        },
        "dependentRequired": {"fhirAuthorization": ["fhirServer"]},
    }


_FEEDBACK = {
    "type": "object",
    "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {"card": {"type": "string"}, "outcome": {"enum": ["accepted", "overridden"]},
                       "acceptedSuggestions": {"type": "array", "items": {"type": "object", "required": ["id"],
                                                                          "properties": {"id": {"type": "string"}}}},
                       "overrideReason": {"type": "object", "properties": {"reason": _CODING,
                                                                           "userComment": {"type": "string"}}},
                       "outcomeTimestamp": {"type": "string", "format": "date-time"}}}}},
}
_HOOK_RESPONSE = {"type": "object", "required": ["cards"],
                  "properties": {"cards": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}},
                                 "systemActions": {"type": "array", "items": _ACTION}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (the body says what is wrong)", 401: "Missing or invalid JWT bearer token",
            404: "Unknown service or card", 412: "Required prefetch data missing and no FHIR server to fetch it",
            413: "Body larger than CDS_MAX_BODY_BYTES", 415: "Body is not JSON", 503: "Audit store unavailable"}
    return {str(c): {"description": text[c],
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for c in codes}


def _service_paths(service: HookService) -> dict[str, Any]:
    """One path per service, so that each says which hook it answers (a call naming another is a 400)."""
    schema = f"#/components/schemas/HookRequest-{service.hook}"
    return {
        f"/cds-services/{service.id}": {"post": {
            "summary": f"Call {service.id} (the {service.hook} hook)", "security": [{"cdsJwt": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": schema}}}},
            "responses": {"200": {"description": "Cards", "content": {"application/json": {"schema": _HOOK_RESPONSE}}},
                          **_errors(400, 401, 404, 412, 413, 415)}}},
        f"/cds-services/{service.id}/feedback": {"post": {
            "summary": f"Feedback on {service.id}'s cards (accepted / overridden)", "security": [{"cdsJwt": []}],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
            "responses": {"200": {"description": "Stored"}, **_errors(400, 401, 404, 415, 503)}}},
    }


def openapi_document(services: Iterable[HookService]) -> dict[str, Any]:
    services = list(services)
    paths: dict[str, Any] = {
        "/cds-services": {"get": {"summary": "CDS Hooks discovery", "responses": {"200": {
            "description": "The services", "content": {"application/json": {"schema": {
                "type": "object", "required": ["services"],
                "properties": {"services": {"type": "array", "items": {"type": "object"}}}}}}}}}},
    }
    for service in services:
        paths.update(_service_paths(service))
    paths.update({
        "/admin/report": {"get": {
            "summary": "Pharmacy & therapeutics committee report", "security": [{"adminToken": []}],
            "parameters": [{"name": "since", "in": "query", "required": False,
                            "schema": {"type": "string", "format": "date"}}],
            "responses": {"200": {"description": "Alerts per rule, acceptance and override rates"},
                          **_errors(400, 401, 503)}}},
        "/healthz": {"get": {"summary": "Health and knowledge-base version",
                             "responses": {"200": {"description": "OK"}}}},
        "/readyz": {"get": {"summary": "Ready: knowledge loaded, and the audit database and the replay store answering "
                            "now",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready; the body names the failing check"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics of every worker", "security": [{}, {"metricsToken": []}],
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {}}}, **_errors(401)}}},
    })
    hooks = sorted({s.hook for s in services})
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgx-cds", "version": __version__,
                 "description": "Pharmacogenomic clinical decision support over CDS Hooks 2.0 (CPIC guidelines)."},
        "paths": paths,
        "components": {
            "schemas": {**{f"HookRequest-{hook}": _hook_request(hook) for hook in hooks},
                        "Card": _CARD, "Feedback": _FEEDBACK, "Error": _ERROR},
            "securitySchemes": {
                "cdsJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "CDS Hooks 2.0 'Trusting CDS Clients': a JWT signed by a trusted EHR"},
                "adminToken": {"type": "http", "scheme": "bearer"},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "CDS_METRICS_TOKEN, when set"},
            },
        },
    }
