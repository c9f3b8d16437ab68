"""What laboratories and tools write, read as they mean it, by every face (issue 20 items 3 and 5).

Shapes and their sources:
- HLA typings with the locus letter, the HLA- prefix, 3/4-field and pre-2010 four-digit names: PharmCAT's
  outside-call test file (../shared/pharmcat/outside-calls-suballeles.tsv: `A*02:02:02/*03:02:01`,
  `*02:01/B*04:05`), PharmCAT's docs (docs/using/Outside-Call-Format.md: `HLA-B *07:02:01:127` is *07:02),
  the WHO HLA nomenclature (hla.alleles.org: `B*5701` before April 2010 is B*57:01).
- PharmCAT's outside-call conventions (the same docs page): phenotype abbreviations and British spelling,
  CYP2D6 copy numbers (`*1x3` → CPIC's `*1x≥3`, `xN` unknown), structural variants (`*36+*10`),
  combination calls (`[*2 + *3]`), suballeles (`*1.001/*2.034`, the outside-call file).
- Names CPIC's change log renamed or folded (../shared/cpic/v1.54/cpic_data_changelog.tsv).

Every expectation is read from the sources (CPIC's diplotype tables, the release's recommendations), and
each shape goes through the faces' one reader: `cds explain`'s parser (also the workbench's and rule tests')
and the decision core with FHIR (also the service's and screening's).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from cpic_sources import release_recommendations
from hla_sources import cpic_hla_alleles, dpwg_hla_alleles
from pgx_paths import CPIC, SHARED
from cds.decision import PatientCase, decide
from cds.errors import CdsError
from cds.explain import explain, parse_genotype_args
from cds.genotype import interpret_value
from cds.pipeline import Advisor

OUTSIDE_CALLS = SHARED / "pharmcat" / "outside-calls-suballeles.tsv"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def advisor(engine) -> Advisor:
    return Advisor.build(engine)


def _release_ids(drug: str, lookup: dict[str, str]) -> set[str]:
    return {f"cpic-{r['id']}" for r in release_recommendations() if r["drug"] == drug and r["lookup"] == lookup}


def _cpic_lookupkey(gene: str, diplotype: str) -> str:
    """CPIC's own lookup key for a diplotype (either allele order), from its diplotype table."""
    a, b = diplotype.split("/")
    rows = json.loads((CPIC / "genes" / f"{gene.replace('-', '_')}.json").read_text(encoding="utf-8"))["diplotypes"]
    (key,) = {r["lookupkey"] for r in rows if r["diplotype"] in (f"{a}/{b}", f"{b}/{a}")}
    return key


