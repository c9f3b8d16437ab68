"""CPIC and DPWG side by side, through the running service: a site whose policy selects both
(config/policy-examples/dpwg-beside-cpic.yaml as its rules/default.yaml) gets one card per drug with
each source's advice labelled; a CPIC-only site (the shipped default) gets today's CPIC cards.

Every statement on a card is compared with the source data: CPIC's release table
(../shared/cpic/v1.54) and PharmGKB's DPWG export (../shared/cpic/dpwg), not our YAML.
"""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import sqlite3

import pytest

from dpwg_text import source_words, words
from fhirdata import RXNORM, genotype, hla, hook_request, medication_request, searchset
from live_service import LiveServer
from pgx_paths import CPIC, REPO


def _norm(text: str) -> str:
    return " ".join(text.split())


def _dpwg_sources() -> dict[str, dict]:
    out = {}
    for path in sorted((CPIC / "dpwg").glob("DPWG_*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8"))["recommendations"]:
            out[f"dpwg-{rec['id']}"] = rec
    return out


def _cpic_sources() -> dict[str, dict]:
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        return {f"cpic-{row['id']}": row for row in csv.DictReader(f, delimiter="\t")}


DPWG_SOURCE = _dpwg_sources()
CPIC_SOURCE = _cpic_sources()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The service with a knowledge root whose site policy selects CPIC and DPWG."""
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("dpwg-site")
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, root / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", root / "rules" / "default.yaml")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off", knowledge_dir=root, fhir_timeout=2.0, fhir_budget=4.0), store=store)
    live = LiveServer(app)
    live.audit_db = root / "audit.sqlite3"
    live.store = store
    yield live
    live.stop()
    store.close()


def _order(drug: str, rxnorm: str | None = None) -> dict:
    if rxnorm is None:
        return medication_request(drug)
    # an ingredient code, from ../shared/cpic/v1.54/cpic_drugs_v1.54.tsv
    return {"resourceType": "MedicationRequest", "id": f"mr-{drug}", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": drug}], "text": drug}}


def sign(service, order, *observations) -> list[dict]:
    body = hook_request("order-sign", order, genomics=searchset(*observations))
    response = service.call("pgx-order-sign", body)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def _shown(markdown: str) -> str:
    """What a CommonMark client shows of a card's detail (markup gone, escapes resolved)."""
    from markdown_it import MarkdownIt

    return _norm(html.unescape(re.sub(r"<[^>]+>", " ", MarkdownIt("commonmark").render(markdown))))


def _statements(card: dict) -> dict[str, str]:
    """Recommendation id → the source whose label heads its statement on the card (the ids are listed
    in the detail's footer)."""
    (listed,) = re.findall(r"Recommendations? ((?:`[^`]+`(?:, )?)+);", card["detail"])
    return {rid: ("DPWG" if rid.startswith("dpwg-") else "CPIC") for rid in re.findall(r"`([^`]+)`", listed)}


def _check_against_sources(card: dict, drug: str, dpwg_key: dict, cpic_key: dict | None) -> dict[str, str]:
    """Each statement's text is the source's, for this drug and this lookup key."""
    statements = _statements(card)
    detail = _shown(card["detail"])
    for rid, source in statements.items():
        if source == "DPWG":
            rec = DPWG_SOURCE[rid]
            assert rec["relatedChemicals"][0]["name"] == drug
            assert rec["lookupKey"] == dpwg_key, rid
            assert source_words(rec["text"]["html"]) in words(detail), rid
            assert "classification: not graded (N/A in the PharmGKB export)" in card["detail"]
            assert rec["classification"]["term"] == "N/A"
        else:
            row = CPIC_SOURCE[rid]
            assert row["drugname"] == drug
            assert json.loads(row["lookupkey_json(reconstructed)"]) == cpic_key, rid
            assert _norm(row["drugrecommendation"]) in detail, rid
            # the CPIC statement's label starts with its source (then its population, where CPIC names one)
            assert re.search(rf"\*\*CPIC[^*]*\*\* \(classification: {row['classification']}", card["detail"]), card["detail"]
    return statements


