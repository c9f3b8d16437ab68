"""FHIR R4 JSON for the card tests, shaped as tests/http/fhirdata.py shapes it (HL7 Genomics Reporting
IG genotype Observation: LOINC 84413-4, gene in the 48018-6 component; CDS Hooks R4 draft orders) with
Observation.performer as R4 defines it (Reference(Organization) with a display)."""
from __future__ import annotations

import uuid

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# RxNorm ingredient codes: ../shared/cpic/v1.54/cpic_drugs_v1.54.tsv
INGREDIENTS = {"clopidogrel": "32968", "simvastatin": "36567", "voriconazole": "121243",
               "fluorouracil": "4492", "codeine": "2670"}


def genotype(gene: str, diplotype: str, oid: str | None = None, lab: str | None = "Example Genomics Laboratory",
             date: str = "2024-03-01", patient: str = "p1") -> dict:
    obs = {
        "resourceType": "Observation", "id": oid or f"geno-{uuid.uuid4().hex[:8]}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4", "display": "Genotype display name"}]},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": date,
        "valueCodeableConcept": {"text": f"{gene} {diplotype}"},
        "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                       "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId", "display": gene}],
                                                "text": gene}}],
    }
    if lab:
        obs["performer"] = [{"reference": "Organization/lab1", "display": lab}]
    return obs


def phenotype(gene: str, text: str, patient: str = "p1") -> dict:
    """A lab-style phenotype result: the gene in the code text, the phenotype as the value."""
    return {"resourceType": "Observation", "id": f"pheno-{uuid.uuid4().hex[:8]}", "status": "final",
            "code": {"text": f"{gene} phenotype"}, "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2024-03-01", "valueCodeableConcept": {"text": text}}


def order(drug: str, mid: str | None = None, patient: str = "p1") -> dict:
    return {"resourceType": "MedicationRequest", "id": mid or f"mr-{drug}", "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": INGREDIENTS[drug], "display": drug}],
                                          "text": drug}}


def order_sign(*orders: dict, genomics: list[dict], patient: dict | None = None) -> dict:
    prefetch = {"genomics": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in genomics]}}
    if patient is not None:
        prefetch["patient"] = patient
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "p1",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": o} for o in orders]}},
            "prefetch": prefetch}
