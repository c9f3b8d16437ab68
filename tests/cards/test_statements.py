"""One card per drug and rule; several labelled statements when several CPIC statements apply and the
request does not say which: a drug's populations (voriconazole without a birth date), the activity
scores of a phenotype-only result (DPYD Poor Metabolizer). The card's indicator is the most cautious
of its statements. Texts are compared with CPIC's release table, not with our YAML."""
from __future__ import annotations

import csv
import json
import re

import yaml

from cards_fhir import genotype, order, order_sign, phenotype
from pgx_paths import CPIC, REPO

from cds.populations import POPULATION_WORDS, population_words


def cpic_rows(drug: str) -> list[dict]:
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["drugname"] == drug]


def cpic_text(drug: str, lookup: dict, population: str = "general") -> str:
    (row,) = [r for r in cpic_rows(drug) if json.loads(r["lookupkey_json(reconstructed)"]) == lookup
              and " ".join(r["population"].split()) == population]
    return row


def shown(markdown: str) -> str:
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(markdown)
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&").split())


def folded(text: str) -> str:
    return " ".join(text.replace("\\n", "\n").split())


def test_every_population_of_the_shipped_guidelines_has_words():
    populations = set()
    for path in (REPO / "guidelines" / "cpic").glob("*.yaml"):
        for rec in yaml.safe_load(path.read_text()).get("recommendations", []):
            populations.add(rec.get("population", "general"))
    populations.discard("general")
    assert populations, "the shipped guidelines have populations"
    missing = populations - set(POPULATION_WORDS)
    assert not missing, f"populations without words in cds/populations.py: {sorted(missing)}"
    # the code stays beside the words, so a reader can check the phrase
    assert population_words("NVI") == "Neurovascular indications (NVI)"
    assert population_words("adults") == "Adults"


def test_voriconazole_without_birth_date_is_one_card_naming_each_population(service):
    body = order_sign(order("voriconazole"), genomics=[genotype("CYP2C19", "*2/*2")])
    cards = service.call("pgx-order-sign", body).json()["cards"]
    assert len(cards) == 1, [c["summary"] for c in cards]
    card = cards[0]
    text = shown(card["detail"])
    assert "differs by age group" in card["summary"] and len(card["summary"]) <= 139
    for population, words in (("adults", "Adults"), ("pediatrics", "Children (pediatrics)")):
        row = cpic_text("voriconazole", {"CYP2C19": "Poor Metabolizer"}, population)
        assert f"{words} (classification: {row['classification']}): {folded(row['drugrecommendation'])}" in text


def test_voriconazole_with_birth_date_gets_its_age_group_only(service):
    body = order_sign(order("voriconazole"), genomics=[genotype("CYP2C19", "*2/*2")],
                      patient={"resourceType": "Patient", "id": "p1", "birthDate": "2015-06-01"})
    (card,) = service.call("pgx-order-sign", body).json()["cards"]
    text = shown(card["detail"])
    child = cpic_text("voriconazole", {"CYP2C19": "Poor Metabolizer"}, "pediatrics")
    adult = cpic_text("voriconazole", {"CYP2C19": "Poor Metabolizer"}, "adults")
    assert folded(child["drugrecommendation"]) in text and "Children (pediatrics)" in text
    assert folded(adult["drugrecommendation"]) not in text


def test_phenotype_only_result_lists_each_score_and_says_the_score_decides(service):
    body = order_sign(order("fluorouracil"), genomics=[phenotype("DPYD", "Poor Metabolizer")])
    cards = service.call("pgx-order-sign", body).json()["cards"]
    assert len(cards) == 1, [c["summary"] for c in cards]
    card = cards[0]
    text = shown(card["detail"])
    assert "The activity score decides" in text
    rows = [r for r in cpic_rows("fluorouracil") if json.loads(r["lookupkey_json(reconstructed)"]).get("DPYD") in ("0.0", "0.5")]
    assert len(rows) == 2
    for row in rows:
        score = json.loads(row["lookupkey_json(reconstructed)"])["DPYD"]
        assert f"if the DPYD activity score is {score} (classification: {row['classification']}): " \
               f"{folded(row['drugrecommendation'])}" in text
    # most cautious first: score 0.0 (avoid) before 0.5 (avoid, or a strongly reduced dose)
    assert text.index("activity score is 0.0") < text.index("activity score is 0.5")
    assert card["indicator"] == "critical"


def test_indicator_is_the_most_cautious_statement(engine, renderer):
    from cds.explain import parse_genotype_args

    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2D6=Intermediate Metabolizer",
                                                              "CYP2C19=Normal Metabolizer"]), ["amitriptyline"])
    for card in renderer.order_cards(evaluation, "order-sign"):
        carded = [s.policy.indicator for s in card.statements if s.policy]
        order = ["info", "warning", "critical"]
        assert card.indicator == max(carded, key=order.index)


def test_a_grouped_card_with_suggestions_says_whose_advice_they_follow(engine, renderer, kb):
    """Clopidogrel without the rule's population: ACS/PCI and neurovascular statements on one card, and
    the prasugrel suggestion says it follows the ACS/PCI advice (prasugrel is contraindicated after a
    stroke, CPIC's neurovascular comments say)."""
    from cds.explain import parse_genotype_args
    rule = next(r for r in kb.rules if r.id == "clopidogrel-cyp2c19")
    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2C19=*2/*2"]), ["clopidogrel"])
    drug = evaluation.drugs[0]
    drug.rules = {"order-sign": rule.model_copy(update={"population": None})}
    (card,) = renderer.order_cards(evaluation, "order-sign")
    labels = [s.label for s in card.statements]
    assert any("Neurovascular indications (NVI)" == l for l in labels)
    for s in card.card["suggestions"]:
        assert "advice for Cardiovascular indications" in s["label"], s["label"]
