"""Issue 24 item 5: the OpenAPI description is as strict as the service. Each request below goes to the
service over HTTP and through the document's schema (jsonschema, draft 2020-12, as OpenAPI 3.1 uses):
the schema accepts exactly what the service does not answer 400 (`hook: ""` passed the old schema)."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator

from live_service import LiveServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from fhirdata import genotype, hook_request, medication_request, searchset  # noqa: E402


@pytest.fixture(scope="module")
def service():
    from cds.service.app import create_app
    from cds.service.config import Settings

    live = LiveServer(create_app(Settings(auth_mode="off", audit=False)))
    yield live
    live.stop()


def valid(hook: str = "order-select") -> dict:
    return hook_request(hook, medication_request("clopidogrel"), genomics=searchset(genotype("CYP2C19", "*2/*2")))


def changed(hook: str, change) -> dict:
    body = copy.deepcopy(valid(hook))
    change(body)
    return body


VARIANTS = {
    "valid order-select": ("pgx-order-select", valid()),
    "valid order-sign": ("pgx-order-sign", valid("order-sign")),
    "valid patient-view": ("pgx-patient-view", valid("patient-view")),
    "empty hook": ("pgx-order-select", changed("order-select", lambda b: b.update(hook=""))),
    "another service's hook": ("pgx-order-sign", valid()),
    "blank hookInstance": ("pgx-order-select", changed("order-select", lambda b: b.update(hookInstance="  "))),
    "no context": ("pgx-order-select", changed("order-select", lambda b: b.pop("context"))),
    "blank userId": ("pgx-order-select", changed("order-select", lambda b: b["context"].update(userId=""))),
    "patientId with a query": ("pgx-order-select",
                               changed("order-select", lambda b: b["context"].update(patientId="1&subject=2"))),
    "patientId as Patient/x": ("pgx-order-select",
                               changed("order-select", lambda b: b["context"].update(patientId="Patient/p1"))),
    "selections not strings": ("pgx-order-select",
                               changed("order-select", lambda b: b["context"].update(selections=[1]))),
    "draftOrders not a Bundle": ("pgx-order-sign", changed("order-sign", lambda b: b["context"].update(
        draftOrders={"resourceType": "MedicationRequest"}))),
    "no draftOrders": ("pgx-order-sign", changed("order-sign", lambda b: b["context"].pop("draftOrders"))),
    "prefetch null": ("pgx-order-sign", changed("order-sign", lambda b: b.update(prefetch=None, fhirServer=None)
                                                 or b.pop("fhirServer"))),
    "prefetch a list": ("pgx-order-sign", changed("order-sign", lambda b: b.update(prefetch=[]))),
    "fhirServer not http": ("pgx-order-sign", changed("order-sign", lambda b: b.update(fhirServer="ftp://ehr/fhir"))),
    "fhirAuthorization without fhirServer": ("pgx-order-sign", changed("order-sign", lambda b: b.update(
        fhirAuthorization={"access_token": "t", "token_type": "Bearer"}))),
    "fhirAuthorization without a token": ("pgx-order-sign", changed("order-sign", lambda b: b.update(
        fhirServer="https://ehr.example.org/fhir", fhirAuthorization={"token_type": "Bearer"}))),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_the_schema_accepts_what_the_service_accepts(service, name):
    doc = requests.get(f"{service.url}/openapi.json", timeout=10).json()
    service_id, body = VARIANTS[name]
    operation = doc["paths"][f"/cds-services/{service_id}"]["post"]
    schema = {**doc, "$ref": operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]}
    schema_errors = list(Draft202012Validator(schema).iter_errors(body))
    answer = service.call(service_id, body)
    assert answer.status_code != 500
    assert (answer.status_code == 400) == bool(schema_errors), (answer.status_code, answer.text, schema_errors[:1])


def test_an_uppercase_fhir_server_scheme_is_the_same_server(service, fhir_server):
    """RFC 3986: the scheme is case-insensitive. `HTTP://…` was a 400 though the docs compare URLs
    with the scheme lower-cased."""
    fhir_server.add(genotype("CYP2C19", "*2/*2"))
    body = hook_request("order-sign", medication_request("clopidogrel"))
    body["fhirServer"] = fhir_server.url.replace("http://", "HTTP://")
    answer = service.call("pgx-order-sign", body)
    assert answer.status_code == 200 and "Clopidogrel" in answer.json()["cards"][0]["summary"]
    assert fhir_server.searched("Observation")


@pytest.fixture()
def fhir_server():
    from fhir_server import FhirTestServer

    server = FhirTestServer()
    yield server
    server.stop()