def test_clopidogrel_cyp2c19_poor_metabolizer_one_card_both_sources(both):
    cards = sign(both, _order("clopidogrel"), genotype("CYP2C19", "*2/*2"))
    assert len(cards) == 1
    card = cards[0]
    statements = _check_against_sources(card, "clopidogrel", {"CYP2C19": "Poor Metabolizer"}, {"CYP2C19": "Poor Metabolizer"})
    assert sorted(set(statements.values())) == ["CPIC", "DPWG"]
    # both flag an alternative drug: they agree in kind; the site's clopidogrel rule makes it critical
    assert card["detail"].splitlines()[0].startswith("**CPIC and DPWG agree in kind** — choose an alternative drug")
    assert card["indicator"] == "critical"
    assert card["source"]["label"] == "CPIC and DPWG via pgx-cds (DPWG: PharmGKB/ClinPGx, CC BY-SA 4.0)"
    assert "CC BY-SA 4.0" in card["detail"]
    assert {link["url"] for link in card["links"]} >= {"https://www.pharmgkb.org/guidelineAnnotation/PA166104956"}
    assert [s["label"] for s in card["suggestions"]] == ["Replace clopidogrel with prasugrel", "Replace clopidogrel with ticagrelor"]


def test_codeine_cyp2d6_ultrarapid_metabolizer(both):
    cards = sign(both, _order("codeine"), genotype("CYP2D6", "*1/*1x2"))
    assert len(cards) == 1
    card = cards[0]
    statements = _check_against_sources(card, "codeine", {"CYP2D6": "3.0"}, {"CYP2D6": "3.0"})
    assert sorted(set(statements.values())) == ["CPIC", "DPWG"]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Codeine: CYP2D6 Ultrarapid Metabolizer")


def test_simvastatin_slco1b1_poor_function(both):
    cards = sign(both, _order("simvastatin"), genotype("SLCO1B1", "*5/*5"))
    assert len(cards) == 1
    statements = _check_against_sources(cards[0], "simvastatin", {"SLCO1B1": "Poor Function"}, {"SLCO1B1": "Poor Function"})
    assert sorted(set(statements.values())) == ["CPIC", "DPWG"]
    # the DPWG annotation lists no publication: the card cites the PharmGKB annotation itself
    assert "PharmGKB/ClinPGx guideline annotation (it lists no publication)" in cards[0]["detail"]


def test_fluorouracil_dpyd_activity_score_one(both):
    cards = sign(both, _order("fluorouracil", "4492"), genotype("DPYD", "c.1905+1G>A (*2A)/Reference"))
    assert len(cards) == 1
    card = cards[0]
    statements = _check_against_sources(card, "fluorouracil", {"DPYD": "1.0 (Intermediate Metabolizer)"}, {"DPYD": "1.0"})
    assert sorted(set(statements.values())) == ["CPIC", "DPWG"]
    assert card["indicator"] == "warning"
    assert card["detail"].splitlines()[0].startswith("**CPIC and DPWG agree in kind** — adjust the dose")


def test_citalopram_cyp2c19_poor_metabolizer_sources_disagree_in_kind(both):
    cards = sign(both, _order("citalopram"), genotype("CYP2C19", "*2/*2"))
    assert len(cards) == 1
    card = cards[0]
    statements = _check_against_sources(card, "citalopram", {"CYP2C19": "Poor Metabolizer"}, {"CYP2C19": "Poor Metabolizer"})
    dpwg = DPWG_SOURCE[next(r for r, s in statements.items() if s == "DPWG")]
    assert dpwg["dosingInformation"] and not dpwg["alternateDrugAvailable"]   # DPWG: dose
    assert card["detail"].splitlines()[0] == ("**CPIC and DPWG disagree in kind** — CPIC: choose an alternative drug; "
                                              "DPWG: adjust the dose. The indicator follows the more cautious advice.")
    assert card["indicator"] == "critical"   # CPIC's: Strong with an alternative drug, more cautious than DPWG's warning


def test_a_drug_only_dpwg_covers_flecainide(both):
    cards = sign(both, _order("flecainide", "4441"), genotype("CYP2D6", "*4/*4"))
    assert len(cards) == 1
    card = cards[0]
    statements = _check_against_sources(card, "flecainide", {"CYP2D6": "0.0"}, None)
    assert set(statements.values()) == {"DPWG"}
    assert card["source"]["label"] == "DPWG via pgx-cds (PharmGKB/ClinPGx, CC BY-SA 4.0)"
    assert card["indicator"] == "warning"


def test_the_audit_record_says_which_sources_each_card_rests_on(both):
    sign(both, _order("flecainide", "4441"), genotype("CYP2D6", "*4/*4"))
    sign(both, _order("clopidogrel"), genotype("CYP2C19", "*2/*2"))
    assert both.store.flush(timeout=10)
    with sqlite3.connect(both.audit_db) as db:
        rows = db.execute("SELECT rule_id, guideline_id, source FROM cds_card").fetchall()
    assert ("default", "dpwg-flecainide-cyp2d6", "DPWG") in rows
    assert ("clopidogrel-cyp2c19", "cpic-clopidogrel-cyp2c19 + dpwg-clopidogrel-cyp2c19", "CPIC+DPWG") in rows


