"""Every suggestion a card carries is a FHIR R4 resource that fhir.resources (R4B) validates: the draft
MedicationRequests for alternatives and the ServiceRequests that order a test."""
from __future__ import annotations

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds.cards import replacement_request

MODELS = {"MedicationRequest": MedicationRequest, "ServiceRequest": ServiceRequest}


def test_every_suggested_resource_validates(every_card):
    seen = {"MedicationRequest": 0, "ServiceRequest": 0}
    for walked in every_card:
        rendered = walked.rendered
        for suggestion in rendered.card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] == "create":
                    resource = action["resource"]
                    MODELS[resource["resourceType"]].model_validate(resource)
                    seen[resource["resourceType"]] += 1
    assert seen["MedicationRequest"] > 20


def test_a_pre_test_alerts_service_request_validates(engine, renderer):
    evaluation = engine.evaluate({}, ["abacavir"])                    # no HLA-B result: order the test first
    cards = renderer.order_cards(evaluation, "order-sign", patient_ref="Patient/1")
    requests = [a["resource"] for c in cards if c.pretest for s in c.card["suggestions"] for a in s["actions"]]
    assert requests and all(ServiceRequest.model_validate(r) for r in requests)


def test_a_draft_orders_invalid_parts_are_not_copied_into_the_suggestion():
    draft = {"resourceType": "MedicationRequest", "intent": "wish", "encounter": {"reference": 7},
             "subject": {"reference": "Patient/1"}}
    resource = replacement_request(draft, "prasugrel", "613391", "Patient/1", "Use prasugrel at standard dose.")
    MedicationRequest.model_validate(resource)
    assert resource["intent"] == "order" and "encounter" not in resource
    kept = replacement_request({**draft, "intent": "plan", "encounter": {"reference": "Encounter/5"}},
                               "prasugrel", "613391", "Patient/1")
    assert (kept["intent"], kept["encounter"]) == ("plan", {"reference": "Encounter/5"})
