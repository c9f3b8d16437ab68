"""VKORC1 and CYP4F2, the warfarin genes: tables from CPIC release 1.54's allele table, and every spelling
laboratories use for VKORC1 rs9923231 read on the strand it names.

Strand (sources in guidelines/genes/VKORC1.yaml): CPIC names the alleles on the genomic reference's forward
strand, "rs9923231 reference (C)" / "variant (T)"; VKORC1 lies on the negative strand, so the same change is
-1639G>A on the gene's strand (PharmCAT: "An alternate name for rs9923231 is -1639G>A (note that VKORC1 is on
the negative chromosomal strand, so displayed alleles are complemented)"; DPWG: "rs9923231 CC genotype (-1639 GG
genotype)"). A VKORC1 result read on the wrong strand turns a C/C patient into -1639 AA.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cds.genotype import interpret_value

RELEASE = Path(__file__).resolve().parents[2] / ".." / "shared" / "cpic" / "v1.54" / "cpic_alleles_v1.54.tsv"

# (spelling, strand it names, DPWG key it must read as)
SPELLINGS = [
    ("rs9923231 C/C", "genomic", "-1639 GG"),
    ("rs9923231 C/T", "genomic", "-1639 AG"),
    ("rs9923231 T/C", "genomic", "-1639 AG"),
    ("rs9923231 T/T", "genomic", "-1639 AA"),
    ("rs9923231 TT", "genomic", "-1639 AA"),
    ("rs9923231 CT", "genomic", "-1639 AG"),
    ("rs9923231 CC", "genomic", "-1639 GG"),
    ("VKORC1 rs9923231 T/T", "genomic", "-1639 AA"),
    ("rs9923231 G/A", "gene", "-1639 AG"),        # rsID with gene-strand letters: G/A exist on that strand only
    ("rs9923231 AA", "gene", "-1639 AA"),
    ("-1639 G/A", "gene", "-1639 AG"),
    ("-1639 A/G", "gene", "-1639 AG"),
    ("-1639GA", "gene", "-1639 AG"),
    ("-1639 GG", "gene", "-1639 GG"),
    ("-1639 AA", "gene", "-1639 AA"),
    ("VKORC1 -1639 AA", "gene", "-1639 AA"),
    ("c.-1639G>A heterozygous", "gene", "-1639 AG"),
    ("c.-1639G>A homozygous", "gene", "-1639 AA"),
    ("c.-1639G>A (heterozygous)", "gene", "-1639 AG"),
    ("-1639G>A homozygous", "gene", "-1639 AA"),
    ("rs9923231 C>T heterozygous", "genomic", "-1639 AG"),
    ("3673 GG", "gene", "-1639 GG"),
    ("rs9923231 heterozygous", "either", "-1639 AG"),
    ("rs9923231 homozygous variant", "either", "-1639 AA"),
    ("rs9923231 reference (C)/rs9923231 variant (T)", "CPIC allele names", "-1639 AG"),   # PharmCAT's label
    ("rs9923231 variant (T)/rs9923231 variant (T)", "CPIC allele names", "-1639 AA"),
]

# spellings that must not be read at all (no guessed strand, no other variant, no missing zygosity)
REFUSED = [
    ("-1639 C/T", "the gene strand names it"),        # -1639 is the gene strand; C/T are genomic bases
    ("-1639 TT", "the gene strand names it"),
    ("rs9923231 C/A", "not a rs9923231 genotype on one strand"),
    ("c.-1639C>T heterozygous", "the gene strand names it"),
    ("rs9923231 G>T heterozygous", "not a rs9923231 genotype on one strand"),
    ("c.-1639G>A", "not the zygosity"),
    ("rs9923231 homozygous", "without saying for which allele"),
    ("rs9934438 C/T", "does not name rs9923231"),      # 1173C>T, in linkage but another variant
    ("-16390 GG", "does not name rs9923231"),
    ("rs9923231", "no genotype"),
]


def test_tables_hold_exactly_the_release_alleles_without_functions(kb):
    with RELEASE.open(encoding="utf-8", newline="") as f:
        release = [r for r in csv.DictReader(f, delimiter="\t") if r["gene"] in ("VKORC1", "CYP4F2")]
    for gene in ("VKORC1", "CYP4F2"):
        names = {r["allele"] for r in release if r["gene"] == gene}
        assert set(kb.genes[gene].alleles) == names
        # the release assigns none, and neither do we
        assert all(not r["clinical_functional_status"] for r in release if r["gene"] == gene)
        assert all(a.function is None for a in kb.genes[gene].alleles.values())
        assert kb.genes[gene].kind == "genotype"


@pytest.mark.parametrize("spelling,strand,key", SPELLINGS)
def test_every_spelling_reads_on_its_own_strand(kb, spelling, strand, key):
    result = interpret_value(kb.interpreters["VKORC1"], spelling)
    assert not result.indeterminate, result.reason
    assert result.lookup == {"VKORC1": key}, strand
    # the diplotype is CPIC's: C on the genomic reference is G on the gene strand, T is A
    expected = {"-1639 GG": "rs9923231 reference (C)/rs9923231 reference (C)",
                "-1639 AG": "rs9923231 reference (C)/rs9923231 variant (T)",
                "-1639 AA": "rs9923231 variant (T)/rs9923231 variant (T)"}[key]
    assert result.diplotype == expected


@pytest.mark.parametrize("spelling,why", REFUSED)
def test_spellings_that_disagree_about_the_strand_are_refused(kb, spelling, why):
    result = interpret_value(kb.interpreters["VKORC1"], spelling)
    assert result.indeterminate and why in (result.reason or ""), result.reason


def test_keys_are_dpwgs_and_pharmcats(kb):
    """C/C reads as -1639 GG, as PharmCAT's example report (rs9923231 call C/C → lookup key -1639 GG) and
    DPWG ('rs9923231 CC genotype (-1639 GG genotype)') say."""
    import json

    report = json.loads((RELEASE.parents[2] / "pharmcat" / "pharmcat.example.report.json").read_text(encoding="utf-8"))
    vkorc1 = report["genes"]["VKORC1"]
    call = vkorc1["variants"][0]
    assert call["dbSnpId"] == "rs9923231"
    ours = interpret_value(kb.interpreters["VKORC1"], f"rs9923231 {call['call']}")
    assert ours.lookup["VKORC1"] == vkorc1["recommendationDiplotypes"][0]["lookupKey"][0]
    assert ours.diplotype == vkorc1["recommendationDiplotypes"][0]["label"]


def test_cyp4f2_reads_pairs_in_table_order_and_refuses_unknown_alleles(kb):
    interp = kb.interpreters["CYP4F2"]
    assert interpret_value(interp, "*3/*1").lookup == {"CYP4F2": "*1/*3"}
    assert interpret_value(interp, "CYP4F2 *3/*3").phenotype == "*3/*3"
    unknown = interpret_value(interp, "*1/*99")
    assert unknown.indeterminate and "*99 is not in the CYP4F2 table" in unknown.reason
    assert interpret_value(interp, "*3").indeterminate


def test_the_genomics_reporting_ig_vkorc1_example_reads_as_minus_1639_ag(engine):
    """HL7 Genomics Reporting IG STU3's Observation-Pgx-geno-1003 states VKORC1 'rs9923231 C/T' (genomic
    strand): one variant allele, DPWG's -1639 AG."""
    import json

    from cds.pipeline import patient_facts

    example = RELEASE.parents[2] / "fhir-examples" / "HL7_genomics-reporting" / "STU3-3.0.0-published" / \
        "Observation-Pgx-geno-1003.json"
    facts = patient_facts(engine, [json.loads(example.read_text(encoding="utf-8"))])
    (vkorc1,) = facts.interpretations["VKORC1"]
    assert vkorc1.lookup == {"VKORC1": "-1639 AG"}
    assert vkorc1.diplotype == "rs9923231 reference (C)/rs9923231 variant (T)"
