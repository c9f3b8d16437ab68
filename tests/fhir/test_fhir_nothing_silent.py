"""Acceptance (issue 10): no order of a drug in the knowledge base and no genomic result on file leaves
without either a card or an audited reason, for every shipped FHIR example.

Every JSON file under ../shared/fhir-examples and tests/fixtures/fhir is one case, decided by the decision
core exactly as the service decides a hook call (cds.decision.decide):
- a CDS Hooks request or context (the specification's and the sandbox's) brings its own draft orders;
- any other file is the patient's genomic record, ordered together with every drug of the knowledge base
  (by RxNorm ingredient code), so that each result meets every drug that could depend on it.
The patient is the one the file's resources are about (the first subject found), as an EHR would send it.

What counts as audited is what the service writes (cds/service/app.py `_audit`): the facts with their
source ids, the conflicts, `Advice.reasons()` and the unresolved orders."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fhir_fixtures import EXAMPLES, FIXTURES, needs_shared

from cds.decision import PatientCase, decide
from cds.fhir.genomics import GenomicReader
from cds.fhir.mappings import default_mappings
from cds.fhir.resources import collect
from cds.pipeline import Advisor

FILES = sorted(EXAMPLES.rglob("*.json")) + sorted(FIXTURES.rglob("*.json"))


@pytest.fixture(scope="module")
def advisor(engine):
    return Advisor.build(engine)


def _subject(doc) -> str | None:
    found = re.search(r'"(?:subject|patient)":\s*\{[^{}]*"reference":\s*"((?:[^"/]*/)?Patient/[^"]+)"', json.dumps(doc))
    return found.group(1).split("/_history")[0].rsplit("Patient/", 1)[1] if found else None


def _case(doc: dict, advisor: Advisor) -> tuple[PatientCase, list[dict]]:
    context = doc.get("context", doc) if isinstance(doc.get("context", doc), dict) else doc
    draft = context.get("draftOrders") or context.get("medications")
    patient = context.get("patientId") or _subject(doc) or "example"
    patient = patient.rsplit("/", 1)[-1]
    if isinstance(draft, (dict, list)):
        orders = draft if isinstance(draft, dict) else {"resourceType": "Bundle", "entry": [{"resource": m} for m in draft]}
        genomics: list = []
    else:
        drugs = sorted({(d.name, d.rxnorm) for gs in advisor.kb.drugs().values() for g in gs for d in g.drugs if d.rxnorm})
        orders = {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": f"order-{i}", "status": "draft", "intent": "order",
                          "subject": {"reference": f"Patient/{patient}"},
                          "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                    "code": code, "display": name}]}}}
            for i, (name, code) in enumerate(drugs)]}
        genomics = [doc]
    case = PatientCase(hook="order-sign", patient_ref=f"Patient/{patient}",
                       patient={"resourceType": "Patient", "id": patient, "birthDate": "1970-01-01"},
                       genomics=genomics, medications=[orders])
    return case, [e.resource for e in collect(genomics, [])]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(p.parents[1])) for p in FILES])
def test_no_result_or_order_leaves_in_silence(advisor, path: Path):
    needs_shared()
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        pytest.skip("not a FHIR resource")
    case, resources = _case(doc, advisor)
    advice = decide(advisor, case)
    audited = " ".join(advice.reasons() + advice.unresolved +
                       [s for items in advice.facts.interpretations.values() for i in items for s in i.source_ids] +
                       [s for ids in advice.facts.conflicts.values() for s in ids] +
                       [s for ids in (advice.evaluation.conflicts if advice.evaluation else {}).values() for s in ids])
    carded = {c.drug for c in advice.cards}

    reader = GenomicReader(default_mappings())
    silent_results = [f"Observation/{r.get('id')}" for r in resources
                      if reader.is_genomic(r) and f"{r.get('id')}" not in audited]
    assert not silent_results, (silent_results, advice.reasons())

    kb_drugs = {d.name for gs in advisor.kb.drugs().values() for g in gs for d in g.drugs}
    silent_orders = []
    for order in advice.orders:
        names = {i.name for i in order.ingredients} & kb_drugs
        if order.unresolved:
            if order.resolution != "not-this-patient" and not any(order.resolution in u for u in advice.unresolved):
                silent_orders.append(order.order_id)
        for name in names:
            plan = advisor.engine.drug_plan(name)
            drug = plan.drug if plan else name
            if drug not in carded and not any(r.startswith(f"{drug}: no card") for r in advice.reasons()):
                silent_orders.append(f"{order.order_id} ({drug})")
    assert not silent_orders, silent_orders


def test_every_shared_example_folder_is_walked():
    needs_shared()
    walked = {p.parent for p in FILES}
    assert {p.parent for p in EXAMPLES.rglob("*.json")} <= walked
    assert len(FILES) >= 100
