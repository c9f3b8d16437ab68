"""Clinical end-to-end: a patient's FHIR genotype results and a draft order go in over HTTP, and the
card that comes out carries CPIC's recommendation for that genotype — read here from CPIC's own
release table (../shared/cpic/v1.54), not from our YAML."""
from __future__ import annotations

import csv
import json
import re

import pytest

from fhirdata import genotype, hla, hook_request, medication_request, searchset
from pgx_paths import CPIC


def cpic_text(drug: str, lookup: dict[str, str], population: str = "general") -> str:
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["drugname"] == drug and " ".join(row["population"].split()) == population and \
                    json.loads(row["lookupkey_json(reconstructed)"]) == lookup:
                return " ".join(row["drugrecommendation"].split())
    raise AssertionError(f"no CPIC recommendation for {drug} {lookup} [{population}]")


def shown(markdown: str) -> str:
    """What a CommonMark client shows of a card's detail (markup gone, escapes resolved)."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(markdown)
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&gt;", ">").replace("&lt;", "<")
                    .replace("&amp;", "&").replace("&quot;", '"').split())


def sign(service, drug, *observations):
    body = hook_request("order-sign", medication_request(drug), genomics=searchset(*observations))
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def test_clopidogrel_cyp2c19_poor_metabolizer(service):
    cards = sign(service, "clopidogrel", genotype("CYP2C19", "*2/*3"))
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Clopidogrel: CYP2C19 Poor Metabolizer")
    assert cpic_text("clopidogrel", {"CYP2C19": "Poor Metabolizer"}, "CVI ACS PCI") in shown(card["detail"])
    assert "*2/*3" in shown(card["detail"]) and "Strong" in card["detail"]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == ["Replace clopidogrel with prasugrel", "Replace clopidogrel with ticagrelor"]
    assert card["selectionBehavior"] == "at-most-one"
    assert card["source"]["url"] == "https://cpicpgx.org/guidelines/guideline-for-clopidogrel-and-cyp2c19/"


@pytest.mark.parametrize("diplotype,score,phenotype,words", [
    ("*1/*1x2", "3.0", "Ultrarapid Metabolizer", "toxicity"),
    ("*4/*5", "0.0", "Poor Metabolizer", "analgesia"),
])
def test_codeine_cyp2d6_ultrarapid_and_poor(service, diplotype, score, phenotype, words):
    cards = sign(service, "codeine", genotype("CYP2D6", diplotype))   # acetaminophen/codeine combination product
    assert len(cards) == 1
    assert cards[0]["indicator"] == "critical"
    assert f"CYP2D6 {phenotype}" in cards[0]["summary"] and words in cards[0]["summary"]
    assert cpic_text("codeine", {"CYP2D6": score}) in shown(cards[0]["detail"])
    assert f"activity score {score}" in shown(cards[0]["detail"])


def test_simvastatin_slco1b1_poor_function(service):
    cards = sign(service, "simvastatin", genotype("SLCO1B1", "*5/*15"))
    assert len(cards) == 1
    assert "SLCO1B1 Poor Function" in cards[0]["summary"]
    assert cpic_text("simvastatin", {"SLCO1B1": "Poor Function"}) in shown(cards[0]["detail"])
    assert [s["label"] for s in cards[0]["suggestions"]] == ["Replace simvastatin with rosuvastatin",
                                                             "Replace simvastatin with pravastatin"]


@pytest.mark.parametrize("tpmt,nudt15,lookup", [
    ("*3A/*3A", "*1/*1", {"NUDT15": "Normal Metabolizer", "TPMT": "Poor Metabolizer"}),
    ("*1/*3A", "*1/*3", {"NUDT15": "Intermediate Metabolizer", "TPMT": "Intermediate Metabolizer"}),
])
def test_azathioprine_reads_tpmt_and_nudt15_together(service, tpmt, nudt15, lookup):
    cards = sign(service, "azathioprine", genotype("TPMT", tpmt), genotype("NUDT15", nudt15))
    assert len(cards) == 1
    assert "TPMT" in cards[0]["summary"] and "NUDT15" in cards[0]["summary"]
    assert cpic_text("azathioprine", lookup) in shown(cards[0]["detail"])


def test_fluorouracil_dpyd_activity_score_1(service):
    # c.1905+1G>A (*2A) has activity 0, Reference 1 (CPIC allele table): activity score 1.0
    cards = sign(service, "fluorouracil", genotype("DPYD", "c.1905+1G>A (*2A)/Reference"))
    assert len(cards) == 1
    assert "DPYD Intermediate Metabolizer" in cards[0]["summary"]
    assert cpic_text("fluorouracil", {"DPYD": "1.0"}) in shown(cards[0]["detail"])
    assert "activity score 1.0" in shown(cards[0]["detail"])


def test_abacavir_hla_b_5701_positive(service):
    cards = sign(service, "abacavir", hla("*57:01", True))
    assert len(cards) == 1
    assert cards[0]["indicator"] == "critical"
    assert cards[0]["summary"].startswith("Abacavir: HLA-B*57:01 positive")
    assert cpic_text("abacavir", {"HLA-B": "*57:01 positive"}) in shown(cards[0]["detail"])


def test_abacavir_without_hla_b_result_gets_the_pretest_card(service):
    cards = sign(service, "abacavir", genotype("CYP2C19", "*1/*1"))
    assert len(cards) == 1
    assert "no HLA-B*57:01 result on file" in cards[0]["summary"]
    actions = cards[0]["suggestions"][0]["actions"]
    assert actions[0]["type"] == "create" and actions[0]["resource"]["resourceType"] == "ServiceRequest"


def test_abacavir_hla_b_5701_negative_gets_no_card(service):
    assert sign(service, "abacavir", hla("*57:01", False)) == []


@pytest.mark.parametrize("drug,gene,diplotype", [
    ("clopidogrel", "CYP2C19", "*1/*1"),
    ("codeine", "CYP2D6", "*1/*2"),
    ("simvastatin", "SLCO1B1", "*1/*1"),
    ("azathioprine", "TPMT", "*1/*1"),
])
def test_normal_metabolizer_gets_no_card(service, drug, gene, diplotype):
    observations = [genotype(gene, diplotype)]
    if drug == "azathioprine":
        observations.append(genotype("NUDT15", "*1/*1"))
    assert sign(service, drug, *observations) == []


def test_outdated_and_entered_in_error_results_do_not_count(service):
    old = genotype("CYP2C19", "*2/*2", oid="old", date="2019-01-01")
    new = genotype("CYP2C19", "*1/*1", oid="new", date="2024-01-01")
    wrong = genotype("CYP2C19", "*2/*2", oid="wrong", date="2025-01-01", status="entered-in-error")
    assert sign(service, "clopidogrel", old, new, wrong) == []
