"""Suggestions every client applies: create before delete (the CDS Hooks sandbox's order reducer stops at
a suggestion's first delete), labels that say what the click does, and CPIC's dose sentence for the
suggested drug on the new MedicationRequest."""
from __future__ import annotations

import csv
import json

from cards_fhir import genotype, order, order_sign
from pgx_paths import CPIC


def apply_like_the_sandbox(drafts: dict[str, dict], actions: list[dict]) -> dict[str, dict]:
    """Apply a suggestion's actions in order as a client that stops at the first delete does."""
    drafts = dict(drafts)
    for action in actions:
        if action["type"] == "create":
            resource = action["resource"]
            drafts[f"{resource['resourceType']}/new-{len(drafts)}"] = resource
        elif action["type"] == "delete":
            drafts.pop(action["resourceId"], None)
            break
    return drafts


def test_each_suggestion_leaves_the_new_order_with_a_reducer_that_stops_at_delete(service):
    draft = order("clopidogrel")
    body = order_sign(draft, genomics=[genotype("CYP2C19", "*2/*2")])
    (card,) = service.call("pgx-order-sign", body).json()["cards"]
    assert len(card["suggestions"]) == 2
    for suggestion in card["suggestions"]:
        after = apply_like_the_sandbox({"MedicationRequest/mr-clopidogrel": draft}, suggestion["actions"])
        assert "MedicationRequest/mr-clopidogrel" not in after
        (created,) = after.values()
        assert created["medicationCodeableConcept"]["text"] in suggestion["label"]
        assert [a["type"] for a in suggestion["actions"]] == ["create", "delete"]
        assert suggestion["label"].startswith("Replace clopidogrel with ")


def test_a_suggested_statin_carries_cpic_dose_sentence(service):
    body = order_sign(order("simvastatin"), genomics=[genotype("SLCO1B1", "*5/*5")])
    (card,) = service.call("pgx-order-sign", body).json()["cards"]
    created = {a["resource"]["medicationCodeableConcept"]["text"]: a["resource"]
               for s in card["suggestions"] for a in s["actions"] if a["type"] == "create"}
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    def cpic(drug: str, lookup: dict) -> str:
        (row,) = [r for r in rows if r["drugname"] == drug and json.loads(r["lookupkey_json(reconstructed)"]) == lookup]
        return " ".join(row["drugrecommendation"].split())

    # the patient has no ABCG2 result: rosuvastatin's row for SLCO1B1 Poor Function with ABCG2 No Result
    rosuvastatin = created["rosuvastatin"]["dosageInstruction"][0]["text"]
    assert rosuvastatin in cpic("rosuvastatin", {"ABCG2": "No Result", "SLCO1B1": "Poor Function"})
    assert "≤20mg" in rosuvastatin
    pravastatin = created["pravastatin"]["dosageInstruction"][0]["text"]
    assert pravastatin in cpic("pravastatin", {"SLCO1B1": "Poor Function"}) and "≤40mg" in pravastatin
    from fhir.resources.R4B.medicationrequest import MedicationRequest

    for resource in created.values():
        MedicationRequest.model_validate(resource)


def test_no_dose_text_where_cpic_gives_no_dose(engine, renderer):
    from cds.explain import parse_genotype_args

    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2C19=*2/*2"]), ["clopidogrel"])
    (card,) = renderer.order_cards(evaluation, "order-sign")
    for s in card.card["suggestions"]:
        assert "dosageInstruction" not in s["actions"][0]["resource"]