def test_the_shipped_cpic_only_policy_keeps_todays_cards(service):
    """The default site (rules/default.yaml: sources [CPIC]): CPIC's card alone, and nothing for a DPWG-only drug."""
    cards = sign(service, _order("clopidogrel"), genotype("CYP2C19", "*2/*2"))
    assert len(cards) == 1 and "DPWG" not in cards[0]["detail"]
    assert cards[0]["source"]["label"] == "CPIC via pgx-cds"
    assert sign(service, _order("flecainide", "4441"), genotype("CYP2D6", "*4/*4")) == []


def test_patient_view_names_each_source_and_its_classification(both):
    order = {**_order("flecainide", "4441"), "status": "active"}
    body = hook_request("patient-view", prefetch={"genomics": searchset(genotype("CYP2D6", "*4/*4")),
                                                  "medications": searchset(order)})
    response = both.call("pgx-patient-view", body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert "flecainide" in card["summary"]
    assert "([DPWG](https://www.pharmgkb.org/guidelineAnnotation/" in card["detail"]
    assert "not graded (N/A in the PharmGKB export)" in card["detail"] and "None)" not in card["detail"]


@pytest.mark.parametrize("observation", [genotype("HLA-B", "*15:11/*07:02"), hla("*15:11", True)],
                         ids=["typing", "positive test"])
def test_carbamazepine_hla_b_15_11_carrier_gets_dpwgs_advice(both, observation):
    """DPWG keys carbamazepine by HLA-B*15:11 (CPIC keys nothing by it): a carrier is no longer read as
    negative for everything and left with CPIC's *15:02-negative advice alone."""
    (card,) = sign(both, _order("carbamazepine", "2002"), observation)   # cpic_drugs: RxNorm:2002
    statements = _statements(card)
    dpwg = [rid for rid, source in statements.items() if source == "DPWG"]
    assert dpwg == ["dpwg-PA166299113"], statements
    assert DPWG_SOURCE["dpwg-PA166299113"]["lookupKey"] == {"HLA-B": "*15:11 positive"}
    items = re.findall(r"<p>(.*?)</p>", DPWG_SOURCE["dpwg-PA166299113"]["text"]["html"])
    assert len(items) == 2      # two list items, shown as one sentence of two parts
    assert f"{items[0]}; {items[1]}" in _shown(card["detail"])


def test_a_key_we_cannot_reach_raises_an_info_card_only_when_it_carries_advice(both, tmp_path):
    """DPWG's HLA-B '1511 and 1502' key is its own "no recommendation" (no curator flag; source text: "The
    guideline does not provide a recommendation"): a patient negative for both gets no card, as for any
    key without advice. The same key carrying advice would be advice we cannot match: then an info card."""
    from cds.service.app import create_app
    from cds.service.config import Settings

    (combined,) = [r for r in DPWG_SOURCE.values() if r["lookupKey"] == {"HLA-B": "1511 and 1502"}]
    assert not (combined["dosingInformation"] or combined["alternateDrugAvailable"] or combined["otherPrescribingGuidance"])
    negative = genotype("HLA-B", "*44:02/*08:01")
    assert sign(both, _order("carbamazepine", "2002"), negative) == []

    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", tmp_path / "rules" / "default.yaml")
    rules = tmp_path / "rules" / "default.yaml"       # its case expecting no card no longer holds here
    case = "genotypes: {HLA-B: '*44:02/*08:01'}\n        drugs: [carbamazepine]\n        expect: []"
    policy = rules.read_text(encoding="utf-8")
    assert policy.count(case) == 1
    rules.write_text(policy.replace(case, case[:-2] + "[{indicator: info}]"), encoding="utf-8")
    path = tmp_path / "guidelines" / "dpwg" / "dpwg-carbamazepine-hla-b.yaml"
    text = path.read_text(encoding="utf-8")
    unreachable = text.index("unreachable:")
    advising = text[unreachable:].replace("alternate_drug_available: false", "alternate_drug_available: true", 1)
    path.write_text(text[:unreachable] + advising, encoding="utf-8")
    live = LiveServer(create_app(Settings(auth_mode="off", audit=False, knowledge_dir=tmp_path,
                                          local_state=str(tmp_path / "local-state.sqlite3"))))
    try:
        (card,) = sign(live, _order("carbamazepine", "2002"), negative)
    finally:
        live.stop()
    assert card["indicator"] == "info"
    assert card["summary"] == "Carbamazepine: HLA-B *44:02/*08:01 — DPWG advice could not be matched to this result; see the guideline"
    assert "1511 and 1502" in card["detail"]
