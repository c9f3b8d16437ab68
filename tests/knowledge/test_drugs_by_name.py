"""Drugs the sources give no RxNorm code (issue 20 item 6): CPIC release 1.54's drug table writes
ribostamycin's as `RxNorm:NA` (../shared/cpic/v1.54/cpic_drugs_v1.54.tsv), and neither it nor drugs.tsv has
one for DPWG's flucloxacillin and flucytosine. `cds explain` and the workbench answer by name, and an order
written as text (a MedicationRequest with `medicationCodeableConcept.text` only, as a CDS Hooks client sends
an uncoded order) is matched by its name."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

from cpic_sources import release_recommendations
from pgx_paths import CPIC
from cds.decision import PatientCase, decide
from cds.explain import explain
from cds.pipeline import Advisor


def test_the_sources_give_these_drugs_no_rxnorm_code(kb):
    with (CPIC / "v1.54" / "cpic_drugs_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        rows = {r["name"]: r["rxnormid"] for r in csv.DictReader(f, delimiter="\t")}
    assert not rows.get("ribostamycin", "").isdigit()
    named = {d.name for g in kb.guidelines.values() for d in g.drugs if d.no_rxnorm}
    assert named == {"ribostamycin", "flucloxacillin", "flucytosine"}


def test_an_order_written_as_text_is_matched_by_name(engine):
    advisor = Advisor.build(engine)
    mt_rnr1 = {"resourceType": "Observation", "id": "m", "status": "final", "code": {"text": "MT-RNR1 genotype"},
               "subject": {"reference": "Patient/example"}, "valueString": "m.1555A>G"}
    order = {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/example"}, "medicationCodeableConcept": {"text": "Ribostamycin 1 g injection"}}
    advice = decide(advisor, PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=[mt_rnr1],
                                         medications=[order]))
    expected = {f"cpic-{r['id']}" for r in release_recommendations() if r["drug"] == "ribostamycin"
                and r["lookup"] == {"MT-RNR1": advice.facts.interpretations["MT-RNR1"][0].phenotype}}
    assert expected and {s.recommendation.id for c in advice.cards for s in c.statements} == expected
    assert advice.unresolved == []


def test_explain_answers_by_name(engine):
    evaluation = explain(engine, ["HLA-B=*57:01 positive"], ["flucloxacillin"], sources=["DPWG"])
    assert [m.recommendation.id for m in evaluation.drugs[0].matches]
    out = subprocess.run([sys.executable, "-m", "cds.cli", "explain", "--genotype", "DPYD=*2A/*2A", "--drug", "flucytosine",
                          "--source", "dpwg", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)["recommendations"]
    assert got and got[0]["drug"] == "flucytosine" and got[0]["rxnorm"] is None
