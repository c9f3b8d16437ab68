"""The CDS Hooks 2.0 request and feedback contract: what must be there, and a clear 4xx when it is not.

Only what makes a request meaningless is rejected (wrong hook, no patient, no draft orders, a
`draftOrders` that is not a Bundle). The FHIR resources inside are read leniently later: the
specification's own R4 examples and the public sandbox send imperfect resources.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cds.decision import PatientCase
from cds.errors import CdsError
from cds.knowledge.models import HookService
from cds.memo import Memo


class RequestError(CdsError):
    """A CDS Hooks request the service cannot act on; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


# Context fields each hook requires, from the hook definitions (cds-hooks.org/hooks/...).
REQUIRED_CONTEXT: dict[str, dict[str, type | tuple[type, ...]]] = {
    "patient-view": {"userId": str, "patientId": str},
    "order-select": {"userId": str, "patientId": str, "selections": list, "draftOrders": dict},
    "order-sign": {"userId": str, "patientId": str, "draftOrders": dict},
    # CDS Hooks 1.0's hook, since replaced by order-sign; some EHRs still send it.
    # Its `medications` is a Bundle in the specification's example (an array in older drafts).
    "medication-prescribe": {"userId": str, "patientId": str, "medications": (dict, list)},
}
OPTIONAL_CONTEXT = {"encounterId": str}
_PATIENT_ID = re.compile(r"(?:Patient/)?[A-Za-z0-9\-.]{1,64}")


@dataclass
class HookRequest:
    service: HookService
    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any]                  # key → resource, or None when the EHR had no data
    fhir_server: str | None
    access_token: str | None

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]

    @property
    def patient_ref(self) -> str:
        pid = self.patient_id
        return pid if "/" in pid else f"Patient/{pid}"


def parse_hook_request(body: Any, service: HookService) -> HookRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    hook = body.get("hook")
    if not isinstance(hook, str) or not hook:
        raise RequestError("'hook' is required", field="hook")
    if hook != service.hook:
        raise RequestError(f"service {service.id} answers the {service.hook} hook, not {hook}", field="hook")
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance.strip():
        raise RequestError("'hookInstance' is required (a UUID for this hook call)", field="hookInstance")
    context = body.get("context")
    if not isinstance(context, dict):
        raise RequestError("'context' is required and must be an object", field="context")
    for name, kind in REQUIRED_CONTEXT[hook].items():
        value = context.get(name)
        if value is None:
            raise RequestError(f"context.{name} is required for the {hook} hook", field=f"context.{name}")
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            expected = "non-empty string" if kind is str else " or ".join(
                {"dict": "object", "list": "array"}[k.__name__] for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise RequestError(f"context.{name} must be a {expected}", field=f"context.{name}")
    if not _PATIENT_ID.fullmatch(context["patientId"]):
        # A FHIR id (R4 §2.24.0.1 "id": [A-Za-z0-9\-\.]{1,64}), optionally as "Patient/<id>". Anything
        # else ("Patient/123/_history/4", "123&subject=456") would change the FHIR queries built from it.
        raise RequestError("context.patientId must be a FHIR Patient id ([A-Za-z0-9-.], at most 64 characters), "
                           "optionally written as Patient/<id>", field="context.patientId")
    for name, kind in OPTIONAL_CONTEXT.items():
        if name in context and not isinstance(context[name], kind):
            raise RequestError(f"context.{name} must be a string", field=f"context.{name}")
    if "draftOrders" in REQUIRED_CONTEXT[hook]:
        draft = context["draftOrders"]
        if draft.get("resourceType") != "Bundle":
            raise RequestError("context.draftOrders must be a FHIR Bundle", field="context.draftOrders")
        if "entry" in draft and not isinstance(draft["entry"], list):
            raise RequestError("context.draftOrders.entry must be an array", field="context.draftOrders.entry")
    if hook == "order-select" and not all(isinstance(s, str) for s in context["selections"]):
        raise RequestError("context.selections must be an array of references such as 'MedicationRequest/123'",
                           field="context.selections")
    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise RequestError("'prefetch' must be an object", field="prefetch")
    server = body.get("fhirServer")
    if server is not None:
        # RFC 3986 §3.1: the scheme is case-insensitive ("HTTPS://ehr/fhir" names the same server)
        scheme, separator, rest = server.partition("://") if isinstance(server, str) else ("", "", "")
        if not separator or scheme.lower() not in ("http", "https"):
            raise RequestError("'fhirServer' must be an http(s) URL", field="fhirServer")
        server = f"{scheme.lower()}://{rest}"
    auth = body.get("fhirAuthorization")
    token = None
    if auth is not None:
        if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str) or not auth["access_token"]:
            raise RequestError("'fhirAuthorization.access_token' is required when fhirAuthorization is given",
                               field="fhirAuthorization")
        if server is None:
            raise RequestError("'fhirServer' is required when fhirAuthorization is given", field="fhirServer")
        token = auth["access_token"]
    return HookRequest(service, hook, instance, context, prefetch, server, token)


