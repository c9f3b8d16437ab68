"""FHIR R4 JSON for the HTTP tests, in the shapes labs send (HL7 Genomics Reporting IG genotype
Observations, shaped as ../shared/fhir-examples/HL7_genomics-reporting/STU3-3.0.0-published/
Observation-GenotypeExample1.json: LOINC 84413-4, gene in the 48018-6 component with an HGNC id), and
MedicationRequests as EHRs send them in draftOrders (shaped as the CDS Hooks specification's R4
order-sign example). RxNorm product codes from ../shared/rxnorm/scd_sbd_to_ingredient.tsv."""
from __future__ import annotations

import uuid

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# SCD codes from ../shared/rxnorm/scd_sbd_to_ingredient.tsv
PRODUCTS = {
    "clopidogrel": ("309362", "clopidogrel 75 MG Oral Tablet"),
    "simvastatin": ("198211", "simvastatin 40 MG Oral Tablet"),
    "codeine": ("993781", "Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet"),
    "azathioprine": ("197388", "azathioprine 50 MG Oral Tablet"),
    "abacavir": ("242679", "abacavir 300 MG Oral Tablet"),
    "citalopram": ("200371", "citalopram 20 MG Oral Tablet"),
}
INGREDIENT = {"fluorouracil": ("4492", "fluorouracil")}  # RxNorm ingredient, ../shared/cpic/v1.54/cpic_drugs_v1.54.tsv


def genotype(gene: str, diplotype: str, patient: str = "p1", status: str = "final", oid: str | None = None,
             date: str = "2024-03-01") -> dict:
    return {
        "resourceType": "Observation",
        "id": oid or f"geno-{uuid.uuid4().hex[:8]}",
        "meta": {"profile": ["http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/genotype"]},
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4", "display": "Genotype display name"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": date,
        "valueCodeableConcept": {"text": f"{gene} {diplotype}"},
        "component": [{
            "code": {"coding": [{"system": "http://loinc.org", "code": "48018-6", "display": "Gene studied [ID]"}]},
            # the gene by its HGNC symbol (display), as several IG examples write it
            "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId", "display": gene}],
                                     "text": gene},
        }],
    }


def hla(allele: str, present: bool, patient: str = "p1") -> dict:
    """A lab-style HLA result: the code names the allele, the value says positive (LOINC LA6576-8, as in the
    IG's DiagnosticReport-GenomicReportExample01) or, as text, negative."""
    value = ({"coding": [{"system": "http://loinc.org", "code": "LA6576-8", "display": "Positive"}], "text": "Positive"}
             if present else {"text": "Negative"})
    return {
        "resourceType": "Observation", "id": f"hla-{uuid.uuid4().hex[:8]}", "status": "final",
        "code": {"text": f"HLA-B{allele}"},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2024-03-01",
        "valueCodeableConcept": value,
    }


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def medication_request(drug: str, mid: str | None = None, patient: str = "p1", status: str = "draft") -> dict:
    if drug in PRODUCTS:
        code, display = PRODUCTS[drug]
    else:
        code, display = INGREDIENT[drug]
    return {
        "resourceType": "MedicationRequest",
        "id": mid or f"mr-{drug}",
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display},
    }


def hook_request(hook: str, *orders: dict, genomics: dict | None = None, patient: str = "p1",
                 selections: list[str] | None = None, prefetch: dict | None = None, **extra) -> dict:
    context = {"userId": "Practitioner/example", "patientId": patient}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": o} for o in orders]}
    if hook == "order-select":
        context["selections"] = selections if selections is not None else \
            [f"MedicationRequest/{o['id']}" for o in orders]
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    elif genomics is not None:
        body["prefetch"] = {"genomics": genomics}
    body.update(extra)
    return body
