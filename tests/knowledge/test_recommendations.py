"""Every recommendation of every CPIC guideline file is reachable, exactly and alone.

For each recommendation of the 2024 export (../shared/cpic/guidelines) and of CPIC database release
1.54 (../shared/cpic/v1.54), evaluating its lookup key for its drug and population returns exactly
that recommendation (same classification, same text) and no other. We encode release 1.54; the 2024
recommendations it changed or removed are listed in tests/fixtures/cpic-1.54-recommendation-changes.tsv.
"""
from __future__ import annotations

import csv
import json
import re

import pytest

from pgx_paths import REPO
from cpic_sources import (errata, key, legacy_recommendations, norm_text, release_recommendation_texts,
                          release_recommendations)
from cds.genotype import Interpretation, allele_attribute
from cds.knowledge.models import NO_RESULT

CHANGES_FILE = REPO / "tests" / "fixtures" / "cpic-1.54-recommendation-changes.tsv"


def _changes() -> dict[tuple, str]:
    lines = [line for line in CHANGES_FILE.read_text().splitlines() if not line.startswith("#")]
    rows = csv.DictReader(lines, delimiter="\t")
    return {(r["drug"], r["population"], r["lookup"]): r["change"] for r in rows}


def _patient(kb, lookup: dict[str, str]) -> dict[str, list[Interpretation]]:
    patient = {}
    for gene, value in lookup.items():
        if value == NO_RESULT:
            continue
        if kb.interpreters[gene].kind == "allele-status":
            attrs = {allele_attribute(gene, value.split()[0]): value}
        else:
            attrs = {gene: value}
        patient.setdefault(gene, []).append(Interpretation(gene, value, attrs))
    return patient


def _matches(engine, kb, drug, population, lookup):
    evaluation = engine.evaluate(_patient(kb, lookup), [drug], population)
    return [m.recommendation for m in evaluation.drugs[0].matches if m.recommendation.population == population]


def test_the_listed_changes_are_exactly_the_differences_between_the_sources():
    legacy = {key(r): r for r in legacy_recommendations()}
    release = {key(r): r for r in release_recommendations()}
    found = {}
    for k, old in legacy.items():
        new = release.get(k)
        if new is None:
            found[k] = "removed in 1.54"
            continue
        changed = []
        if old["classification"] != new["classification"]:
            changed.append("classification")
        if not norm_text(old["text"]).startswith(norm_text(new["text"])):
            changed.append("text")
        if changed:
            found[k] = "+".join(changed) + " changed in 1.54"
    assert found == _changes()


def test_every_2024_recommendation(kb, engine):
    changes = _changes()
    release = {key(r): r for r in release_recommendations()}
    texts = release_recommendation_texts()  # CPIC's text as CPIC means it: line breaks, errata
    checked = unchanged = 0
    for old in legacy_recommendations():
        k = key(old)
        change = changes.get(k)
        if change == "removed in 1.54":
            producible = all(v == NO_RESULT or v in kb.interpreters[g].lookup_values().get(g, set()) | {
                v2 for vals in kb.interpreters[g].lookup_values().values() for v2 in vals} for g, v in old["lookup"].items())
            if producible:  # e.g. thiopurine "No Result" combinations: no key of the source matches any more; the
                # answer for a missing TPMT/NUDT15 is CPIC's advice for each of its values (test_missing_partner.py)
                evaluation = engine.evaluate(_patient(kb, old["lookup"]), [old["drug"]], old["population"])
                assert [m for m in evaluation.drugs[0].matches if m.missing_gene is None] == [], k
            continue
        got = _matches(engine, kb, old["drug"], old["population"], old["lookup"])
        assert len(got) == 1, (k, [r.id for r in got])
        expected = release[k]  # release 1.54 is what we encode
        assert got[0].classification == expected["classification"], k
        assert got[0].recommendation == texts[expected["id"]], k
        if change is None:
            assert got[0].classification == old["classification"], k
            legacy_text = old["text"]   # with the release's errata (guidelines/errata/cpic.tsv), where the 2024 text shares the typo
            for original, fixed in errata().get(("cpic_recommendations_v1.54.tsv", expected["id"], "drugrecommendation"), []):
                legacy_text = legacy_text.replace(original, fixed)
            assert norm_text(legacy_text).startswith(norm_text(got[0].recommendation)), k
            unchanged += 1
        checked += 1
    print(f"2024 recommendations reached exactly: {checked} ({unchanged} identical to the 2024 text and "
          f"classification, {checked - unchanged} as changed by release 1.54)")
    assert checked > 1800


UNREACHABLE_FILE = REPO / "tests" / "fixtures" / "cpic-1.54-unreachable.tsv"


