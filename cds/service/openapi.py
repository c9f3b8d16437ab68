"""The OpenAPI 3.1 description of our endpoints (served at /openapi.json)."""
from __future__ import annotations

from typing import Any, Iterable

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
_REQUEST = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string"},
        "hookInstance": {"type": "string"},
        "fhirServer": {"type": "string", "format": "uri"},
        "fhirAuthorization": {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
                              "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string"},
                                             "expires_in": {"type": "integer"}, "scope": {"type": "string"},
                                             "subject": {"type": "string"}}},
        "context": {"type": "object", "required": ["userId", "patientId"]},
        "prefetch": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
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


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (the body says what is wrong)", 401: "Missing or invalid JWT bearer token",
            404: "Unknown service or card", 412: "Required prefetch data missing and no FHIR server to fetch it",
            415: "Body is not JSON", 503: "Audit store unavailable"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for c in codes}


def openapi_document(services: Iterable[HookService]) -> dict[str, Any]:
    ids = [s.id for s in services]
    service_param = {"name": "service_id", "in": "path", "required": True, "schema": {"enum": ids}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgx-cds", "version": "1.0",
                 "description": "Pharmacogenomic clinical decision support over CDS Hooks 2.0 (CPIC guidelines)."},
        "paths": {
            "/cds-services": {"get": {"summary": "CDS Hooks discovery", "responses": {"200": {
                "description": "The services", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["services"],
                    "properties": {"services": {"type": "array", "items": {"type": "object"}}}}}}}}}},
            "/cds-services/{service_id}": {"post": {
                "summary": "Call a CDS service (hook invocation)", "parameters": [service_param],
                "security": [{"cdsJwt": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HookRequest"}}}},
                "responses": {"200": {"description": "Cards", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["cards"],
                    "properties": {"cards": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}},
                                   "systemActions": {"type": "array", "items": _ACTION}}}}}},
                              **_errors(400, 401, 404, 412, 415)}}},
            "/cds-services/{service_id}/feedback": {"post": {
                "summary": "Feedback on cards (accepted / overridden)", "parameters": [service_param],
                "security": [{"cdsJwt": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
                "responses": {"200": {"description": "Stored"}, **_errors(400, 401, 404, 415, 503)}}},
            "/admin/report": {"get": {
                "summary": "Pharmacy & therapeutics committee report", "security": [{"adminToken": []}],
                "parameters": [{"name": "since", "in": "query", "required": False, "schema": {"type": "string", "format": "date"}}],
                "responses": {"200": {"description": "Alerts per rule, acceptance and override rates"}, **_errors(400, 401, 503)}}},
            "/healthz": {"get": {"summary": "Health and knowledge-base version", "responses": {"200": {"description": "OK"}}}},
            "/readyz": {"get": {"summary": "Ready: knowledge loaded and the audit database answering now",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready; the body names the failing check"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics of every worker",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {}}}}}},
        },
        "components": {
            "schemas": {"HookRequest": _REQUEST, "Card": _CARD, "Feedback": _FEEDBACK, "Error": _ERROR},
            "securitySchemes": {
                "cdsJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "CDS Hooks 2.0 'Trusting CDS Clients': a JWT signed by a trusted EHR"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
