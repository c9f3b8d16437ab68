"""The CDS Hooks 2.0 contract over real HTTP: discovery, each hook with prefetch and with FHIR fetch,
412, the error paths, the specification's and the sandbox's own request examples, feedback, CORS."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from pgx_paths import SHARED
from fhirdata import genotype, hook_request, medication_request, searchset

EXAMPLES = SHARED / "fhir-examples"


def well_formed(body: dict) -> None:
    """The CDS Hooks 2.0 response shape."""
    assert set(body) <= {"cards", "systemActions"} and isinstance(body["cards"], list)
    for card in body["cards"]:
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        assert isinstance(card["uuid"], str) and uuid.UUID(card["uuid"])
        for value in card.values():
            assert value not in (None, "", [], {}), card   # the spec forbids null or empty elements
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("at-most-one", "any")
            for s in card["suggestions"]:
                assert s["label"] and uuid.UUID(s["uuid"])
                for action in s["actions"]:
                    assert action["type"] in ("create", "update", "delete") and action["description"]
        for reason in card.get("overrideReasons", []):
            assert reason["code"] and reason["display"]


def test_discovery(service):
    response = requests.get(f"{service.url}/cds-services", timeout=10)
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {"pgx-order-select", "pgx-order-sign", "pgx-patient-view"} <= set(services)
    assert services["pgx-order-select"]["hook"] == "order-select"
    assert services["pgx-order-sign"]["hook"] == "order-sign"
    assert services["pgx-patient-view"]["hook"] == "patient-view"
    for s in services.values():
        assert s["title"] and s["description"]
        assert "{{context.patientId}}" in s["prefetch"]["genomics"]
        assert s["prefetch"]["genomics"].startswith("Observation?patient=")
    assert services["pgx-patient-view"]["prefetch"]["medications"].startswith("MedicationRequest?patient=")


def test_order_sign_with_prefetch(service):
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        genomics=searchset(genotype("CYP2C19", "*2/*2")))
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200
    well_formed(response.json())
    cards = response.json()["cards"]
    assert len(cards) == 1 and cards[0]["indicator"] == "critical"


def test_order_select_advises_on_the_selections_only(service):
    clopidogrel = medication_request("clopidogrel", "a")
    citalopram = medication_request("citalopram", "b")
    genomics = searchset(genotype("CYP2C19", "*2/*2"))
    body = hook_request("order-select", clopidogrel, citalopram, genomics=genomics, selections=["MedicationRequest/b"])
    cards = service.call("pgx-order-select", body).json()["cards"]
    assert [c["summary"].split(":")[0] for c in cards] == ["Citalopram"]
    body = hook_request("order-select", clopidogrel, citalopram, genomics=genomics)
    assert len(service.call("pgx-order-select", body).json()["cards"]) == 2


def test_patient_view_with_prefetch(service):
    body = hook_request("patient-view", prefetch={
        "genomics": searchset(genotype("CYP2C19", "*2/*2"), genotype("CYP2D6", "*1/*1")),
        "medications": searchset(medication_request("clopidogrel", status="active")),
    })
    response = service.call("pgx-patient-view", body)
    assert response.status_code == 200
    well_formed(response.json())
    cards = response.json()["cards"]
    assert len(cards) == 1
    assert "CYP2C19 Poor Metabolizer" in cards[0]["summary"] and "clopidogrel" in cards[0]["summary"]
    assert "CYP2D6" not in cards[0]["summary"]          # normal results are not "actionable"
    assert "Avoid clopidogrel" in cards[0]["detail"]


@pytest.mark.parametrize("service_id,hook", [("pgx-order-select", "order-select"), ("pgx-order-sign", "order-sign"),
                                             ("pgx-patient-view", "patient-view")])
def test_each_hook_fetches_missing_prefetch_from_the_fhir_server_with_the_bearer_token(service, fhir_server, service_id, hook):
    fhir_server.add({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"},
                    genotype("CYP2C19", "*2/*2"), medication_request("clopidogrel", mid="active-1", status="active"))
    orders = [] if hook == "patient-view" else [medication_request("clopidogrel")]
    body = hook_request(hook, *orders, fhirServer=fhir_server.url,
                        fhirAuthorization={"access_token": "opaque-token-123", "token_type": "Bearer",
                                           "expires_in": 300, "scope": "patient/Observation.read", "subject": "pgx-cds"})
    response = service.call(service_id, body)
    assert response.status_code == 200, response.text
    well_formed(response.json())
    cards = response.json()["cards"]
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]["summary"]
    searched = {r["path"].split("/")[-1] for r in fhir_server.requests}
    assert "Observation" in searched
    assert all(r["authorization"] == "Bearer opaque-token-123" for r in fhir_server.requests)
    observation_query = next(r["query"] for r in fhir_server.requests if r["path"].endswith("Observation"))
    assert observation_query["patient"] == ["p1"] and "http://loinc.org|84413-4" in observation_query["code"][0]


def test_missing_prefetch_and_no_fhir_server_is_412(service):
    body = hook_request("order-sign", medication_request("clopidogrel"))
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 412
    assert "genomics" in response.json()["message"]


def test_prefetch_null_means_no_data_not_an_error(service):
    # spec: "If the CDS Client has no data to populate a template prefetch key, the key MUST have a value of null"
    body = hook_request("order-sign", medication_request("abacavir"), prefetch={"genomics": None})
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200
    assert [c["summary"] for c in response.json()["cards"]] == [
        "Abacavir: no HLA-B*57:01 result on file — test before prescribing (FDA label: testing required)"]


@pytest.mark.parametrize("failure", ["timeout", "http-500"])
def test_a_failing_fhir_server_degrades_the_answer_within_the_budget(budgeted_service, fhir_server, failure):
    service = budgeted_service
    if failure == "timeout":
        fhir_server.misbehave("delay", seconds=3.0)   # service: 0.5 s per request, 1.0 s budget
    else:
        fhir_server.misbehave("status", code=500)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    started = time.monotonic()
    response = service.call("pgx-order-sign", body)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 2.5
    cards = response.json()["cards"]
    assert len(cards) == 1 and cards[0]["summary"] == "Clopidogrel: pharmacogenomic check could not be completed"
    assert cards[0]["indicator"] == "warning"


def _post_raw(service, path, data, content_type="application/json"):
    return requests.post(f"{service.url}{path}", data=data, headers={"Content-Type": content_type}, timeout=10)


@pytest.mark.parametrize("path,data,content_type,status,message", [
    ("/cds-services/pgx-order-sign", "{not json", "application/json", 400, "not valid JSON"),
    ("/cds-services/pgx-order-sign", "[]", "application/json", 400, "JSON object"),
    ("/cds-services/pgx-order-sign", "hook=order-sign", "application/x-www-form-urlencoded", 415, "JSON"),
    ("/cds-services/no-such-service", "{}", "application/json", 404, "no CDS service 'no-such-service'"),
    ("/cds-services/pgx-order-sign/feedback", "{}", "application/json", 400, "feedback"),
])
def test_malformed_requests_get_a_reason(service, path, data, content_type, status, message):
    response = _post_raw(service, path, data, content_type)
    assert response.status_code == status
    assert message in response.json()["message"]


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b.update(hook="patient-view"), "answers the order-sign hook, not patient-view"),
    (lambda b: b.pop("hook"), "'hook' is required"),
    (lambda b: b.pop("hookInstance"), "'hookInstance' is required"),
    (lambda b: b.pop("context"), "'context' is required"),
    (lambda b: b["context"].pop("patientId"), "context.patientId is required"),
    (lambda b: b["context"].pop("userId"), "context.userId is required"),
    (lambda b: b["context"].pop("draftOrders"), "context.draftOrders is required"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "MedicationRequest"}), "must be a FHIR Bundle"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "Bundle", "entry": {"a": 1}}), "entry must be an array"),
    (lambda b: b.update(fhirAuthorization={"access_token": "x"}), "'fhirServer' is required"),
    (lambda b: b.update(fhirServer="ftp://x"), "http(s) URL"),
    (lambda b: b.update(prefetch=[1]), "'prefetch' must be an object"),
])
def test_bad_requests_are_400_with_a_reason(service, mutate, message):
    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=searchset())
    mutate(body)
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_order_select_needs_selections(service):
    body = hook_request("order-select", medication_request("clopidogrel"), genomics=searchset())
    body["context"].pop("selections")
    response = service.call("pgx-order-select", body)
    assert response.status_code == 400 and "context.selections is required" in response.json()["message"]


def _context_examples():
    for path in sorted((EXAMPLES / "cds-hooks_docs").glob("*.json")):
        hook = path.name.split("__")[0]
        yield pytest.param(path, hook, id=path.stem)
    for path in sorted((EXAMPLES / "reconstructed_from_cds-hooks_sandbox_source").glob("*.json")):
        yield pytest.param(path, "order-select", id=path.stem)


@pytest.mark.parametrize("path,hook", list(_context_examples()))
def test_published_request_examples_get_200(service, path, hook):
    """The CDS Hooks specification's own examples (some fail strict R4 validation) and the sandbox's
    request shapes (category as an object, no medication yet) are answered, not rejected."""
    data = json.loads(path.read_text())
    context = data.get("context", data)
    context.setdefault("userId", "Practitioner/example")
    # the sandbox reconstructions carry no patientId: the patient is the one their orders are for
    # (only the context patient's resources count)
    subjects = [e["resource"].get("subject", {}).get("reference", "") for e in context.get("draftOrders", {}).get("entry", [])]
    context.setdefault("patientId", next((s.split("/")[-1] for s in subjects if s), "1288992"))
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": {"genomics": searchset(genotype("CYP2C19", "*2/*2", patient=context["patientId"]))}}
    service_id = {"order-select": "pgx-order-select", "order-sign": "pgx-order-sign",
                  "medication-prescribe": "pgx-medication-prescribe"}[hook]
    response = service.call(service_id, body)
    assert response.status_code == 200, response.text
    well_formed(response.json())
    if "clopidogrel" in path.name:
        assert response.json()["cards"][0]["summary"].startswith("Clopidogrel: CYP2C19 Poor Metabolizer")


def test_suggested_resources_validate_as_fhir_r4(service):
    body = hook_request("order-sign", medication_request("clopidogrel"), medication_request("abacavir"),
                        genomics=searchset(genotype("CYP2C19", "*2/*2")))
    cards = service.call("pgx-order-sign", body).json()["cards"]
    created = [a["resource"] for c in cards for s in c.get("suggestions", []) for a in s["actions"] if a["type"] == "create"]
    deleted = [a["resourceId"] for c in cards for s in c.get("suggestions", []) for a in s["actions"] if a["type"] == "delete"]
    requests_ = [r for r in created if r["resourceType"] == "MedicationRequest"]
    tests = [r for r in created if r["resourceType"] == "ServiceRequest"]
    assert {r["medicationCodeableConcept"]["coding"][0]["code"] for r in requests_} == {"613391", "1116632"}
    for r in requests_:
        MedicationRequest.model_validate(r)
        assert r["subject"]["reference"] == "Patient/p1"
    assert len(tests) == 1 and tests[0]["code"]["text"] == "HLA-B*57:01 genotyping"
    ServiceRequest.model_validate(tests[0])
    assert deleted == ["MedicationRequest/mr-clopidogrel", "MedicationRequest/mr-clopidogrel"]


def test_conflicting_results_give_no_genotype_advice_and_say_so(service):
    genomics = searchset(genotype("CYP2C19", "*2/*2", oid="a", date="2024-03-01"),
                         genotype("CYP2C19", "*1/*1", oid="b", date="2024-03-01"))
    cards = service.call("pgx-order-sign", hook_request("order-sign", medication_request("clopidogrel"),
                                                        genomics=genomics)).json()["cards"]
    assert [c["summary"] for c in cards] == [
        "Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]
    assert "Observation/a" in cards[0]["detail"] and "Observation/b" in cards[0]["detail"]


def test_an_active_consent_denying_genomic_data_use_suppresses_cards(service):
    consent = {"resourceType": "Consent", "id": "c1", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": "Patient/p1"},
               "provision": {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
                             "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"}]}}
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(genotype("CYP2C19", "*2/*2")), "consent": searchset(consent)})
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200
    assert response.json()["cards"] == []


def test_feedback_is_stored_and_unknown_cards_are_404(service):
    def issue_card():
        return service.call("pgx-order-sign", hook_request("order-sign", medication_request("clopidogrel"),
                                                           genomics=searchset(genotype("CYP2C19", "*2/*2")))).json()["cards"][0]

    store = service.runtime.store
    rule_ids = [r.id for r in service.runtime.kb.rules]
    store.flush(5)
    before = next(r for r in store.report(None, rule_ids)["rules"] if r["rule_id"] == "clopidogrel-cyp2c19")
    card, other = issue_card(), issue_card()
    url = f"{service.url}/cds-services/pgx-order-sign/feedback"
    accepted = {"feedback": [{"card": other["uuid"], "outcome": "accepted",
                              "acceptedSuggestions": [{"id": other["suggestions"][0]["uuid"]}],
                              "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}
    assert requests.post(url, json=accepted, timeout=10).status_code == 200
    overridden = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                "overrideReason": {"reason": card["overrideReasons"][1], "userComment": "INR clinic"},
                                "outcomeTimestamp": "2026-11-29T10:05:00Z"}]}
    assert requests.post(url, json=overridden, timeout=10).status_code == 200
    unknown = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}
    response = requests.post(url, json=unknown, timeout=10)
    assert response.status_code == 404 and "card" in response.json()["message"]
    bad = {"feedback": [{"card": card["uuid"], "outcome": "maybe", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}
    assert requests.post(url, json=bad, timeout=10).status_code == 400
    store.flush(5)
    after = next(r for r in store.report(None, rule_ids)["rules"] if r["rule_id"] == "clopidogrel-cyp2c19")
    assert after["accepted"] == before["accepted"] + 1
    assert after["overridden"] == before["overridden"] + 1


def test_cors_preflight_for_the_sandbox(service):
    response = requests.options(f"{service.url}/cds-services/pgx-order-sign", timeout=10,
                                headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://sandbox.cds-hooks.org")
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_openapi_and_health(service):
    doc = requests.get(f"{service.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.") and "/cds-services/pgx-order-select" in doc["paths"]
    health = requests.get(f"{service.url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["knowledge_version"] == service.runtime.kb.version


@pytest.mark.parametrize("genomics", ["not a resource", [1, 2], {"entry": []}])
def test_unreadable_prefetch_is_said_not_silent(service, genomics):
    body = hook_request("order-sign", medication_request("clopidogrel"), prefetch={"genomics": genomics})
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200
    assert [c["summary"] for c in response.json()["cards"]] == ["Clopidogrel: pharmacogenomic check could not be completed"]


@pytest.mark.parametrize("patient", [{"resourceType": "Patient", "birthDate": 12}, "x", {"resourceType": "Patient"}])
def test_odd_patient_resources_do_not_break_the_answer(service, patient):
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(genotype("CYP2C19", "*2/*2")), "patient": patient})
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200 and len(response.json()["cards"]) == 1


def test_admin_report_in_development_mode(service):
    response = requests.get(f"{service.url}/admin/report", timeout=10)
    assert response.status_code == 200
    assert any(r["rule_id"] == "clopidogrel-cyp2c19" for r in response.json()["rules"])
    assert requests.get(f"{service.url}/admin/report?since=yesterday", timeout=10).status_code == 400