def _release_score(gene: str, diplotype: str) -> str:
    """The activity score of a diplotype from release 1.54's allele table (structural variants such as
    *36+*10 are release-only), spelt as CPIC keys it."""
    with (CPIC / "v1.54" / "cpic_alleles_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        values = {r["allele"]: r["activity_value"] for r in csv.DictReader(f, delimiter="\t") if r["gene"] == gene}
    total = sum(float(values[a]) for a in diplotype.split("/"))
    text = f"{total:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _observation(gene: str, value: str) -> dict:
    return {"resourceType": "Observation", "id": "lab-1", "status": "final", "code": {"text": f"{gene} genotype"},
            "subject": {"reference": "Patient/example"}, "effectiveDateTime": "2024-03-01", "valueString": value}


def _decide(advisor: Advisor, drug: str, genomics: list[dict]):
    plan = advisor.engine.drug_plan(drug)
    order = {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/example"},
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": plan.rxnorm, "display": drug}]}}
    return decide(advisor, PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=genomics,
                                       medications=[order]))


# --- item 3: HLA typing, one parser for every face ------------------------------------------------

POSITIVE_TYPINGS = ["B*57:01/*07:02", "HLA-B*57:01/HLA-B*07:02", "*57:01/*07:02", "B*57:01:01/B*07:02:01",
                    "HLA-B*57:01:01:02/*07:02", "B*5701/B*0702", "HLA-B *57:01/*07:02"]


@pytest.mark.parametrize("typing", POSITIVE_TYPINGS)
def test_an_hla_b_5701_typing_gets_cpics_positive_advice_whatever_its_spelling(engine, advisor, typing):
    expected = _release_ids("abacavir", {"HLA-B": "*57:01 positive"})
    assert expected
    typed = explain(engine, [f"HLA-B={typing}"], ["abacavir"])            # cds explain, the workbench, rule tests
    assert {m.recommendation.id for m in typed.drugs[0].matches} == expected
    advice = _decide(advisor, "abacavir", [_observation("HLA-B", typing)])  # the service and screening (FHIR)
    assert {s.recommendation.id for c in advice.cards for s in c.statements} == expected


def test_the_issues_command_line_answers_positive():
    out = subprocess.run([sys.executable, "-m", "cds.cli", "explain", "--genotype", "HLA-B=B*57:01/*07:02",
                          "--drug", "abacavir", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert "*57:01 positive" in got["phenotypes"]["HLA-B"]["lookup_key"].split("; ")
    assert {r["id"] for r in got["recommendations"]} == _release_ids("abacavir", {"HLA-B": "*57:01 positive"})


def test_an_hla_a_3101_typing_with_locus_letters_is_positive(engine):
    evaluation = explain(engine, ["HLA-A=A*31:01/A*02:01"], ["carbamazepine"])
    assert evaluation.interpretations["HLA-A"][0].lookup == {"HLA-A *31:01": "*31:01 positive"}
    ids = {m.recommendation.id for m in evaluation.drugs[0].matches}
    assert ids and all(_release_ids("carbamazepine", {"HLA-A": "*31:01 positive", "HLA-B": "No Result"}) >= {i}
                       for i in ids)


def test_pharmcats_outside_call_hla_lines_are_read_per_allele(engine):
    with OUTSIDE_CALLS.open(encoding="utf-8") as f:
        calls = {row[0]: row[1] for row in csv.reader(f, delimiter="\t")}
    hla_a = interpret_value(engine.kb.interpreters["HLA-A"], calls["HLA-A"])    # A*02:02:02/*03:02:01
    hla_b = interpret_value(engine.kb.interpreters["HLA-B"], calls["HLA-B"])    # *02:01/B*04:05
    assert hla_a.lookup == {"HLA-A *31:01": "*31:01 negative"}
    # every allele CPIC or DPWG keys HLA-B by (*15:11: DPWG's carbamazepine key) reads as negative
    alleles = cpic_hla_alleles("HLA-B") | dpwg_hla_alleles("HLA-B")
    assert alleles == {"*15:02", "*15:11", "*57:01", "*58:01"}
    assert hla_b.lookup == {f"HLA-B {a}": f"{a} negative" for a in alleles}


def test_a_typing_of_another_locus_is_not_read_as_negative(engine, advisor):
    got = interpret_value(engine.kb.interpreters["HLA-B"], "A*31:01/A*02:01")
    assert got.unreadable and got.lookup == {} and "names HLA-A, not HLA-B" in got.reason
    advice = _decide(advisor, "abacavir", [_observation("HLA-B", "A*31:01/A*02:01")])
    assert [c.rule_id for c in advice.cards] != [] and not any(s for c in advice.cards for s in c.statements)


# --- item 5: PharmCAT's outside-call conventions, in every face ---------------------------------

def test_pharmcats_outside_call_suballeles_are_their_core_alleles(engine, advisor):
    with OUTSIDE_CALLS.open(encoding="utf-8") as f:
        calls = {row[0]: row[1] for row in csv.reader(f, delimiter="\t")}
    assert calls["CYP2D6"] == "*1.001/*2.034"
    expected = _cpic_lookupkey("CYP2D6", "*1/*2")
    assert parse_genotype_args(engine, [f"CYP2D6={calls['CYP2D6']}"])["CYP2D6"][0].lookup == {"CYP2D6": expected}
    assert interpret_value(engine.kb.interpreters["CYP2D6"], "*45.002/*4.024").lookup == \
        {"CYP2D6": _cpic_lookupkey("CYP2D6", "*45/*4")}


@pytest.mark.parametrize("written,cpic", [
    ("*1x3/*4", "*1x≥3/*4"), ("*1x5/*1", "*1x≥3/*1"), ("*2x4/*9", "*2x≥3/*9"), ("*1x>=3/*4", "*1x≥3/*4"),
    ("*36 + *10/*1", "*36+*10/*1"), ("*68 + *4/*10", "*68+*4/*10"),
])
def test_copy_numbers_and_structural_variants_as_labs_write_them(engine, advisor, written, cpic):
    key = _cpic_lookupkey("CYP2D6", cpic) if "+" not in cpic else _release_score("CYP2D6", cpic)
    expected = {"CYP2D6": key}
    assert parse_genotype_args(engine, [f"CYP2D6={written}"])["CYP2D6"][0].lookup == expected
    advice = _decide(advisor, "codeine", [_observation("CYP2D6", written)])
    assert advice.facts.interpretations["CYP2D6"][0].lookup == expected


def test_an_unstated_copy_number_stands_for_each_copy_number_cpic_bins(engine):
    """*2xN/*1: CPIC's table has *2x2/*1 (3.0) and *2x≥3/*1 (≥4.0), both Ultrarapid: read as that phenotype,
    so the advice for each of its scores is shown; where the readings differ in phenotype, no key, and why."""
    got = interpret_value(engine.kb.interpreters["CYP2D6"], "*2xN/*1")
    phenotypes = {_cpic_lookupkey("CYP2D6", d) for d in ("*2x2/*1", "*2x≥3/*1")}
    assert len(phenotypes) == 2 and got.lookup == {"CYP2D6": "Ultrarapid Metabolizer"} and not got.unreadable
    evaluation = engine.evaluate({"CYP2D6": [got]}, ["codeine"])
    assert evaluation.drugs[0].matches and all(m.matched_by == "phenotype" for m in evaluation.drugs[0].matches)


def test_a_combination_call_is_indeterminate_with_that_reason_never_a_guess(engine, advisor):
    got = interpret_value(engine.kb.interpreters["CYP2D6"], "[*2 + *3]/*1")
    assert got.unreadable and "combination call" in got.reason
    advice = _decide(advisor, "codeine", [_observation("CYP2D6", "[*2 + *3]/*1")])
    assert [c.rule_id for c in advice.cards] == ["result-not-interpretable"]
    assert "combination call" in advice.cards[0].card["detail"]


@pytest.mark.parametrize("gene,written,term", [
    ("CYP2D6", "PM", "Poor Metabolizer"), ("CYP2D6", "IM", "Intermediate Metabolizer"),
    ("CYP2D6", "NM", "Normal Metabolizer"), ("CYP2D6", "UM", "Ultrarapid Metabolizer"),
    ("CYP2C19", "EM", "Normal Metabolizer"), ("CYP2C19", "RM", "Rapid Metabolizer"),
    ("CYP2C19", "Poor Metaboliser", "Poor Metabolizer"), ("CYP2C19", "extensive metabolizer", "Normal Metabolizer"),
    ("CYP2D6", "CYP2D6 Ultrarapid Metabolizers (UM)", "Ultrarapid Metabolizer"),
    ("CYP2C19", "likely poor metaboliser", "Likely Poor Metabolizer"),
])
def test_phenotype_abbreviations_and_spellings(engine, advisor, gene, written, term):
    assert term in engine.kb.interpreters[gene].phenotypes       # CPIC's own term, from its tables
    assert parse_genotype_args(engine, [f"{gene}={written}"])[gene][0].phenotype == term
    obs = _observation(gene, written)
    obs["code"]["text"] = f"{gene} predicted phenotype"
    advice = _decide(advisor, "clopidogrel" if gene == "CYP2C19" else "codeine", [obs])
    assert advice.facts.interpretations[gene][0].phenotype == term


def test_an_abbreviation_the_gene_has_no_term_for_is_refused(engine):
    with pytest.raises(CdsError):
        parse_genotype_args(engine, ["CYP2D6=RM"])       # CYP2D6 has no Rapid Metabolizer


@pytest.mark.parametrize("gene,former,current", [("NUDT15", "*2", "*3"), ("G6PD", "Telti/Kobe", "Telti, Kobe"),
                                                 ("MT-RNR1", "m.930A>G", "m.930G>A")])
def test_names_cpics_change_log_renamed_are_read_as_the_new_allele_citing_the_row(engine, gene, former, current):
    alias = engine.kb.genes[gene].aliases[former]
    assert alias.allele == current
    with (CPIC / "v1.54" / "cpic_data_changelog.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert any(" ".join((r["Note of Change"] or "").split()) in alias.source and r["Subject"] == gene
               and r["Date of Change"] in alias.source for r in rows)
    interpreter = engine.kb.interpreters[gene]
    if gene == "NUDT15":
        assert interpret_value(interpreter, "*1/*2").lookup == interpret_value(interpreter, "*1/*3").lookup
    else:
        assert interpret_value(interpreter, former).lookup == interpret_value(interpreter, current).lookup
