"""What a card offers to do: replace the draft order with an alternative (a FHIR MedicationRequest with
CPIC's dose sentence for this patient), open the SMART summary page with the patient's results, and
the override reasons. Suggestions put `create` before `delete`, because clients such as the CDS Hooks
sandbox stop applying a suggestion at its first `delete`."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from cds.engine import Evaluation, Match
from cds.facts import GenomicResult
from cds.fhir.valid import InvalidResource, validated
from cds.genotype import Interpretation
from cds.ids import new_uuid
from cds.knowledge.models import Alternative, Guideline
from cds.override_reasons import PRIVATE_SYSTEM

from . import text
from .model import OrderRef
from .text import SMART_LINK_LABEL, sentences

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# The override reasons a card offers: ours and HL7's non-adherence reason codes (cds/override_reasons.py).
OVERRIDE_SYSTEM = PRIVATE_SYSTEM

_DOSE = re.compile(r"\d\s*(mg|µg|μg|mcg|g)\b", re.IGNORECASE)


def replace_suggestion(drug: str, alt: Alternative, order: OrderRef, patient_ref: str | None,
                       dose: str | None, whose: str | None) -> dict[str, Any]:
    resource = replacement_request(order.resource, alt.name, alt.rxnorm, patient_ref, dose)
    create = {"type": "create", "resource": resource, "description": text.create_description(alt.name, dose)}
    # create before delete: the CDS Hooks sandbox (and clients built like it) stop applying a
    # suggestion's actions at the first delete; the specification allows either order.
    actions: list[dict[str, Any]] = [create]
    if order.order_id:
        actions.append({"type": "delete", "description": text.remove_description(drug), "resourceId": order.order_id})
    return {"label": text.replace_label(drug, alt.name, bool(order.order_id), whose), "uuid": new_uuid(),
            "actions": actions}


def pretest_suggestion(test: str, draft: dict[str, Any] | None, patient_ref: str | None) -> dict[str, Any]:
    """A pre-test alert's suggestion: a draft ServiceRequest for the test (validated with fhir.resources)."""
    service_request = validated({
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"text": test},
        "subject": {"reference": subject(draft, patient_ref)},
    })
    return {"label": text.order_test_label(test), "uuid": new_uuid(),
            "actions": [{"type": "create", "description": text.create_description(test), "resource": service_request}]}


def guideline_links(guidelines: list[Guideline]) -> list[dict[str, Any]]:
    """Each guideline a card rests on, and its PharmGKB annotation where that is another page."""
    links = []
    for g in guidelines:
        links.append({"label": text.guideline_link(g), "url": g.url, "type": "absolute"})
        if g.annotation_url and g.annotation_url != g.url:
            links.append({"label": text.ANNOTATION_LINK, "url": g.annotation_url, "type": "absolute"})
    return links


def order_test_suggestion(gene: str, order: OrderRef, patient_ref: str | None) -> dict[str, Any]:
    """Order the test whose result decides between a card's statements (a gene with no result on file)."""
    test = f"{gene} genotyping"
    request = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "code": {"text": test},
               "subject": {"reference": subject(order.resource, patient_ref)}}
    return {"label": f"Order {test} — the result decides which advice applies", "uuid": new_uuid(),
            "actions": [{"type": "create", "description": f"Create a draft order for {test}", "resource": request}]}


def replacement_request(draft: dict[str, Any] | None, name: str, rxnorm: str, patient_ref: str | None,
                        dose_text: str | None = None) -> dict[str, Any]:
    """A draft MedicationRequest for an alternative ingredient, keeping the draft's subject and intent;
    `dose_text`: CPIC's dosing sentence for this patient, as the dosage instruction's text. Validated
    with fhir.resources, as every resource we write."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": intent if (intent := (draft or {}).get("intent")) in _REQUEST_INTENTS else "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
        "subject": {"reference": subject(draft, patient_ref)},
    }
    if dose_text:
        resource["dosageInstruction"] = [{"text": dose_text}]
    # What is taken from the draft as the EHR sent it (its encounter, its intent) stays where it is valid FHIR.
    encounter = (draft or {}).get("encounter")
    tries = [{**resource, "encounter": encounter}] if isinstance(encounter, dict) else []
    tries += [resource, {**resource, "intent": "order"}]
    for candidate in tries[:-1]:
        try:
            return validated(candidate)
        except InvalidResource:
            continue
    return validated(tries[-1])


# MedicationRequest.intent, a required binding in R4 (fhir.resources checks types, not value sets)
_REQUEST_INTENTS = frozenset({"proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                              "instance-order", "option"})


def subject(draft: dict[str, Any] | None, patient_ref: str | None) -> str:
    found = (draft or {}).get("subject")
    if isinstance(found, dict) and isinstance(found.get("reference"), str):
        return found["reference"]
    return patient_ref or "Patient/unknown"


def dose_sentence(matches: list[Match]) -> str | None:
    """The one dose sentence CPIC's matched recommendations give, or None (none, or they differ)."""
    found = set()
    for m in matches:
        flags = m.recommendation.flags
        if flags is None or not flags.dosing_information:
            continue
        sentence = next((x for x in sentences(m.recommendation.recommendation) if _DOSE.search(x)), None)
        found.add(sentence)
    return found.pop() if len(found) == 1 else None


def smart_link(app_url: str, evaluation: Evaluation | None, evidence: Mapping[str, GenomicResult],
               drug: str | None = None) -> dict[str, Any]:
    """A CDS Hooks `smart` link to the summary page; appContext carries the patient's results so the
    page can show them without a second FHIR round trip."""
    return {"label": SMART_LINK_LABEL, "url": app_url, "type": "smart",
            "appContext": app_context(evaluation.interpretations if evaluation else {}, evidence, drug)}


def app_context(interpretations: Mapping[str, list[Interpretation]], evidence: Mapping[str, GenomicResult],
                drug: str | None = None) -> str:
    """The SMART app's appContext: the patient's results as stated (so the page re-interprets them with
    the same knowledge), with date and laboratory, and the drug the card was about. No patient id."""
    results = [_context_result(gene, i, evidence) for gene, items in sorted(interpretations.items()) for i in items]
    body: dict[str, Any] = {"results": results}
    if drug:
        body["drug"] = drug
    return orjson.dumps(body).decode()    # compact, UTF-8 as is: what json.dumps(separators, ensure_ascii=False) gives


def _context_result(gene: str, i: Interpretation, evidence: Mapping[str, GenomicResult]) -> dict[str, Any]:
    item: dict[str, Any] = {"gene": gene, "stated_as": i.stated_as, "phenotype": i.phenotype, "value": _stated(i)}
    if i.source_ids:
        item["source"] = list(i.source_ids)
    found = next((evidence[s] for s in i.source_ids if s in evidence), None)
    if found and found.effective:
        item["date"] = found.effective.date().isoformat()
    if found and getattr(found, "performer", None):
        item["lab"] = found.performer
    return item


def _stated(i: Interpretation) -> str:
    """The result as the laboratory stated it, as the summary page reads it back (cds.genotype.interpret_value)."""
    if i.stated_as == "diplotype" and i.diplotype:
        return i.diplotype
    if i.stated_as == "activity score" and i.activity_score:
        return f"score:{i.activity_score}"
    if i.stated_as == "allele status":
        return next(iter(i.lookup.values()))
    return i.phenotype
