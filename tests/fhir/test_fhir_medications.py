"""Medication orders: RxNorm ingredient and product codes, combination products, contained and
referenced Medications, ingredient names and their traps, the CDS Hooks specification's R4 examples
and the sandbox-shaped contexts. The ingredient list is CPIC 1.54's drug table (conftest.py)."""
from __future__ import annotations

import csv
import logging
import subprocess
import sys

import pytest
from fhir_fixtures import REPO, SHARED, load

from cds.errors import CdsError
from cds.facts import Ingredient
from cds.fhir import MedicationResolver, load_product_table
from cds.fhir.medications import DEFAULT_PRODUCTS

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def order(medication: dict, oid="o1", status="draft", **extra) -> dict:
    return {"resourceType": "MedicationRequest", "id": oid, "status": status, "intent": "order",
            "subject": {"reference": "Patient/example"}, **medication, **extra}


def rx(code: str, display: str | None = None) -> dict:
    coding = {"system": RXNORM, "code": code}
    if display:
        coding["display"] = display
    return {"medicationCodeableConcept": {"coding": [coding]}}


def names(o) -> list[str]:
    return [i.name for i in o.ingredients]


# --- the product table ------------------------------------------------------------------------------

def test_product_table_is_what_the_script_derives():
    if not (SHARED / "rxnorm" / "scd_sbd_to_ingredient.tsv").exists():
        pytest.skip("../shared/rxnorm is not present")
    derived = subprocess.run([sys.executable, str(REPO / "guidelines/rxnorm/derive_products.py"), str(SHARED)],
                             capture_output=True, text=True, check=True).stdout
    assert derived == DEFAULT_PRODUCTS.read_text(encoding="utf-8")


def test_product_table_rows_agree_with_the_source():
    """Every source row kept is kept with all of its ingredients; only whole-word additions are new."""
    table = load_product_table()
    with open(SHARED / "rxnorm" / "scd_sbd_to_ingredient.tsv", encoding="utf-8") as f:
        source = {r["rxcui"]: r for r in csv.DictReader(f, delimiter="\t")}
    added = 0
    for rxcui, ingredients in table.items():
        codes = {i.rxnorm for i in ingredients}
        original = set(source[rxcui]["ingredient_rxcuis"].split(";"))
        assert original <= codes, rxcui
        added += len(codes - original)
        for i in ingredients:
            assert i.name.lower() in source[rxcui]["name"].lower(), rxcui
    assert added == 19                    # hydrocodone ×13, glyburide ×6: see guidelines/rxnorm/README.md


@pytest.mark.parametrize("rxcui,expected", [
    ("309362", [("32968", "clopidogrel")]),               # clopidogrel 75 MG Oral Tablet (SCD)
    ("213169", [("32968", "clopidogrel")]),               # Plavix 75 MG (SBD)
    ("749196", [("32968", "clopidogrel")]),
    ("749198", [("32968", "clopidogrel")]),
    ("993781", [("2670", "codeine")]),                    # Acetaminophen 300 MG / Codeine Phosphate 30 MG
    ("858838", [("5489", "hydrocodone"), ("5640", "ibuprofen")]),   # Vicoprofen: hydrocodone was missing in the source
    ("351249", [("321988", "escitalopram")]),
    ("200371", [("2556", "citalopram")]),
])
def test_product_table_entries(rxcui, expected):
    assert [(i.rxnorm, i.name) for i in load_product_table()[rxcui]] == expected


@pytest.mark.parametrize("content,message", [
    ("rxcui\tname\n", "the header must be"),
    ("rxcui\ttty\tname\tingredient_rxcuis\tingredient_names\tadded\n1\tSCD\tx\t2;3\tonly-one\t\n", ":2: RxCUIs must be numbers"),
    ("rxcui\ttty\tname\tingredient_rxcuis\tingredient_names\tadded\n1\tSCD\tx\t2\ta\t\n1\tSCD\tx\t2\ta\t\n", ":3: RxCUI 1 is listed twice"),
    ("rxcui\ttty\tname\tingredient_rxcuis\tingredient_names\tadded\n1\tSCD\tx\n", ":2: expected 6 tab-separated columns"),
])
def test_broken_product_table(tmp_path, content, message):
    path = tmp_path / "products.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CdsError, match=message):
        load_product_table(path)