def selected_orders(request: HookRequest) -> dict[str, Any]:
    """The draft orders the advice is about: the `selections` for order-select, all drafts for order-sign
    (and the `medications` of the legacy medication-prescribe hook)."""
    if request.hook == "medication-prescribe":
        medications = request.context["medications"]
        if isinstance(medications, dict):
            return medications
        return {"resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": m} for m in medications if isinstance(m, dict)]}
    draft = request.context["draftOrders"]
    if request.hook != "order-select":
        return draft
    wanted = set(request.context["selections"])
    entries = []
    for entry in draft.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and f"{resource.get('resourceType')}/{resource.get('id')}" in wanted:
            entries.append(entry)
    # Medications referenced by a selected order may sit elsewhere in the bundle: keep those too.
    others = [e for e in draft.get("entry") or []
              if isinstance(e, dict) and isinstance(e.get("resource"), dict)
              and e["resource"].get("resourceType") == "Medication"]
    return {"resourceType": "Bundle", "type": draft.get("type", "collection"), "entry": entries + others}


@dataclass
class Gathered:
    """The FHIR data of one hook call: what the EHR prefetched and what we fetched for the rest."""

    data: dict[str, Any] = field(default_factory=dict)       # key → resource or Bundle (None: EHR has none)
    errors: dict[str, str] = field(default_factory=dict)     # key → why it could not be (completely) gathered
    fetched: list[str] = field(default_factory=list)         # keys we fetched ourselves
    refetched: dict[str, str] = field(default_factory=dict)  # key → what was wrong with the prefetched value
    # Resources fetched by following references the gathered data left open on fhirServer: the
    # results of DiagnosticReports, the Medications of orders. Each as a Bundle entry (fullUrl, resource).
    referenced: list[dict[str, Any]] = field(default_factory=list)

    def resources(self, *keys: str) -> list[Any]:
        return [self.data[k] for k in keys if self.data.get(k) is not None]

    def referenced_bundle(self, *types: str) -> dict[str, Any] | None:
        entries = [e for e in self.referenced if e["resource"].get("resourceType") in types]
        return {"resourceType": "Bundle", "type": "collection", "entry": entries} if entries else None

    def audit_reasons(self) -> list[str]:
        """Every retrieval problem of the call, for the audit record (data we could not use, and data we
        had to fetch again because the prefetched value was a failed retrieval)."""
        return ([f"{k}: {v}" for k, v in self.errors.items()]
                + [f"{k}: prefetched value not used ({v}); fetched from fhirServer" for k, v in self.refetched.items()])


# Prefetch keys whose data are the patient's genomic results: a problem with any of them makes the
# genotype-based check incomplete.
GENOMIC_KEYS = ("genomics", "reports", "reports-by-code")
# Prefetch keys of the clinical inputs of dosing algorithms (cds/dosing): body height and weight, and the
# active medications (amiodarone, enzyme inducers). Optional: without them a dose card names what is missing.
VITALS_KEY = "vitals"
ACTIVE_MEDICATION_KEYS = ("active-medications", "active-statements")


def prefetch_problem(value: Any, template: str) -> str | None:
    """Why a prefetched value (not None) is a failed retrieval rather than data, or None when it is data.

    CDS Hooks 2.0, Prefetch Template: "If the CDS Client encounters errors prefetching the requested
    data, OperationOutcome(s) SHOULD be used to communicate those errors ... CDS Services SHOULD check
    any prefetched data for the existence of OperationOutcomes." A search template's value is a
    Bundle (FHIR R4 http.html#search); a read's is a resource of the template's type."""
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return "the prefetched value is not a FHIR resource or Bundle"
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        return "the EHR sent an OperationOutcome" + _issue_codes(value)
    is_search, wanted = _template_shape(template)
    if is_search:
        if rtype != "Bundle":
            return f"a {rtype} where the search's Bundle should be"
        entries = value.get("entry")
        if entries is not None and not isinstance(entries, list):
            return "Bundle.entry is not a list"
        for entry in entries or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome" and _fatal(resource):
                return "the search's Bundle carries an error OperationOutcome" + _issue_codes(resource)
    elif wanted and rtype != wanted:
        return f"a {rtype} where a {wanted} should be"
    return None


