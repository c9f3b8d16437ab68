"""Population screening reports warfarin patients whose genotype-guided dose is on file: the same dose card
as the service (cds.decision), from the patient's own Bulk Data (Patient, genotype and vital-sign
Observations, the active warfarin order), as a row of actionable.csv."""
from __future__ import annotations

import csv
import json
from datetime import date, timedelta

from cds.screen.run import ScreenOptions, screen

TODAY = date.today()


def _observation(oid: str, code: dict, **value) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/w1"},
            "code": code, "effectiveDateTime": (TODAY - timedelta(days=20)).isoformat(), **value}


def _genotype(oid: str, gene: str, diplotype: str) -> dict:
    # shaped as the HL7 Genomics Reporting genotype Observation (tests/http/fhirdata.py)
    return _observation(oid, {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                        valueCodeableConcept={"text": f"{gene} {diplotype}"},
                        component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                                    "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                         "display": gene}], "text": gene}}])


def _vital(oid: str, loinc: str, value: float, unit: str) -> dict:
    return _observation(oid, {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                        valueQuantity={"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit})


def test_a_warfarin_patient_with_genotypes_and_vitals_gets_the_dose_row(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    born = TODAY - timedelta(days=int(45.5 * 365.25))
    resources = {
        "Patient": [{"resourceType": "Patient", "id": "w1", "birthDate": born.isoformat()}],
        "Observation": [_genotype("g1", "CYP2C9", "*2/*3"), _genotype("g2", "VKORC1", "rs9923231 T/T"),
                        _vital("h1", "8302-2", 182, "cm"), _vital("wt1", "29463-7", 95, "kg")],
        # RxNorm SCD 855288 warfarin sodium 1 MG oral tablet (../shared/rxnorm/scd_sbd_to_ingredient.tsv)
        "MedicationRequest": [{"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
                               "subject": {"reference": "Patient/w1"},
                               "medicationCodeableConcept": {"coding": [{
                                   "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855288",
                                   "display": "Warfarin Sodium 1 MG Oral Tablet"}]}}],
    }
    for kind, items in resources.items():
        (cohort / f"{kind}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    out = tmp_path / "out"
    screen(ScreenOptions(input_dir=cohort, out=out, workers=1, audit_key=b"c" * 40, progress=False))
    with open(out / "actionable.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["drug"] == "warfarin"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert "IWPC estimate 13.2 mg/week" in row["summary"]
    assert row["recommendation_id"] == "warfarin-iwpc" and row["classification"] == "CPIC: genotype-guided dose"
    assert set(row["gene"].split(";")) == {"CYP2C9", "VKORC1"}