def test_ingredient_list_must_be_names_and_codes():
    with pytest.raises(CdsError, match="is not a name and an RxNorm code"):
        MedicationResolver({"clopidogrel": ""}, products={})


# --- resolution order ------------------------------------------------------------------------------

def test_ingredient_code_itself(resolver):
    [o] = resolver.read_orders(order(rx("32968", "clopidogrel")))
    assert (o.ingredients, o.resolution, o.unresolved) == ((Ingredient("32968", "clopidogrel"),), "rxnorm-ingredient", False)
    assert o.order_id == "MedicationRequest/o1" and o.codes == ("rxnorm:32968",)


def test_combination_products_resolve_to_every_ingredient(resolver):
    [apap_codeine, soma, *_] = resolver.read_orders(load("built/draft-orders-bundle.json"))
    assert (names(apap_codeine), apap_codeine.resolution) == (["codeine"], "rxnorm-product")
    assert names(soma) == ["aspirin", "carisoprodol", "codeine"]


def test_draft_orders_bundle(resolver, caplog):
    caplog.set_level(logging.INFO, logger="cds.fhir")
    orders = resolver.read_orders(load("built/draft-orders-bundle.json"),
                                  extra_resources=[load("built/medication-plavix-prefetch.json")])
    got = {o.order_id: (names(o), o.resolution, o.unresolved) for o in orders}
    assert got == {
        "MedicationRequest/apap-codeine": (["codeine"], "rxnorm-product", False),
        "MedicationRequest/soma-compound-codeine": (["aspirin", "carisoprodol", "codeine"], "rxnorm-product", False),
        # contained Medication with no code but coded ingredients
        "MedicationRequest/tylenol-3-contained": (["codeine"], "medication-ingredient", False),
        # Medication in the same Bundle, by urn:uuid fullUrl
        "MedicationRequest/vicoprofen-referenced": (["hydrocodone", "ibuprofen"], "rxnorm-product", False),
        # Medication among the extra resources (a prefetched searchset)
        "MedicationRequest/plavix-prefetched-medication": (["clopidogrel"], "rxnorm-product", False),
        "MedicationRequest/escitalopram-text-only": (["escitalopram"], "name", False),
    }  # the NutritionOrder is not an order we read; the entered-in-error request is not an order at all
    assert "MedicationRequest/entered-in-error: status entered-in-error" in caplog.text
    vicoprofen = next(o for o in orders if o.order_id == "MedicationRequest/vicoprofen-referenced")
    assert vicoprofen.codes == ("rxnorm:858838",) and vicoprofen.display.endswith("[Vicoprofen]")
    assert vicoprofen.resource["id"] == "vicoprofen-referenced"


def test_a_product_read_again_reads_as_it_did_the_first_time(cpic_ingredients):
    """A resolver remembers each product as written; orders of it read afterwards, whoever they are
    for, equal what a resolver that never saw the product reads, and keep their own ids and resources."""
    from cds.fhir.medications import MedicationResolver

    bundle = load("built/draft-orders-bundle.json")
    extra = [load("built/medication-plavix-prefetch.json")]
    used = MedicationResolver(cpic_ingredients)
    first = used.read_orders(bundle, extra_resources=extra)
    again = used.read_orders(bundle, extra_resources=extra)
    fresh = MedicationResolver(cpic_ingredients).read_orders(bundle, extra_resources=extra)
    assert again == first == fresh and len(used._by_product) > 0
    other = [used.read_orders(order(rx("309362", "clopidogrel 75 MG Oral Tablet"), oid=f"o{n}")) for n in (1, 2)]
    assert [o[0].order_id for o in other] == ["MedicationRequest/o1", "MedicationRequest/o2"]
    assert [o[0].resource["id"] for o in other] == ["o1", "o2"]
    assert other[0][0].ingredients == other[1][0].ingredients == (Ingredient("32968", "clopidogrel"),)