def _unreachable() -> list[dict[str, str]]:
    lines = [line for line in UNREACHABLE_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def test_every_recommendation_of_release_1_54_is_returned_or_explained(kb, engine):
    """All 2,129 rows: each comes back for its own drug, population and lookup key, with CPIC's text as CPIC
    means it (line breaks, errata), or the fixture says why it cannot."""
    texts = release_recommendation_texts()
    explained = {r["id"]: r for r in _unreachable() if r["id"] != "-"}
    drugs = {d.name for g in kb.guidelines.values() if g.source == "CPIC" for d in g.drugs}  # DPWG: test_dpwg.py
    returned, unexplained = 0, []
    rows = list(release_recommendations())
    for rec in rows:
        if rec["id"] in explained:
            assert explained[rec["id"]]["drug"] == rec["drug"]
            assert rec["drug"] not in drugs or not _matches(engine, kb, rec["drug"], rec["population"], rec["lookup"]), \
                f"{rec['id']} is listed as unreachable but is returned"
            continue
        if rec["drug"] not in drugs:
            unexplained.append(rec["id"])
            continue
        got = _matches(engine, kb, rec["drug"], rec["population"], rec["lookup"])
        if [r.id for r in got] != [f"cpic-{rec['id']}"]:
            unexplained.append(rec["id"])
            continue
        assert got[0].recommendation == texts[rec["id"]], rec["id"]
        assert got[0].classification == rec["classification"], rec["id"]
        returned += 1
    print(f"release 1.54: {len(rows)} recommendations, {returned} returned, {len(explained)} explained in "
          f"{UNREACHABLE_FILE.name}, {len(unexplained)} unexplained")
    assert len(rows) == 2129
    assert unexplained == []
    assert returned + len(explained) == len(rows)
    assert returned == sum(len(g.recommendations) for g in kb.guidelines.values() if g.source == "CPIC")


def test_guidance_without_table_rows_is_said_and_encoded(kb):
    """Warfarin and peginterferon: no rows to return, so the fixture says what and why, and their guidelines
    are still encoded (citation, no recommendations)."""
    drugs = {name: [g for g in gs if g.source == "CPIC"] for name, gs in kb.drugs().items()}  # DPWG: test_dpwg.py
    release_drugs = {r["drug"] for r in release_recommendations()}
    for row in (r for r in _unreachable() if r["id"] == "-"):
        assert row["drug"] not in release_drugs and row["reason"]
        (guideline,) = drugs[row["drug"]]
        assert guideline.citations and not [r for r in guideline.recommendations if r.drug == row["drug"]]


def test_line_breaks_and_errata_reach_the_text(kb):
    index = {r.id: r for g in kb.guidelines.values() for r in g.recommendations}
    breaks = [r for r in index.values() if "\n" in r.recommendation or "\n" in (r.comments or "")
              or any("\n" in v for v in r.implications.values())]
    assert len(breaks) > 300 and not any("\\n" in r.recommendation + (r.comments or "") for r in index.values())
    table = "cpic_recommendations_v1.54.tsv"
    for (name, row_id, field), fixes in errata().items():
        for original, fixed in fixes:
            if name == table:
                rec = index[f"cpic-{row_id}"]
                text = {"drugrecommendation": rec.recommendation, "comments": rec.comments or ""}[field]
                assert original not in text and fixed in text


def test_every_guideline_file_is_encoded(kb):
    from pgx_paths import CPIC

    sources = sorted((CPIC / "guidelines").glob("*.json"))
    assert len(sources) == 56
    encoded = {g.pharmgkb_id for g in kb.guidelines.values()}
    for path in sources:
        assert json.loads(path.read_text())["guideline"]["id"] in encoded, path.name


def test_every_drug_has_an_rxnorm_code_from_the_release_table(kb):
    from pgx_paths import CPIC

    with (CPIC / "v1.54" / "cpic_drugs_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        codes = {r["pharmgkbid"]: r["rxnormid"] for r in csv.DictReader(f, delimiter="\t")}
    for guideline in kb.guidelines.values():
        for drug in guideline.drugs:
            if drug.no_rxnorm:   # the sources give none (ribostamycin: RxNorm:NA; DPWG's flucloxacillin, flucytosine)
                assert not drug.rxnorm and not codes.get(drug.pharmgkb, "").isdigit(), drug.name
                continue
            assert drug.rxnorm and drug.rxnorm == codes[drug.pharmgkb], drug.name


@pytest.mark.parametrize("drug,lookup,population,expected_start", [
    # multi-gene recommendations match on all their genes (text from the 1.54 release table)
    ("amitriptyline", {"CYP2C19": "Intermediate Metabolizer", "CYP2D6": "1.0"}, "general", "Consider a 25% reduction"),
    ("phenytoin", {"CYP2C9": "1.0", "HLA-B": "*15:02 positive"}, "PHT naive", "If patient is phenytoin-naive, do not use"),
    ("azathioprine", {"NUDT15": "Poor Metabolizer", "TPMT": "Normal Metabolizer"}, "general", "Consider alternative nonthiopurine"),
    ("rosuvastatin", {"ABCG2": "Poor Function", "SLCO1B1": "Normal Function"}, "general", None),
])
def test_multi_gene_recommendations_need_every_gene(kb, engine, drug, lookup, population, expected_start):
    got = _matches(engine, kb, drug, population, lookup)
    assert len(got) == 1
    if expected_start:
        assert got[0].recommendation.startswith(expected_start)
    # change one gene's value and the recommendation no longer matches
    gene, value = next(iter(lookup.items()))
    other = next(v for v in sorted(kb.interpreters[gene].lookup_values()[gene if kb.interpreters[gene].kind != "allele-status" else allele_attribute(gene, value.split()[0])]) if v != value)
    assert got[0] not in _matches(engine, kb, drug, population, {**lookup, gene: other})


def test_no_cpic_text_a_card_shows_doubles_a_word(kb):
    """CPIC's release doubles words in some texts ("dose adjustments or or alternative therapy" in the CYP2C19,
    CYP2B6, NUDT15 and TPMT poor metabolizer results; "high risk for for acute"): guidelines/errata/cpic.tsv
    corrects each, so no CPIC text a card or the SMART page shows has a doubled word."""
    doubled = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)
    texts = [(r.id, t) for g in kb.guidelines.values() if g.source == "CPIC" for r in g.recommendations
             for t in (r.recommendation, r.comments or "", *r.implications.values())]
    texts += [(f"{t.gene} {x.result}", x.consultation or "") for t in kb.genes.values() for x in t.results]
    found = [(where, m.group(0)) for where, text in texts for m in doubled.finditer(text)]
    assert found == []
