"""Results of activity-score genes stated as a phenotype only, or as a score CPIC keys as "≥X" (issue 9).

Expected answers come from CPIC release 1.54's own tables, never from our output:
`cpic_recommendations_v1.54.tsv` (which recommendation has which lookup key) and
`cpic_gene_results_cds_v1.54.tsv` (which activity score is which phenotype).
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from cds.explain import parse_genotype_args
from cds.knowledge.models import NO_RESULT
from pgx_paths import CPIC

RELEASE = CPIC / "v1.54"


def _rows(name):
    with (RELEASE / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# (gene, activity score as CPIC spells it) → phenotype, from CPIC's gene result table
SCORE_PHENOTYPE = {(r["gene"], r["activity_score"]): r["result"] for r in _rows("cpic_gene_results_cds_v1.54.tsv")
                   if r["activity_score"] != "n/a"}
SCORE_GENES = sorted({gene for gene, _ in SCORE_PHENOTYPE})
RECOMMENDATIONS = [{**r, "lookup": json.loads(r["lookupkey_json(reconstructed)"])}
                   for r in _rows("cpic_recommendations_v1.54.tsv")]
ACTIONABLE_CLASSES = {"Strong", "Moderate", "Optional"}


def _score(text):
    return Decimal(text.lstrip("≥"))


def _cases():
    """One case per (score gene, phenotype, drug, the other genes' lookup values) that CPIC keys by
    score: the recommendation ids whose score maps to that phenotype, and their scores."""
    cases = defaultdict(dict)
    for rec in RECOMMENDATIONS:
        for gene, value in rec["lookup"].items():
            phenotype = SCORE_PHENOTYPE.get((gene, value))
            if phenotype is None:
                continue
            others = tuple(sorted((g, v) for g, v in rec["lookup"].items() if g != gene))
            cases[(gene, phenotype, rec["drugname"], others)][rec["id"]] = rec
    return cases


CASES = _cases()


def test_the_sources_give_three_score_genes_and_the_combinations_the_issue_names():
    assert SCORE_GENES == ["CYP2C9", "CYP2D6", "DPYD"]
    differing = {(gene, drug, phenotype) for (gene, phenotype, drug, _), recs in CASES.items()
                 if len({(r["classification"], r["drugrecommendation"]) for r in recs.values()}) > 1}
    for named in [("DPYD", "fluorouracil", "Poor Metabolizer"), ("DPYD", "fluorouracil", "Intermediate Metabolizer"),
                  ("DPYD", "capecitabine", "Poor Metabolizer"), ("DPYD", "capecitabine", "Intermediate Metabolizer"),
                  ("CYP2C9", "phenytoin", "Intermediate Metabolizer"), ("CYP2D6", "atomoxetine", "Intermediate Metabolizer"),
                  ("CYP2D6", "nortriptyline", "Intermediate Metabolizer"), ("CYP2D6", "tamoxifen", "Intermediate Metabolizer")]:
        assert named in differing


def _statement(kb, gene, value):
    """The `GENE=VALUE` statement whose lookup value is `value` (None: no result on file)."""
    if value == NO_RESULT:
        return None
    if kb.interpreters[gene].kind == "allele-status":
        return f"{gene}={value}"
    if value == "n/a":
        return f"{gene}=Indeterminate"
    return f"{gene}={value}"


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{'+'.join(v for _, v in c[3])}")
def test_a_phenotype_without_its_score_returns_cpics_advice_for_each_score(engine, kb, case):
    gene, phenotype, drug, others = case
    expected = CASES[case]
    if engine.drug_plan(drug) is None:
        pytest.skip(f"{drug} is not in the knowledge base yet (issue 9 item 4)")
    statements = [f"{gene}={phenotype}"] + [s for g, v in others if (s := _statement(kb, g, v))]
    # HLA alleles of interest are looked up one by one; an allele CPIC keys for this drug but not in
    # this combination is "No Result", which is what leaving it out states.
    evaluation = engine.evaluate(parse_genotype_args(engine, statements), [drug])
    matches = evaluation.drugs[0].matches
    populations = {" ".join(r["population"].split()) or "general" for r in expected.values()}
    assert {m.recommendation.population for m in matches} == populations
    undecided = []
    for population in sorted(populations):
        wanted = {i: r for i, r in expected.items() if (" ".join(r["population"].split()) or "general") == population}
        mine = [m for m in matches if m.recommendation.population == population]
        got = {m.recommendation.id.removeprefix("cpic-") for m in mine}
        contents = {(r["classification"], r["drugrecommendation"]) for r in wanted.values()}
        if len(contents) == 1:
            # every score of the phenotype has one recommendation: that one, once
            assert len(mine) == 1 and got <= set(wanted), (population, got, sorted(wanted))
            assert mine[0].score is None
        else:
            assert got == set(wanted), population
            for m in mine:
                assert m.matched_by == "phenotype" and m.score_gene == gene
                assert m.score == wanted[m.recommendation.id.removeprefix("cpic-")]["lookup"][gene]
                if m.score not in undecided:
                    undecided.append(m.score)
    assert evaluation.undecided_scores(evaluation.drugs[0]) == ({gene: undecided} if undecided else {})
    if all(r["classification"] in ACTIONABLE_CLASSES for r in expected.values()):
        assert matches, "a phenotype whose every score is actionable must not come back empty"


def test_most_cautious_first_dpyd_poor_metabolizer_and_fluorouracil(engine):
    matches = engine.evaluate(parse_genotype_args(engine, ["DPYD=Poor Metabolizer"]), ["fluorouracil"]).drugs[0].matches
    # CPIC 1.54: score 0 "Avoid use" before score 0.5 "Avoid use … or a strongly reduced dose"
    assert [m.score for m in matches] == ["0.0", "0.5"]
    assert matches[0].recommendation.recommendation.startswith("Avoid use of 5-fluorouracil")


def test_most_cautious_first_puts_flagged_alternatives_and_strong_before_dose_changes(engine):
    for gene, phenotype, drug in [("DPYD", "Intermediate Metabolizer", "capecitabine"),
                                  ("CYP2C9", "Intermediate Metabolizer", "phenytoin"),
                                  ("CYP2D6", "Intermediate Metabolizer", "atomoxetine"),
                                  ("CYP2D6", "Intermediate Metabolizer", "nortriptyline")]:
        evaluation = engine.evaluate(parse_genotype_args(engine, [f"{gene}={phenotype}"]), [drug])
        by_population = defaultdict(list)
        for m in evaluation.drugs[0].matches:
            by_population[m.recommendation.population].append(m)
        for matches in by_population.values():
            ranks = [_caution(m.recommendation, m.score) for m in matches]
            assert ranks == sorted(ranks), (drug, [(m.score, m.recommendation.classification) for m in matches])


def _caution(rec, score):
    # the documented order, restated here: flags tier, classification, lower score
    f = rec.flags
    tier = (4 if f is None else 0 if f.alternate_drug_available and rec.classification == "Strong"
            else 1 if f.alternate_drug_available else 2 if f.dosing_information else 3 if f.other_prescribing_guidance else 5)
    strength = ["Strong", "Moderate", "Optional", "No Recommendation"].index(rec.classification) \
        if rec.classification else 4
    return tier, strength, _score(score), score.startswith("≥")


# --- stated scores beyond CPIC's exact keys --------------------------------------------------------

def _keys(gene):
    return {score for g, score in SCORE_PHENOTYPE if g == gene}


@pytest.mark.parametrize("gene", SCORE_GENES)
def test_a_stated_score_that_is_no_exact_key_reaches_the_tightest_at_least_key(engine, gene):
    keys = _keys(gene)
    at_least = {k for k in keys if k.startswith("≥")}
    exact = keys - at_least
    interp = engine.kb.interpreters[gene]
    top = max(_score(k) for k in keys)
    value = Decimal("0")
    while value <= top + 2:
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        got = interp.from_score(text)
        below = [k for k in at_least if _score(k) <= value]
        if any(_score(k) == value for k in exact):
            assert got.lookup == {gene: next(k for k in exact if _score(k) == value)}
        elif below:
            tightest = max(below, key=_score)
            assert got.lookup == {gene: tightest}, text
            assert got.phenotype == SCORE_PHENOTYPE[(gene, tightest)]
        else:
            assert got.indeterminate and got.lookup == {gene: "n/a"} and got.reason, text
        value += Decimal("0.25")
    for key in at_least:  # a score stated as CPIC spells a key is that key
        assert interp.from_score(key).lookup == {gene: key}


def test_cyp2d6_score_3_5_reaches_cpics_at_least_keys_for_every_drug(engine, kb):
    drugs = sorted({r["drugname"] for r in RECOMMENDATIONS if "CYP2D6" in r["lookup"]
                    and engine.drug_plan(r["drugname"]) is not None})
    assert "codeine" in drugs
    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2D6=score:3.5"]), drugs)
    for drug in evaluation.drugs:
        expected = {r["id"] for r in RECOMMENDATIONS if r["drugname"] == drug.drug
                    and r["lookup"].get("CYP2D6") == "≥3.5"
                    and all(v == NO_RESULT for g, v in r["lookup"].items() if g != "CYP2D6")}
        assert {m.recommendation.id.removeprefix("cpic-") for m in drug.matches} == expected, drug.drug
        assert expected, drug.drug
        # ≥3.0 (what the issue named) carries the same classification for every such drug
        same_30 = {(r["population"], r["classification"]) for r in RECOMMENDATIONS if r["drugname"] == drug.drug
                   and r["lookup"].get("CYP2D6") == "≥3.0"
                   and all(v == NO_RESULT for g, v in r["lookup"].items() if g != "CYP2D6")}
        assert {(m.recommendation.population, m.recommendation.classification) for m in drug.matches} == same_30


def test_a_score_no_cpic_values_add_up_to_is_indeterminate_and_says_why(engine):
    got = engine.kb.interpreters["CYP2D6"].from_score("2.6")
    assert got.indeterminate and "no sum of two CPIC CYP2D6 activity values" in got.reason
    got = engine.kb.interpreters["DPYD"].from_score("0.25")
    assert got.indeterminate and got.reason