def test_referenced_medication_that_is_missing(resolver):
    [o] = resolver.read_orders(order({"medicationReference": {"reference": "Medication/nowhere"}}))
    assert (o.unresolved, o.ingredients, o.resolution) == (True, (), "medication-reference-not-found")
    [o] = resolver.read_orders(order({"medicationReference": {"reference": "Medication/nowhere",
                                                               "display": "Clopidogrel 75 mg tablet"}}))
    assert (names(o), o.resolution) == (["clopidogrel"], "name")


@pytest.mark.parametrize("text,expected", [
    ("Escitalopram 10 MG Oral Tablet", ["escitalopram"]),           # not citalopram
    ("Citalopram 20 MG Oral Tablet", ["citalopram"]),
    ("dexlansoprazole 30 MG Delayed Release Oral Capsule", ["dexlansoprazole"]),   # not lansoprazole
    ("Fosphenytoin Sodium 50 MG/ML Injectable Solution", ["fosphenytoin"]),        # not phenytoin
    ("Mephenytoin 100 MG Oral Tablet", []),                         # not phenytoin: mephenytoin is no CPIC drug
    ("Clopidogrel Bisulfate 75 MG Oral Tablet", ["clopidogrel"]),   # salt form
    ("Codeine Phosphate 30 MG / Acetaminophen 300 MG Oral Tablet", ["codeine"]),
    ("Hydroxychloroquine Sulfate 200 MG Oral Tablet", ["hydroxychloroquine"]),     # not chloroquine
    ("Esomeprazole 40 MG Delayed Release Oral Capsule", ["esomeprazole"]),   # not omeprazole
    ("Plavix 75 MG Oral Tablet", ["clopidogrel"]),                  # a brand of the product table (SBD 213169)
    ("Codeine-free cough syrup", []),                               # negated: not codeine (issue 10)
])
def test_ingredient_names_whole_words_only(resolver, text, expected):
    [o] = resolver.read_orders(order({"medicationCodeableConcept": {"text": text}}))
    assert names(o) == expected
    assert o.unresolved == (not expected)
    assert o.codes == (f"text:{text}",)


def test_codings_that_contradict_each_other_are_not_resolved(resolver):
    concept = {"coding": [{"system": RXNORM, "code": "309362"}, {"system": RXNORM, "code": "200371"}]}
    [o] = resolver.read_orders(order({"medicationCodeableConcept": concept}))
    assert (o.unresolved, o.ingredients, o.resolution) == (True, (), "conflicting-codes")


def test_codings_that_agree(resolver):
    concept = {"coding": [{"system": RXNORM, "code": "309362"}, {"system": RXNORM, "code": "213169"},
                          {"system": "http://hl7.org/fhir/sid/ndc", "code": "63629-2957"}]}
    [o] = resolver.read_orders(order({"medicationCodeableConcept": concept}))
    assert (names(o), o.resolution) == (["clopidogrel"], "rxnorm-product")
    assert o.codes == ("rxnorm:309362", "rxnorm:213169", "http://hl7.org/fhir/sid/ndc|63629-2957")


def test_a_product_outside_the_table_falls_back_to_its_name(resolver):
    [o] = resolver.read_orders(order(rx("999999999", "Simvastatin 80 MG Oral Tablet")))
    assert (names(o), o.resolution) == (["simvastatin"], "name")


def test_prefetched_active_orders_searchset(resolver):
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "https://ehr.example/fhir/MedicationRequest/active-1", "search": {"mode": "match"},
         "resource": order({"medicationReference": {"reference": "Medication/plavix-75"}}, oid="active-1", status="active")},
        {"fullUrl": "https://ehr.example/fhir/Medication/plavix-75", "search": {"mode": "include"},
         "resource": load("built/medication-plavix-prefetch.json")["entry"][0]["resource"]},
        {"fullUrl": "https://ehr.example/fhir/MedicationRequest/stopped", "search": {"mode": "match"},
         "resource": order(rx("309362"), oid="stopped", status="cancelled")},
    ]}
    [o] = resolver.read_orders(bundle)
    assert (o.order_id, names(o)) == ("MedicationRequest/active-1", ["clopidogrel"])


