"""A gene the recommendation needs, with no result on file and no "No Result" key for it (issue 20 item 2).

CPIC 1.54 keys the thiopurines by TPMT and NUDT15 and gives neither gene a "No Result" key, so the most
common thiopurine report — TPMT alone, the shape of the FHIR R4 core example
observation-example-TPMT-diplotype.json (TPMT *1/*4) — got no card at all. The answer now is CPIC's
statement for every value the missing gene can take, labelled, most cautious first, saying a result for
that gene decides, with the test to order. Expectations come from the release table
(../shared/cpic/v1.54/cpic_recommendations_v1.54.tsv), never from our YAML.
"""
from __future__ import annotations

import json
from collections import defaultdict

import pytest

from cpic_sources import release_recommendation_texts, release_recommendations
from pgx_paths import REPO
from cds.decision import PatientCase, decide
from cds.engine import caution_order
from cds.genotype import INDETERMINATE, Interpretation
from cds.knowledge.models import NO_RESULT
from cds.pipeline import Advisor

TPMT_EXAMPLE = REPO / "tests" / "fixtures" / "fhir" / "shared" / "R4-core" / "observation-example-TPMT-diplotype.json"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def advisor(engine) -> Advisor:
    return Advisor.build(engine)


def affected_pairs() -> dict[tuple[str, str], set[tuple]]:
    """(drug, gene) → the (population, other genes' values) of the release's keys for which the release has
    no "No Result" key for that gene: where a missing result used to leave the drug without an answer."""
    keys: dict[tuple[str, str], set[tuple]] = defaultdict(set)
    for rec in release_recommendations():
        keys[(rec["drug"], rec["population"])].add(tuple(sorted(rec["lookup"].items())))
    out: dict[tuple[str, str], set[tuple]] = defaultdict(set)
    for (drug, population), lookups in keys.items():
        for lookup in lookups:
            items = dict(lookup)
            for gene in items:
                others = tuple(sorted((g, v) for g, v in items.items() if g != gene))
                if not others or items[gene] == NO_RESULT or any(v == NO_RESULT for _, v in others):
                    continue
                if tuple(sorted({**dict(others), gene: NO_RESULT}.items())) not in lookups:
                    out[(drug, gene)].add((population, others))
    return out


def release_by_key() -> dict[tuple[str, str, tuple], str]:
    return {(r["drug"], r["population"], tuple(sorted(r["lookup"].items()))): f"cpic-{r['id']}"
            for r in release_recommendations()}


def test_the_r4_core_tpmt_example_alone_gets_cpics_advice_for_every_nudt15_result(advisor):
    tpmt = json.loads(TPMT_EXAMPLE.read_text(encoding="utf-8"))
    texts = release_recommendation_texts()
    by_key = release_by_key()
    for drug in ("mercaptopurine", "azathioprine", "thioguanine"):
        plan = advisor.engine.drug_plan(drug)
        order = {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
                 "subject": {"reference": "Patient/example"},
                 "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": plan.rxnorm}]}}
        advice = decide(advisor, PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=[tpmt],
                                             medications=[order]))
        tpmt_key = advice.facts.interpretations["TPMT"][0].lookup["TPMT"]
        values = sorted(advisor.kb.interpreters["NUDT15"].phenotypes) + [INDETERMINATE]
        expected = {by_key[(drug, "general", tuple(sorted({"TPMT": tpmt_key, "NUDT15": v}.items())))] for v in
                    dict.fromkeys(values)}
        (card,) = advice.cards
        assert {s.recommendation.id for s in card.statements} == expected, drug
        assert [s.label for s in card.statements] == [f"if NUDT15 is {s.missing_value}" for s in card.statements]
        assert all(s.recommendation.recommendation == texts[s.recommendation.id.removeprefix("cpic-")]
                   for s in card.statements)
        order_keys = [caution_order(s.match) for s in card.statements]
        assert order_keys == sorted(order_keys)                   # most cautious first
        assert card.statements[0].missing_value == "Poor Metabolizer"
        assert "A NUDT15 result decides" in card.card["detail"] and "NUDT15: no result on file" in card.card["detail"]
        assert "Order NUDT15 genotyping — the result decides which advice applies" in \
            [s["label"] for s in card.card["suggestions"]]
        assert "NUDT15 Poor Metabolizer" not in card.card["summary"]   # no value is stated as the patient's


def test_every_gene_drug_pair_without_a_no_result_key_is_answered_for_every_value(engine):
    """Walk every key of the release whose partner gene can be missing without a "No Result" key."""
    by_key = release_by_key()
    pairs = affected_pairs()
    checked = 0
    for (drug, gene), keys in sorted(pairs.items()):
        values = set(engine.kb.interpreters[gene].lookup_values()[gene])      # what a result for it can be
        for population, others in sorted(keys):
            patient = {g: [Interpretation(g, v, {g: v})] for g, v in others}
            evaluation = engine.evaluate(patient, [drug], population)
            matches = [m for m in evaluation.drugs[0].matches if m.recommendation.population == population]
            got = {m.missing_value: m.recommendation.id for m in matches}
            assert all(m.missing_gene == gene for m in matches), (drug, gene, others)
            expected = {v: by_key[(drug, population, tuple(sorted({**dict(others), gene: v}.items())))]
                        for v in values if (drug, population, tuple(sorted({**dict(others), gene: v}.items()))) in by_key}
            assert got == expected and set(got) == values, (drug, gene, others)
            checked += 1
    print(f"gene/drug pairs without a 'No Result' key: {len(pairs)} "
          f"({', '.join(f'{d}/{g}' for d, g in sorted(pairs))}); keys answered for every value: {checked}")
    assert sorted(pairs) == [(d, g) for d in ("azathioprine", "mercaptopurine", "thioguanine") for g in ("NUDT15", "TPMT")]


def test_a_no_result_key_the_source_has_still_answers(engine):
    """amitriptyline: CPIC keys CYP2D6 without CYP2C19 ("No Result"), so that key answers, alone."""
    patient = {"CYP2D6": [Interpretation("CYP2D6", "Intermediate Metabolizer", {"CYP2D6": "1.0"})]}
    evaluation = engine.evaluate(patient, ["amitriptyline"])
    assert evaluation.missing_results(evaluation.drugs[0]) == {}
    assert [m.recommendation.lookup for m in evaluation.drugs[0].matches] == [{"CYP2C19": NO_RESULT, "CYP2D6": "1.0"}]


def test_a_partner_result_on_file_that_cannot_be_read_is_said_not_answered_for_every_value(advisor):
    tpmt = json.loads(TPMT_EXAMPLE.read_text(encoding="utf-8"))
    nudt15 = {"resourceType": "Observation", "id": "nudt15", "status": "final", "code": {"text": "NUDT15 genotype"},
              "subject": {"reference": "Patient/example"}, "valueString": "NUDT15 *1/*99"}
    order = {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/example"},
             "medicationCodeableConcept": {"coding": [{"system": RXNORM,
                                                       "code": advisor.engine.drug_plan("mercaptopurine").rxnorm}]}}
    advice = decide(advisor, PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=[tpmt, nudt15],
                                         medications=[order]))
    assert [c.rule_id for c in advice.cards] == ["result-not-interpretable"]
    assert advice.evaluation.drugs[0].matches == []
