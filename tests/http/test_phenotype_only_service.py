"""Through the running service (issue 9): a DPYD result stating only "Poor Metabolizer" and an order for
fluorouracil get CPIC 1.54's recommendation for each score a DPYD Poor Metabolizer can have (0 and 0.5,
read here from CPIC's release table, not from our YAML) — never an empty card list; contradicting
results of one gene give a card saying so and no genotype-based advice."""
from __future__ import annotations

import csv
import json
import re

import pytest

from fhirdata import genotype, hook_request, medication_request, searchset
from pgx_paths import CPIC


def release(drug: str, gene: str):
    """CPIC 1.54's recommendations for a drug keyed by one gene only: score → (id, text)."""
    out = {}
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            lookup = json.loads(row["lookupkey_json(reconstructed)"])
            if row["drugname"] == drug and list(lookup) == [gene]:
                out[lookup[gene]] = (row["id"], row["drugrecommendation"])
    return out


def _text(value: str) -> str:
    # the card's Markdown may break CPIC's text across lines; compare the words
    return " ".join(value.replace("\\n", " ").split())


def phenotype_observation(gene: str, phenotype: str, coded: bool) -> dict:
    """A phenotype-only result: the IG's phenotype Observation (LOINC 53040-2, gene as a component,
    LOINC answer) or a lab's text Observation naming the gene in its code."""
    if coded:
        return {"resourceType": "Observation", "id": f"pheno-{gene.lower()}", "status": "final",
                "effectiveDateTime": "2024-03-01", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "53040-2",
                                     "display": "Genetic variation's effect on drug metabolism"}]},
                "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                               "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                    "display": gene}], "text": gene}}],
                "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9657-3",
                                                     "display": phenotype}], "text": phenotype}}
    return {"resourceType": "Observation", "id": f"lab-{gene.lower()}", "status": "final",
            "effectiveDateTime": "2024-03-01", "subject": {"reference": "Patient/p1"},
            "code": {"text": f"{gene} phenotype"}, "valueString": phenotype}


def select(service, drug, *observations):
    body = hook_request("order-select", medication_request(drug), genomics=searchset(*observations))
    response = service.call("pgx-order-select", body)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


@pytest.mark.parametrize("coded", [True, False], ids=["ig-phenotype-observation", "lab-text"])
def test_fluorouracil_with_dpyd_poor_metabolizer_only_gives_cpics_advice_for_each_score(service, coded):
    cards = select(service, "fluorouracil", phenotype_observation("DPYD", "Poor Metabolizer", coded))
    assert cards, "silence where CPIC speaks"
    details = _text(" ".join(c["detail"] for c in cards))
    cpic = release("fluorouracil", "DPYD")
    with (CPIC / "v1.54" / "cpic_gene_results_cds_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        pm_scores = sorted(r["activity_score"] for r in csv.DictReader(f, delimiter="\t")
                           if r["gene"] == "DPYD" and r["result"] == "Poor Metabolizer")
    assert pm_scores == ["0.0", "0.5"]
    for score in pm_scores:
        rec_id, text = cpic[score]
        assert _text(text) in details, score
        assert f"cpic-{rec_id}" in details
        assert re.search(rf"(?i)activity score\W+(is\W+)?{re.escape(score)}", details), score   # labelled with its score
    # nothing of the other phenotypes' scores (Intermediate: 1.0, 1.5; Normal: 2.0)
    for score in ("1.0", "1.5", "2.0"):
        assert f"cpic-{cpic[score][0]}" not in details
    assert all("DPYD" in c["summary"] for c in cards)


def test_contradicting_cyp2c19_results_give_a_conflict_card_not_normal_metabolizer(service):
    cards = select(service, "clopidogrel", genotype("CYP2C19", "*1/*1", oid="a"), genotype("CYP2C19", "*2/*2", oid="b"))
    assert [c["summary"] for c in cards] == [
        "Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]
    assert "Normal Metabolizer" not in cards[0]["detail"]
