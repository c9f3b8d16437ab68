"""Recommendations that CPIC's release 1.54 has but PharmGKB's curators never annotated carry no
curator flags (the G6PD drugs, metoprolol, hydralazine, the extra aminoglycosides). The default policy
then asks CPIC's own EHR priority of the gene results they rest on
(../shared/cpic/v1.54/cpic_gene_results_cds_v1.54.tsv): a card for a priority result, none for a result
CPIC files as routine, so "No reason to avoid based on G6PD status" does not interrupt an order."""
from __future__ import annotations

import csv

import pytest

from cards_fhir import RXNORM, order_sign, phenotype
from pgx_paths import CPIC

RESULTS_TSV = CPIC / "v1.54" / "cpic_gene_results_cds_v1.54.tsv"


def _source_priorities() -> dict[tuple[str, str], str]:
    """(gene, lookup value) → CPIC's EHR priority, as the release writes it. Score genes are keyed by
    their activity score, the others by the result itself."""
    out = {}
    with RESULTS_TSV.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = row["activity_score"] if row["activity_score"] not in ("", "n/a") else row["result"]
            out[(row["gene"], key)] = row["ehr_priority"]
    return out


def _flagless(kb):
    return [rec for g in kb.guidelines.values() if g.source == "CPIC" for rec in g.recommendations
            if rec.flags is None]


def test_every_flagless_recommendation_follows_cpic_result_priority(kb) -> None:
    from cds.cards import is_actionable

    priorities = _source_priorities()
    flagless = _flagless(kb)
    assert len(flagless) > 100                         # the release-only recommendations are there
    wrong = []
    for rec in flagless:
        stated = [priorities[(gene, value)] for gene, value in rec.lookup.items() if (gene, value) in priorities]
        graded = rec.classification not in (None, "No Recommendation")
        expected = graded and (not stated or any("priority" in p.lower() for p in stated))
        if is_actionable(rec, kb) != expected:
            wrong.append((rec.id, rec.drug, dict(rec.lookup), rec.classification, stated))
    assert wrong == []


@pytest.mark.parametrize("g6pd, cards", [("Normal", 0), ("Deficient", 1)])
def test_ciprofloxacin_by_g6pd_status_through_the_service(service, g6pd, cards) -> None:
    """G6PD Normal: CPIC says "No reason to avoid based on G6PD status" (routine result): no card.
    G6PD Deficient: CPIC's Optional advice for a priority result: a card."""
    cipro = {"resourceType": "MedicationRequest", "id": "mr-cipro", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2551", "display": "ciprofloxacin"}]}}
    response = service.call("pgx-order-sign", order_sign(cipro, genomics=[phenotype("G6PD", g6pd)]))
    assert response.status_code == 200
    found = [c for c in response.json()["cards"] if "iprofloxacin" in c["summary"]]
    assert len(found) == cards, response.json()


@pytest.mark.parametrize("gene, value, shown", [("HLA-B", "*57:01 positive", "*57:01 positive"),
                                                ("HLA-B", "*15:02 positive", "*15:02 positive"),
                                                ("CYP2C19", "*2/*2", "Poor Metabolizer")])
def test_patient_view_lists_every_result_cpic_marks_as_priority(engine, renderer, gene, value, shown) -> None:
    """CPIC spells its priority "Abnormal/Priority/High Risk" for most results and "Priority/High-Risk"
    for HLA-B*15:02 positive: both reach the patient-view summary."""
    from cds.explain import parse_genotype_args

    interpretations = parse_genotype_args(engine, [f"{gene}={value}"])
    cards = renderer.patient_summary(interpretations, engine.evaluate(interpretations, []))
    assert len(cards) == 1 and shown in cards[0].card["summary"], [c.card["summary"] for c in cards]
