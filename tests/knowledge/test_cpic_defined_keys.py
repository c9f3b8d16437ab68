"""A result CPIC itself reads as Indeterminate or "n/a" is a CPIC key like any other (issue 20 item 1).

CPIC's diplotype tables (../shared/cpic/genes/*.json) give thousands of diplotypes the phenotype
Indeterminate (an uncertain-function allele: CYP2C19 *1/*12, SLCO1B1 *1/*2, G6PD A/Gond) or the activity
score "n/a" (an allele without an activity value: CYP2D6 *1/*22, CYP2C9 *1/*7), and release 1.54 keys
recommendations by them. Sent as the lab-style Observation of tests/fixtures/fhir/built/
lab-cyp2c19-genotype-text.json (a laboratory's convention: gene and diplotype as text) through the
decision core, such a result gets CPIC's recommendation for that key, and never beside it a card saying
the result could not be interpreted. An allele no CPIC table knows still gets that card, and no advice.
"""
from __future__ import annotations

import json
from collections import defaultdict

import pytest

from cpic_sources import release_recommendation_texts, release_recommendations
from pgx_paths import CPIC, REPO
from cds.decision import PatientCase, decide
from cds.knowledge.models import NO_RESULT
from cds.pipeline import Advisor

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NOT_INTERPRETED = "result-not-interpretable"


@pytest.fixture(scope="module")
def advisor(engine) -> Advisor:
    return Advisor.build(engine)


def genotype_observation(n: int, gene: str, diplotype: str) -> dict:
    """A laboratory's genotype Observation: the gene in the code's text, the diplotype as a string."""
    return {"resourceType": "Observation", "id": f"gt-{n}", "status": "final",
            "code": {"text": f"{gene} genotype"}, "subject": {"reference": "Patient/example"},
            "effectiveDateTime": "2024-03-01", "valueString": f"{gene} {diplotype}"}


def order(rxnorm: str, drug: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/example"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": drug}]}}


def decided(advisor: Advisor, drug: str, results: list[tuple[str, str]]):
    plan = advisor.engine.drug_plan(drug)
    case = PatientCase(hook="order-sign", patient_ref="Patient/example",
                       genomics=[genotype_observation(i, g, d) for i, (g, d) in enumerate(results)],
                       medications=[order(plan.rxnorm, drug)])
    return decide(advisor, case)