def _template_shape(template: str) -> tuple[bool, str]:
    return _SHAPES.get(template, lambda: _shape_of(template))


_SHAPES: Memo[tuple[bool, str]] = Memo(256)       # the services' prefetch templates (knowledge), cds.memo


def _shape_of(template: str) -> tuple[bool, str]:
    """(is it a search, the resource type it asks for): `Observation?…` is a search, `Patient/{{…}}` a read."""
    path = template.split("?", 1)[0]
    return "?" in template or "/" not in path, path.split("/", 1)[0].strip()


def next_link(bundle: Any) -> str | None:
    """The `next` link of a searchset page (FHIR R4 http.html#paging), if any."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    for link in bundle.get("link") or []:
        if (isinstance(link, dict) and link.get("relation") == "next"
                and isinstance(link.get("url"), str) and link["url"]):
            return link["url"]
    return None


def _fatal(outcome: dict) -> bool:
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in outcome.get("issue") or [])


def _issue_codes(outcome: dict) -> str:
    codes = sorted({code for i in outcome.get("issue") or [] if isinstance(i, dict)
                    and isinstance(code := i.get("code"), str)})
    return f" ({', '.join(codes)})" if codes else ""


def case_from_hook(request: HookRequest, gathered: Gathered) -> PatientCase:
    """The decision core's input for one hook call. The legacy medication-prescribe hook is decided as
    order-sign; patient-view is about the patient's active medications, the order hooks about the drafts.
    Genomic results are the genomics search, the Genomics Reports and the report results fetched by
    reference; a problem gathering any of them is a problem with the genomic data."""
    hook = "order-sign" if request.hook == "medication-prescribe" else request.hook
    patient = gathered.data.get("patient")
    medications = gathered.resources("medications") if hook == "patient-view" else [selected_orders(request)]
    medication_bundle = gathered.referenced_bundle("Medication")
    if medication_bundle:
        medications.append(medication_bundle)
    genomics = gathered.resources(*GENOMIC_KEYS)
    result_bundle = gathered.referenced_bundle("Observation")
    if result_bundle:
        genomics.append(result_bundle)
    errors = {k: v for k, v in gathered.errors.items() if k not in GENOMIC_KEYS}
    genomic_errors = [f"{k}: {v}" if k != "genomics" else v for k, v in gathered.errors.items() if k in GENOMIC_KEYS]
    if genomic_errors:
        errors["genomics"] = "; ".join(genomic_errors)
    consent_gathered = "consent" in request.service.prefetch
    vitals, active = clinical_resources(gathered, errors)
    return PatientCase(
        hook=hook, patient_ref=request.patient_ref, patient=patient if isinstance(patient, dict) else None,
        genomics=genomics, medications=medications,
        consent=gathered.resources("consent") if consent_gathered else None,
        errors=errors, vitals=vitals, active_medications=active)


def clinical_resources(gathered: Gathered, errors: dict[str, str]) -> tuple[list[Any] | None, list[Any] | None]:
    """Vital signs and active medications as gathered, or None when they were not (no prefetch, no
    fhirServer) or could not be: a dose card then names the input as missing, with the reason in `errors`."""
    vitals_read = VITALS_KEY in gathered.data and VITALS_KEY not in gathered.errors
    vitals = gathered.resources(VITALS_KEY) if vitals_read else None
    keys = [k for k in ACTIVE_MEDICATION_KEYS if k in gathered.data]
    problems = [f"{k}: {gathered.errors[k]}" for k in ACTIVE_MEDICATION_KEYS if k in gathered.errors]
    active = gathered.resources(*keys) if keys and not problems else None
    if problems:
        errors["medications"] = "the active medications could not be read (" + "; ".join(problems) + ")"
    if VITALS_KEY in gathered.errors:
        errors["vitals"] = f"the vital signs could not be read ({gathered.errors[VITALS_KEY]})"
    return vitals, active


def parse_feedback(body: Any) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise RequestError("the body must be an object with a non-empty 'feedback' array", field="feedback")
    return body["feedback"]
