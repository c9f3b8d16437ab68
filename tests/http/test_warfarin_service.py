"""Warfarin and the coumarins through `cds serve` (gunicorn in a subprocess, as an operator runs it), with a
site policy that selects CPIC and DPWG (config/policy-examples/dpwg-beside-cpic.yaml as rules/default.yaml):

- warfarin for a 45-year-old, 182 cm, 95 kg patient with CYP2C9 *2/*3 and VKORC1 rs9923231 T/T → a card with
  the IWPC estimate, 13.2 mg/week (hand check in tests/knowledge/test_warfarin_dosing.py: 3.6370² = 13.2278);
- the same patient without a body weight on file → a card naming the missing weight, and no number;
- acenocoumarol with VKORC1 -1639 A/A → DPWG's advice ("50% of the standard initial dose", from the export).
"""
from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from fhirdata import genotype, hook_request, searchset
from live_service import ServeProcess

REPO = Path(__file__).resolve().parents[2]
DPWG_ACENOCOUMAROL = REPO / ".." / "shared" / "cpic" / "dpwg" / "DPWG_acenocoumarol_and_VKORC1.json"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date.today()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("coumarin-site")
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, root / "knowledge" / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", root / "knowledge" / "rules" / "default.yaml")
    serve = ServeProcess(root, env={"CDS_KNOWLEDGE_DIR": str(root / "knowledge"),
                                    "CDS_KNOWLEDGE_CACHE": str(root / "cache")}, workers=1)
    yield serve
    serve.stop()


def patient() -> dict:
    born = TODAY - timedelta(days=int(45.5 * 365.25))        # 45 years old today
    return {"resourceType": "Patient", "id": "p1", "birthDate": born.isoformat()}


def vital(code: str, value: float, unit: str, oid: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": (TODAY - timedelta(days=30)).isoformat(),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def order(drug: str, code: str, display: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": f"mr-{drug}", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display}}


# RxNorm: warfarin SCD 855288 (../shared/rxnorm/scd_sbd_to_ingredient.tsv); acenocoumarol ingredient 154
# (../shared/cpic/v1.54/cpic_drugs_v1.54.tsv)
WARFARIN = ("warfarin", "855288", "Warfarin Sodium 1 MG Oral Tablet")
ACENOCOUMAROL = ("acenocoumarol", "154", "acenocoumarol")


def body(drug, genomics, vitals) -> dict:
    prefetch = {"patient": patient(), "genomics": searchset(*genomics), "vitals": searchset(*vitals),
                "active-medications": searchset(), "active-statements": searchset()}
    return hook_request("order-select", order(*drug), prefetch=prefetch)


GENOTYPES = [genotype("CYP2C9", "*2/*3", oid="g-cyp2c9"), genotype("VKORC1", "rs9923231 T/T", oid="g-vkorc1")]


def test_warfarin_card_carries_the_iwpc_estimate(service):
    response = service.post("/cds-services/pgx-order-select",
                            body(WARFARIN, GENOTYPES, [vital("8302-2", 182, "cm", "h1"), vital("29463-7", 95, "kg", "w1")]))
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    dose = [c for c in cards if "IWPC estimate" in c["summary"]]
    assert len(dose) == 1, [c["summary"] for c in cards]
    card = dose[0]
    assert "13.2 mg/week (1.9 mg/day)" in card["summary"] and "CYP2C9 *2/*3" in card["summary"]
    assert "VKORC1 -1639 AA" in card["summary"] and "consider an alternative agent" in card["summary"]
    detail = card["detail"]
    for shown in ("182 cm", "95 kg", "Observation/w1", "Observation/g-vkorc1", "PMID 19228618", "PMID 28198005",
                  "INR 2-3", "missing or mixed"):
        assert shown in detail, shown


def test_without_a_weight_the_card_names_it_and_gives_no_number(service):
    response = service.post("/cds-services/pgx-order-select",
                            body(WARFARIN, GENOTYPES, [vital("8302-2", 182, "cm", "h1")]))
    assert response.status_code == 200, response.text
    cards = [c for c in response.json()["cards"] if c["summary"].startswith("Warfarin: no genotype-guided dose")]
    assert len(cards) == 1
    card = cards[0]
    assert "missing weight" in card["summary"]
    assert "no body weight on file in the last 12 months" in card["detail"]
    assert "mg/week" not in card["summary"] + card["detail"]
    assert "Dose clinically" in card["detail"]


def test_acenocoumarol_with_vkorc1_aa_gets_dpwgs_advice(service):
    source = json.loads(DPWG_ACENOCOUMAROL.read_text(encoding="utf-8"))
    advice = next(r for r in source["recommendations"] if r["lookupKey"] == {"VKORC1": "-1639 AA"})
    response = service.post("/cds-services/pgx-order-select",
                            body(ACENOCOUMAROL, [genotype("VKORC1", "-1639 A/A", oid="g-vkorc1")], []))
    assert response.status_code == 200, response.text
    cards = [c for c in response.json()["cards"] if "cenocoumarol" in c["summary"]]
    assert len(cards) == 1, response.json()["cards"]
    detail = cards[0]["detail"]
    assert "50% of the standard initial dose" in advice["text"]["html"] and "50% of the standard initial dose" in detail
    assert "DPWG" in detail and advice["id"] in detail