def cpic_defined_diplotypes() -> dict[str, tuple[str, str]]:
    """gene → (a diplotype, its lookup key) that CPIC's own diplotype table reads as Indeterminate / n/a."""
    out = {}
    for path in sorted((CPIC / "genes").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for row in data["diplotypes"]:
            if row["lookupkey"] in ("Indeterminate", "n/a") and "/" in row["diplotype"]:
                out[data["gene"]] = (row["diplotype"], row["lookupkey"])
                break
    return out


def release_ids_by_key() -> dict[tuple[str, tuple], set[str]]:
    """(drug, sorted lookup items) → the release's recommendation ids (every population)."""
    out: dict[tuple[str, tuple], set[str]] = defaultdict(set)
    for rec in release_recommendations():
        out[(rec["drug"], tuple(sorted(rec["lookup"].items())))].add(f"cpic-{rec['id']}")
    return out


def test_every_gene_with_cpic_defined_indeterminate_results_gets_cpics_advice_for_them(advisor):
    by_key = release_ids_by_key()
    texts = release_recommendation_texts()
    checked = []
    for gene, (diplotype, key) in sorted(cpic_defined_diplotypes().items()):
        # every drug whose release recommendations key this gene alone, or with the partner gene missing
        for (drug, lookup), ids in sorted(by_key.items()):
            items = dict(lookup)
            if items.get(gene) != key or any(v != NO_RESULT for g, v in items.items() if g != gene):
                continue
            if advisor.engine.drug_plan(drug) is None:
                continue
            advice = decided(advisor, drug, [(gene, diplotype)])
            assert [c for c in advice.cards if c.rule_id == NOT_INTERPRETED] == [], (gene, diplotype, drug)
            got = {m.recommendation.id for d in advice.evaluation.drugs for m in d.matches
                   if m.guideline.source == "CPIC"}
            assert got == ids, (gene, diplotype, drug)
            for card in advice.cards:
                for statement in card.statements:
                    assert statement.recommendation.recommendation == texts[statement.recommendation.id.removeprefix("cpic-")]
            checked.append((gene, drug))
    print(f"CPIC-defined Indeterminate / n/a results checked: {len(checked)} gene/drug pairs")
    assert {g for g, _ in checked} >= {"CYP2C19", "CYP2D6", "CYP2C9", "G6PD", "SLCO1B1", "CYP2B6", "CYP3A5", "UGT1A1"}


@pytest.mark.parametrize("drug,results,advice_starts", [
    # the examples (CPIC release 1.54 text)
    ("amitriptyline", [("CYP2C19", "*1/*12"), ("CYP2D6", "*3/*9")], "Consider a 25% reduction"),
    ("dapsone", [("G6PD", "A/Gond")], "To ascertain G6PD status"),
])
def test_a_cpic_defined_indeterminate_result_gives_one_answer(advisor, drug, results, advice_starts):
    advice = decided(advisor, drug, results)
    assert [c.card["summary"] for c in advice.cards if c.rule_id == NOT_INTERPRETED] == []
    (card,) = advice.cards
    assert card.statements[0].recommendation.recommendation.startswith(advice_starts)


@pytest.mark.parametrize("drug,results", [
    ("phenytoin", [("CYP2C9", "*1/*7")]),        # CPIC: n/a → its own "no recommendation" (no card)
    ("fluvastatin", [("SLCO1B1", "*1/*2")]),     # CPIC: Indeterminate → its own "no recommendation"
    ("clomipramine", [("CYP2D6", "*1/*22")]),
])
def test_cpics_own_no_card_answer_is_not_replaced_by_a_could_not_interpret_card(advisor, drug, results):
    advice = decided(advisor, drug, results)
    assert advice.cards == []
    assert any("recommendation matched" in reason for reason in advice.reasons()), advice.reasons()


def test_an_allele_no_cpic_table_knows_is_said_and_gets_no_advice(advisor):
    advice = decided(advisor, "amitriptyline", [("CYP2C19", "*1/*99"), ("CYP2D6", "*3/*9")])
    assert [c.rule_id for c in advice.cards] == [NOT_INTERPRETED]
    assert "*99 is not in the CYP2C19 table" in advice.cards[0].card["detail"]
    assert advice.evaluation.drugs[0].matches == []


def test_explain_says_an_unreadable_result_gives_no_advice(engine):
    from cds.explain import explain, to_json, to_text

    evaluation = explain(engine, ["CYP2C19=*1/*99", "CYP2D6=*3/*9"], ["amitriptyline"])
    assert evaluation.drugs[0].matches == []
    assert "no genotype-based recommendation for CYP2C19: its result could not be interpreted" in to_text(evaluation)
    assert to_json(evaluation)["unreadable"][0]["gene"] == "CYP2C19"
    defined = explain(engine, ["CYP2C19=*1/*12", "CYP2D6=*3/*9"], ["amitriptyline"])
    assert [m.recommendation.recommendation[:26] for m in defined.drugs[0].matches] == ["Consider a 25% reduction o"]


def test_the_repository_fixture_shape_is_the_one_sent():
    shipped = json.loads((REPO / "tests" / "fixtures" / "fhir" / "built" / "lab-cyp2c19-genotype-text.json").read_text())
    built = genotype_observation(0, "CYP2C19", "*2/*2")
    assert built["valueString"] == shipped["valueString"] and "CYP2C19 genotype" == shipped["code"]["text"]