# --- real request shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["shared/cds-hooks_docs/order-select__Example_R4.json",
                                     "shared/cds-hooks_docs/order-sign__Example_R4.json"])
def test_cds_hooks_specification_r4_examples(resolver, caplog, fixture):
    """Both fail strict R4 validation (NutritionOrder without intent, Dosage shapes); the order is read."""
    caplog.set_level(logging.WARNING, logger="cds.fhir")
    [o] = resolver.read_orders(load(fixture)["context"]["draftOrders"])
    assert o.order_id == "MedicationRequest/smart-MedicationRequest-103"
    # amoxicillin/clavulanate: no CPIC drug, so nothing to resolve to: unresolved, never guessed
    assert (o.unresolved, o.ingredients, o.resolution) == (True, (), "rxnorm-code-not-in-product-table")
    assert o.codes == ("rxnorm:617993",) and o.display.startswith("Amoxicillin 120 MG/ML")
    assert "MedicationRequest/smart-MedicationRequest-103 does not validate as FHIR R4 (dosageInstruction" in caplog.text


def test_sandbox_clopidogrel_with_category_object(resolver, caplog):
    caplog.set_level(logging.WARNING, logger="cds.fhir")
    [o] = resolver.read_orders(load("shared/sandbox/order-select_context_clopidogrel_309362.json")["draftOrders"])
    assert (o.order_id, o.ingredients, o.resolution) == ("MedicationRequest/request-123",
                                                         (Ingredient("32968", "clopidogrel"),), "rxnorm-product")
    assert "request-123 does not validate as FHIR R4 (category: Input should be a valid list)" in caplog.text


def test_sandbox_order_before_a_drug_is_picked(resolver):
    [o] = resolver.read_orders(load("shared/sandbox/order-select_context_no_medication_chosen_yet.json")["draftOrders"])
    assert (o.order_id, o.unresolved, o.ingredients, o.resolution, o.codes) == (
        "MedicationRequest/request-123", True, (), "no-medication", ())


def test_validation_can_be_turned_off(cpic_ingredients, caplog):
    caplog.set_level(logging.WARNING, logger="cds.fhir")
    quiet = MedicationResolver(cpic_ingredients, validate=False)
    [o] = quiet.read_orders(load("shared/sandbox/order-select_context_clopidogrel_309362.json")["draftOrders"])
    assert names(o) == ["clopidogrel"] and "does not validate" not in caplog.text


@pytest.mark.parametrize("bad", [
    {"medicationCodeableConcept": "clopidogrel"},
    {"medicationReference": "Medication/x"},
])
def test_unreadable_medication(resolver, bad):
    [o] = resolver.read_orders(order(bad))
    assert (o.unresolved, o.resolution) == (True, "unreadable-medication")


def test_input_that_is_not_a_bundle(resolver, caplog):
    assert resolver.read_orders("junk") == []
    assert resolver.read_orders({"resourceType": "Bundle", "entry": ["junk", {"resource": order(rx("2670"))}]})[0].ingredients \
        == (Ingredient("2670", "codeine"),)
    assert "entry 0: not a JSON object" in caplog.text


def test_a_resolver_bug_on_one_order_does_not_sink_the_rest(resolver, monkeypatch):
    original = MedicationResolver._resolve

    def broken(self, concept, *args):
        if concept and concept.get("text") == "boom":
            raise RuntimeError("boom")
        return original(self, concept, *args)

    monkeypatch.setattr(MedicationResolver, "_resolve", broken)
    orders = resolver.read_orders([order({"medicationCodeableConcept": {"text": "boom"}}, oid="a"),
                                   order(rx("2670"), oid="b")])
    assert [(o.order_id, o.unresolved, o.resolution) for o in orders] == [
        ("MedicationRequest/a", True, "internal-error"), ("MedicationRequest/b", False, "rxnorm-ingredient")]
