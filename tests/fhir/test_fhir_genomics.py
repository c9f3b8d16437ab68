"""Reading genomic results in each shape: IG genotype STU1–3, haplotype pairs, therapeutic implications,
DiagnosticReport (referenced and contained results) and Bundles, laboratory-style text Observations,
HLA as CodeableConcept/string/boolean, and malformed input. Fixture provenance:
tests/fixtures/fhir/README.md."""
from __future__ import annotations

import copy
import logging
from datetime import datetime, timezone

import pytest
from fhir_fixtures import load

from cds.errors import KnowledgeError
from cds.fhir import load_mappings, read_genomic_results
from cds.fhir.mappings import DEFAULT_PATH

LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org"


def one(reading):
    assert not reading.skipped, reading.skipped
    assert len(reading.results) == 1, reading.results
    return reading.results[0]


def genotype(value: dict, gene=("HGNC:2621", "CYP2C19"), oid="g1", **extra) -> dict:
    """An IG STU3 genotype Observation in the shape of Observation-Pgx-geno-1001 with another value."""
    obs = load("shared/ig-stu3/Observation-Pgx-geno-1001.json")
    obs.pop("derivedFrom")
    obs["id"] = oid
    for key in [k for k in obs if k.startswith("value")]:
        del obs[key]
    obs.update(value)
    obs["component"][0]["valueCodeableConcept"]["coding"][0].update(code=gene[0], display=gene[1])
    obs.update(extra)
    return obs


# --- HL7 Genomics Reporting IG -------------------------------------------------------------------------

def test_stu3_genotype_diplotype_from_clinvar_display():
    r = one(read_genomic_results(load("shared/ig-stu3/Observation-Pgx-geno-1001.json")))
    assert (r.gene, r.diplotype, r.phenotype) == ("CYP2C19", "*2/*2", None)
    assert r.source_id == "Observation/Pgx-geno-1001"
    assert r.status == "final"
    assert r.effective == datetime(2019, 4, 1, tzinfo=timezone.utc)
    assert r.text == "CYP2C19*2/*2"


@pytest.mark.parametrize("written,read", [
    ("CYP2C19*1/CYP2C19*2", "*1/*2"),        # PharmVar style
    ("CYP2C19 *1/*2", "*1/*2"),
    ("CYP2C19_*1/*17", "*1/*17"),
    ("*2/*1", "*2/*1"),                      # order kept; selection compares order-free
    ("cyp2c19*1/*2", "*1/*2"),
    ("CYP2C19*1 / CYP2C19*2", "*1/*2"),
    ("CYP2C19*1.001/CYP2C19*2.002", "*1/*2"),  # PharmVar suballeles → core alleles
])
def test_diplotype_gene_prefixes_removed(written, read):
    r = one(read_genomic_results(genotype({"valueCodeableConcept": {"text": written}})))
    assert r.diplotype == read
    assert r.text == written


def test_stu2_gene_as_geneId_system_and_pharmvar_text():
    obs = load("shared/ig-stu3/Observation-GenotypeExamplePharmVar.json")
    obs["component"][0]["valueCodeableConcept"]["coding"][0]["system"] = "http://www.genenames.org/geneId"
    r = one(read_genomic_results(obs))
    assert (r.gene, r.diplotype, r.text) == ("CYP2D6", "*7/*1", "CYP2D6*7.001 / CYP2D6*1.001")


def test_stu1_bundle_bare_hgnc_number_haplotype_pair_and_53040_2_component():
    reading = read_genomic_results(load("shared/ig-stu1/Bundle-diagnosticreport-pgxexample.json"))
    # the variant calls under the haplotypes are not read on their own, and say so (issue 20 item 8)
    assert [s.split(":")[0] for s in reading.skipped] == ["Observation/variant-1-pgx-example (CYP2C9)",
                                                           "Observation/variant-2-pgx-example (CYP2C9)"]
    assert reading.unreadable == []
    got = {(r.source_id, r.diplotype, r.phenotype) for r in reading.results}
    assert got == {
        ("Observation/genotype-pgx-example", "*4/*35B", None),
        ("Observation/haplotype-1-pgx-example+Observation/haplotype-2-pgx-example", "*35B/*4", None),
        ("Observation/med-impact-pgx-example", None, "Rapid Metabolizer"),
    }
    assert {r.gene for r in reading.results} == {"CYP2C9"}   # gene coded as bare "2623"


def test_haplotypes_paired_through_their_genotype():
    reading = read_genomic_results([load("shared/ig-stu3/Observation-GenotypeExamplePharmVar.json"),
                                    load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar01.json"),
                                    load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar02.json")])
    pair = [r for r in reading.results if "+" in r.source_id]
    assert len(pair) == 1 and pair[0].diplotype == "*7/*1" and pair[0].gene == "CYP2D6"
    assert pair[0].text == "CYP2D6*7.001 + CYP2D6*1.001"


def test_haplotypes_paired_by_their_report():
    h1 = load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar01.json")
    h2 = load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar02.json")
    report = {"resourceType": "DiagnosticReport", "id": "r", "status": "final", "code": {"text": "PGx"},
              "result": [{"reference": "Observation/HaplotypeExamplePharmVar01"},
                         {"reference": "Observation/HaplotypeExamplePharmVar02"}]}
    r = one(read_genomic_results([report, h1, h2]))
    assert r.diplotype == "*7/*1"


def test_haplotypes_without_report_or_genotype_are_not_paired():
    reading = read_genomic_results([load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar01.json"),
                                    load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar02.json")])
    assert reading.results == []
    assert len(reading.skipped) == 2 and all("not paired" in s for s in reading.skipped)


def test_three_haplotypes_of_one_gene_in_a_report_are_not_paired():
    h1 = load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar01.json")
    h2 = load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar02.json")
    h3 = copy.deepcopy(h2)
    h3["id"] = "third"
    report = {"resourceType": "DiagnosticReport", "id": "r", "status": "final", "code": {"text": "PGx"},
              "result": [{"reference": f"Observation/{h['id']}"} for h in (h1, h2, h3)]}
    reading = read_genomic_results([report, h1, h2, h3])
    assert reading.results == []
    assert all("report has 3 CYP2D6 haplotypes" in s for s in reading.skipped)


@pytest.mark.parametrize("state,code,expected", [
    ("homozygous", "LA6705-3", "*7/*7"),
    ("hemizygous", None, "*7"),
])
def test_haplotype_with_allelic_state_stands_alone(state, code, expected):
    h = load("shared/ig-stu3/Observation-HaplotypeExamplePharmVar01.json")
    answer = {"coding": [{"system": LOINC, "code": code, "display": state}]} if code else {"text": state}
    h["component"].append({"code": {"coding": [{"system": LOINC, "code": "53034-5"}]}, "valueCodeableConcept": answer})
    r = one(read_genomic_results(h))
    assert r.diplotype == expected and r.source_id == "Observation/HaplotypeExamplePharmVar01"


def test_stu3_therapeutic_implication_gets_gene_from_its_genotype():
    reading = read_genomic_results([load("shared/ig-stu3/Observation-TxImp01.json"),
                                    load("shared/ig-stu3/Observation-Pgx-geno-1001.json")])
    tx = [r for r in reading.results if r.source_id == "Observation/TxImp01"]
    assert len(tx) == 1
    assert (tx[0].gene, tx[0].phenotype, tx[0].diplotype, tx[0].text) == ("CYP2C19", "Poor Metabolizer", None, "Poor metabolizer")


def test_stu2_predicted_therapeutic_implication_dated_by_its_report():
    tx = load("shared/ig-stu2/Observation-TxImp01.json")        # no effective[x], no issued
    geno = load("shared/ig-stu3/Observation-Pgx-geno-1001.json")
    report = {"resourceType": "DiagnosticReport", "id": "emerge", "status": "final", "code": {"text": "PGx"},
              "effectiveDateTime": "2020-01-01T00:00:00-05:00",
              "result": [{"reference": "Observation/TxImp01"}, {"reference": "Observation/Pgx-geno-1001"}]}
    reading = read_genomic_results({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": x} for x in (report, tx, geno)]})
    r = next(r for r in reading.results if r.source_id == "Observation/TxImp01")
    assert r.phenotype == "Poor Metabolizer"
    assert r.effective == datetime.fromisoformat("2020-01-01T00:00:00-05:00")


def test_therapeutic_implication_alone_is_skipped():
    reading = read_genomic_results(load("shared/ig-stu3/Observation-TxImp01.json"))
    assert reading.results == []
    assert reading.skipped == ["Observation/TxImp01: no gene stated and the results it is derived from are not all available"]


def test_therapeutic_implication_of_two_genes_is_not_attributed():
    tx = load("shared/ig-stu3/Observation-TxImp01.json")
    tx["derivedFrom"] = [{"reference": "Observation/a"}, {"reference": "Observation/b"}]
    a = genotype({"valueCodeableConcept": {"text": "*1/*1"}}, oid="a")
    b = genotype({"valueCodeableConcept": {"text": "*1/*1"}}, gene=("HGNC:2625", "CYP2D6"), oid="b")
    reading = read_genomic_results([tx, a, b])
    assert [r.source_id for r in reading.results] == ["Observation/a", "Observation/b"]
    assert reading.skipped == ["Observation/TxImp01: derived from results for several genes (CYP2C19, CYP2D6); "
                               "the phenotype cannot be attributed"]


@pytest.mark.parametrize("answer,term", [
    ("LA10315-2", "Ultrarapid Metabolizer"), ("LA25390-8", "Rapid Metabolizer"), ("LA25391-6", "Normal Metabolizer"),
    ("LA10317-8", "Intermediate Metabolizer"), ("LA9657-3", "Poor Metabolizer"), ("LA25392-4", "Increased Function"),
    ("LA25393-2", "Normal Function"), ("LA25395-7", "Decreased Function"), ("LA25394-0", "Poor Function"),
])
def test_loinc_answers_become_cpic_terms(answer, term):
    obs = load("shared/R4-core/observation-example-phenotype.json")
    obs["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": answer}]}   # no display: the code decides
    assert one(read_genomic_results(obs)).phenotype == term


@pytest.mark.parametrize("answer", ["LA19541-4", "LA19542-2"])
def test_risk_answers_are_not_phenotypes(answer):
    obs = load("shared/R4-core/observation-example-phenotype.json")
    obs["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": answer}]}
    reading = read_genomic_results(obs)
    assert reading.results == [] and f"answer {answer} is not a CPIC phenotype" in reading.skipped[0]


def test_phenotype_code_and_display_that_disagree_are_skipped():
    obs = load("shared/R4-core/observation-example-phenotype.json")
    obs["valueCodeableConcept"]["coding"][0]["display"] = "Poor metabolizer"     # code LA25391-6 is normal
    reading = read_genomic_results(obs)
    assert reading.results == [] and "disagree about the phenotype" in reading.skipped[0]


def test_stu1_phenotype_as_observation_code_53040_2():
    obs = load("shared/R4-core/observation-example-phenotype.json")
    obs["code"] = {"coding": [{"system": LOINC, "code": "53040-2"}]}
    r = one(read_genomic_results(obs))
    assert (r.gene, r.phenotype) == ("CYP2C9", "Normal Metabolizer")


def test_r4_core_gene_extension_and_snomed_genotype():
    r = one(read_genomic_results(load("shared/R4-core/observation-example-TPMT-diplotype.json")))
    assert (r.gene, r.diplotype, r.source_id) == ("TPMT", "*1/*4", "Observation/example-TPMT-diplotype")
    assert r.effective == datetime.fromisoformat("2013-04-03T15:30:10+01:00")   # issued, no effective[x]


def test_diagnostic_report_with_contained_results():
    reading = read_genomic_results(load("built/diagnosticreport-contained-cyp2c19.json"))
    assert not reading.skipped
    got = {(r.source_id, r.diplotype, r.phenotype, r.effective) for r in reading.results}
    day = datetime(2022, 5, 10, tzinfo=timezone.utc)      # the report's date: the results carry none
    assert got == {("DiagnosticReport/contained-pgx-report#geno", "*2/*2", None, day),
                   ("DiagnosticReport/contained-pgx-report#tximp", None, "Poor Metabolizer", day)}


def test_searchset_with_absolute_full_urls_and_relative_references():
    geno = load("shared/ig-stu3/Observation-Pgx-geno-1001.json")
    tx = load("shared/ig-stu3/Observation-TxImp01.json")
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "https://ehr.example/fhir/Observation/TxImp01", "resource": tx, "search": {"mode": "match"}},
        {"fullUrl": "https://ehr.example/fhir/Observation/Pgx-geno-1001", "resource": geno, "search": {"mode": "match"}},
        {"search": {"mode": "outcome"}}]}
    prefetch = {"pgxObservations": bundle}
    reading = read_genomic_results([prefetch["pgxObservations"]])
    assert {(r.source_id, r.gene) for r in reading.results} == {("Observation/TxImp01", "CYP2C19"),
                                                                ("Observation/Pgx-geno-1001", "CYP2C19")}


def test_same_ids_in_two_bundles_resolve_inside_their_own_bundle():
    """Both STU1 example bundles hold an `Observation/genotype-pgx-example` (HLA-B in one, CYP2C9 in
    the other): the therapeutic implication must take its gene from its own bundle's genotype."""
    first = load("shared/ig-stu3/Bundle-bundle-pgxexample.json")
    second = load("shared/ig-stu1/Bundle-diagnosticreport-pgxexample.json")
    hla = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "http://example.org/fhir/Observation/genotype-pgx-example",
         "resource": genotype({"valueCodeableConcept": {"text": "HLA-B*15:02"}}, gene=("HGNC:4932", "HLA-B"),
                              oid="genotype-pgx-example")}]}
    reading = read_genomic_results([hla, first, second])
    tx = [r for r in reading.results if r.source_id == "Observation/med-impact-pgx-example"]
    assert [r.gene for r in tx] == ["CYP2C9", "CYP2C9"]


# --- laboratory-style Observations -------------------------------------------------------------------

def test_lab_genotype_named_in_code_text():
    r = one(read_genomic_results(load("built/lab-cyp2c19-genotype-text.json")))
    assert (r.gene, r.diplotype, r.text) == ("CYP2C19", "*2/*2", "CYP2C19 *2/*2")
    assert r.effective == datetime(2024, 3, 1, tzinfo=timezone.utc)    # effective wins over issued


def test_lab_phenotype_named_in_code_text():
    r = one(read_genomic_results(load("built/lab-cyp2c19-phenotype-text.json")))
    assert (r.gene, r.phenotype, r.diplotype) == ("CYP2C19", "Poor Metabolizer", None)


@pytest.mark.parametrize("text,term", [
    ("poor metabolizer", "Poor Metabolizer"),
    ("CYP2C19: Intermediate Metabolizer", "Intermediate Metabolizer"),
    ("CYP2C19 ultrarapid   metabolizer", "Ultrarapid Metabolizer"),
    ("Likely poor metabolizer", "Likely Poor Metabolizer"),
])
def test_lab_phenotype_spellings(text, term):
    obs = load("built/lab-cyp2c19-phenotype-text.json")
    obs["valueCodeableConcept"] = {"text": text}
    assert one(read_genomic_results(obs)).phenotype == term


def test_lab_text_that_is_neither_diplotype_nor_phenotype_is_skipped():
    obs = load("built/lab-cyp2c19-phenotype-text.json")
    obs["valueCodeableConcept"] = {"text": "see scanned report"}
    reading = read_genomic_results(obs)
    assert reading.results == []
    assert "not a diplotype, a CPIC phenotype term or an allele status" in reading.skipped[0]
    assert "scanned" not in reading.skipped[0]          # reasons never repeat the value


def test_lab_code_naming_two_genes_is_skipped():
    obs = load("built/lab-cyp2c19-genotype-text.json")
    obs["code"] = {"text": "CYP2C9 and VKORC1 genotype"}
    reading = read_genomic_results(obs)
    assert reading.results == [] and "names several genes (CYP2C9, VKORC1)" in reading.skipped[0]


def test_observations_that_are_not_pharmacogenomic_are_passed_over_and_a_lone_variant_call_is_said():
    vitals = {"resourceType": "Observation", "id": "bp", "status": "final",
              "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
              "valueString": "120/80"}
    variant = next(e["resource"] for e in load("shared/ig-stu1/Bundle-diagnosticreport-pgxexample.json")["entry"]
                   if e["resource"]["id"] == "variant-1-pgx-example")
    assert variant["code"]["coding"][0]["code"] == "69548-6"       # has a gene-studied component
    reading = read_genomic_results([vitals, variant])
    # a variant call alone is no result the reader reads, but it is a CYP2C9 result on file: said (issue 20
    # item 8), never passed over in silence; the blood pressure is not genomic and is passed over
    assert reading.results == [] and len(reading.skipped) == 1
    assert reading.skipped[0].startswith("Observation/variant-1-pgx-example (CYP2C9): 69548-6")
    assert [(u.gene, u.effective) for u in reading.unreadable] == [("CYP2C9", None)]


@pytest.mark.parametrize("fixture,present,text", [
    ("built/lab-hla-b-5701-concept.json", True, "Positive"),       # LOINC LA6576-8
    ("built/lab-hla-b-5701-string.json", False, "Not detected"),
    ("built/lab-hla-b-5701-boolean.json", True, "true"),
    ("built/lab-hla-b-typing-status-text.json", False, "HLA-B*57:01 negative"),
])
def test_hla_allele_results(fixture, present, text):
    r = one(read_genomic_results(load(fixture)))
    assert (r.gene, r.allele, r.allele_present, r.diplotype, r.text) == ("HLA-B", "*57:01", present, None, text)


def test_hla_lab_code_from_mappings():
    """LOINC 57979-7 "HLA-B*15:02 [Presence]" is listed in guidelines/fhir-mappings.yaml."""
    obs = load("built/lab-hla-b-5701-concept.json")
    obs["code"] = {"coding": [{"system": LOINC, "code": "57979-7"}]}
    r = one(read_genomic_results(obs))
    assert (r.gene, r.allele, r.allele_present) == ("HLA-B", "*15:02", True)


def test_hla_value_naming_another_allele_than_the_code_is_skipped():
    obs = load("built/lab-hla-b-5701-string.json")
    obs["valueString"] = "HLA-B*58:01 positive"
    reading = read_genomic_results(obs)
    assert reading.results == [] and "the code names *57:01" in reading.skipped[0]


def test_hla_genotype_single_allele_means_present():
    r = one(read_genomic_results(load("shared/ig-stu3/Observation-GenotypeExample1.json")))
    assert (r.gene, r.allele, r.allele_present, r.text) == ("HLA-B", "*15:02", True, "HLA-B*15:02")


def test_hla_typing_from_gl_string():
    r = one(read_genomic_results(load("shared/ig-stu3/Observation-genotype-hla-a-glstring-r4.json")))
    assert (r.gene, r.diplotype) == ("HLA-A", "*03:01:01:01/*30:01:01")


@pytest.mark.parametrize("gl", ["hla#3.33.0#HLA-A*02:69+HLA-A*23:30|HLA-A*02:302+HLA-A*23:26",
                                "hla#3.33.0#HLA-A*02:69/HLA-A*02:70+HLA-A*23:30"])
def test_ambiguous_gl_strings_are_not_read(gl):
    obs = load("shared/ig-stu3/Observation-genotype-hla-a-glstring-r4.json")
    obs["valueCodeableConcept"]["coding"][0]["code"] = gl
    reading = read_genomic_results(obs)
    assert reading.results == [] and "GL string is ambiguous" in reading.skipped[0]


def test_hla_typing_as_text():
    obs = genotype({"valueString": "HLA-B*57:01/HLA-B*08:01"}, gene=("HGNC:4932", "HLA-B"))
    assert one(read_genomic_results(obs)).diplotype == "*57:01/*08:01"


# --- genes ----------------------------------------------------------------------------------------------

def test_unknown_gene_code_with_known_symbol_is_read_with_a_warning():
    obs = genotype({"valueCodeableConcept": {"text": "*1/*2"}}, gene=("HGNC:262", "CYP2C19"))  # as in Pgx-var-1011
    reading = read_genomic_results(obs)
    assert one(reading).gene == "CYP2C19"
    assert reading.warnings == ["Observation/g1: gene code HGNC:262 is not a known HGNC id of CYP2C19; gene read from its display"]


def test_gene_code_and_display_that_disagree_are_skipped():
    obs = genotype({"valueCodeableConcept": {"text": "*1/*2"}}, gene=("HGNC:2621", "CYP2D6"))
    reading = read_genomic_results(obs)
    assert reading.results == [] and "gene coded as CYP2C19 but displayed as CYP2D6" in reading.skipped[0]


def test_dpyd_uses_the_corrected_hgnc_id():
    """HGNC:3012 is DPYD (../shared/cpic/README.md erratum); 1806 (CPIC's old value) is not read as DPYD."""
    r = one(read_genomic_results(genotype({"valueString": "c.1905+1G>A/Reference"}, gene=("HGNC:3012", None))))
    assert (r.gene, r.diplotype) == ("DPYD", "c.1905+1G>A/Reference")
    reading = read_genomic_results(genotype({"valueString": "*1/*2"}, gene=("HGNC:1806", None)))
    assert reading.results == [] and "HGNC:1806 is not one the reader knows" in reading.skipped[0]


def test_value_naming_another_gene_is_skipped():
    reading = read_genomic_results(genotype({"valueString": "CYP2D6*1/*4"}))
    assert reading.results == [] and "names CYP2D6, not CYP2C19" in reading.skipped[0]
    assert "*4" not in reading.skipped[0]


# --- robustness -------------------------------------------------------------------------------------

def test_malformed_bundle_reads_what_it_can(caplog):
    caplog.set_level(logging.WARNING, logger="cds.fhir")
    reading = read_genomic_results(load("built/malformed-bundle.json"))
    assert {(r.source_id, r.gene, r.diplotype) for r in reading.results} == {
        ("Observation/good", "CYP2C9", "*1/*3"),
        ("Observation/coding-not-a-list", "CYP2C19", "*1/*17"),   # read from the JSON despite the shape
        ("Observation/bad-date", "TPMT", "*1/*3A"),
    }
    assert next(r for r in reading.results if r.source_id == "Observation/bad-date").effective is None
    skipped = "\n".join(reading.skipped)
    for expected in ["entry 0: not a JSON object", "entry 1: no resourceType",
                     "Observation/code-is-a-string: code is missing or not a CodeableConcept",
                     "Observation/gene-is-a-string: gene-studied component has no gene code or symbol",
                     "Observation/gene-unknown: gene-studied component: gene HGNC:588 is not one the reader knows",
                     "Observation/value-quantity (CYP2D6 genotype): no genotype value",
                     "Observation/value-names-other-gene (CYP2C19 genotype): names CYP2D6",
                     "Observation/lonely-haplotype (CYP2D6 haplotype): not paired"]:
        assert expected in skipped
    assert len(reading.skipped) == 8
    assert "also not valid FHIR R4" in next(s for s in reading.skipped if "gene-is-a-string" in s)
    assert len([r for r in caplog.records if r.getMessage().startswith("skipped genomic resource")]) == 8


def test_validate_reports_resources_read_despite_r4_faults():
    reading = read_genomic_results(load("built/malformed-bundle.json"), validate=True)
    warned = "\n".join(reading.warnings)
    assert "Observation/coding-not-a-list does not validate as FHIR R4 (code.coding: Input should be a valid list" in warned
    assert "Observation/bad-date does not validate as FHIR R4 (effectiveDateTime" in warned
    assert "Observation/good" not in warned
    assert "gene-is-a-string" not in warned       # skipped: its reason already says so


@pytest.mark.parametrize("value", ["not fhir", 42, None])
def test_input_that_is_not_resources(value):
    reading = read_genomic_results(value)
    assert reading.results == [] and len(reading.skipped) == 1


def test_nested_bundles_and_lists():
    inner = {"resourceType": "Bundle", "type": "searchset",
             "entry": [{"resource": load("shared/ig-stu3/Observation-Pgx-geno-1001.json")}]}
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    assert one(read_genomic_results([outer])).diplotype == "*2/*2"


def test_a_reader_bug_on_one_resource_does_not_sink_the_rest(monkeypatch):
    from cds.fhir.genomics import GenomicReader

    original = GenomicReader._genotype_value

    def broken(self, obs, gene):
        if obs.rid == "Observation/g1":
            raise RuntimeError("boom")
        return original(self, obs, gene)

    monkeypatch.setattr(GenomicReader, "_genotype_value", broken)
    reading = read_genomic_results([genotype({"valueString": "*1/*2"}, oid="g1"),
                                    genotype({"valueString": "*1/*1"}, oid="g2")])
    assert [r.source_id for r in reading.results] == ["Observation/g2"]
    assert reading.skipped == ["Observation/g1: could not be read (internal error, see log)"]


# --- the mappings file ----------------------------------------------------------------------------------

def test_a_site_adds_its_lab_codes(tmp_path):
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    text = text.replace("lab_codes:\n", "lab_codes:\n"
                        "  - {system: 'http://acme-lab.example/codes', code: DPYD-AS, gene: DPYD, states: activity-score,\n"
                        "     display: DPYD activity score, source: acme-lab}\n"
                        "  - {system: 'http://acme-lab.example/codes', code: C19-PT, gene: CYP2C19, states: phenotype,\n"
                        "     source: acme-lab}\n", 1)
    text = text.replace("sources:\n", "sources:\n  acme-lab:\n    title: ACME laboratory interface specification v3\n", 1)
    text = text.replace("phenotype_synonyms: []", "phenotype_synonyms:\n"
                        "  - {text: PM, phenotype: Poor Metabolizer, source: acme-lab}")
    path = tmp_path / "fhir-mappings.yaml"
    path.write_text(text, encoding="utf-8")
    mappings = load_mappings(path)
    score = {"resourceType": "Observation", "id": "as", "status": "final",
             "code": {"coding": [{"system": "http://acme-lab.example/codes", "code": "DPYD-AS"}]},
             "valueQuantity": {"value": 1.0}}
    phenotype = {"resourceType": "Observation", "id": "pt", "status": "final",
                 "code": {"coding": [{"system": "http://acme-lab.example/codes", "code": "C19-PT"}]}, "valueString": "PM"}
    reading = read_genomic_results([score, phenotype], mappings)
    assert {(r.gene, r.activity_score, r.phenotype) for r in reading.results} == {
        ("DPYD", "1.0", None), ("CYP2C19", None, "Poor Metabolizer")}
    # the project's own mappings know neither code
    assert read_genomic_results([score, phenotype]).results == []


@pytest.mark.parametrize("change,message", [
    (("source: r4-core}", "source: nowhere}"), "source 'nowhere' is not defined under `sources`"),
    (("CYP2C19: {hgnc: 'HGNC:2621'", "CYP2C19: {hgnc: '2621'"), "'2621' is not an HGNC id"),
    (("phenotype: Poor Metabolizer, source", "phenotype: Slow Metabolizer, source"), "'Slow Metabolizer' is not one of `phenotype_terms`"),
    (("gene: CYP2C9, states: phenotype", "gene: CYP9Z9, states: phenotype"), "gene 'CYP9Z9' is not listed under `genes`"),
    (("rxnorm_systems:", "rxnorm_system:"), "unknown field 'rxnorm_system'"),
])
def test_mapping_faults_name_file_and_line(tmp_path, change, message):
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    assert change[0] in text
    path = tmp_path / "fhir-mappings.yaml"
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_mappings(path)
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if change[1] in l)
    assert any(d.line == line and message in d.message for d in err.value.diagnostics), str(err.value)


def test_the_advisors_reader_is_built_once_and_its_readings_equal_a_fresh_readers(engine) -> None:
    """The Advisor owns one reader (no module global), so the diplotype texts it has parsed
    (knowledge-level: the text and the gene) are parsed once for its life; a reader that remembers
    nothing reads the same result from the same Observation."""
    from cds.fhir.genomics import GenomicReader
    from cds.fhir.mappings import default_mappings
    from cds.pipeline import Advisor, patient_facts

    observations = [genotype({"valueCodeableConcept": {"text": text}}, oid=f"g{i}")
                    for i, text in enumerate(["*2/*17", "*1/*2", "*2/*2 (Poor Metabolizer)"])]
    advisor = Advisor.build(engine)
    shared = advisor.reader
    first = [shared.read([o]) for o in observations]
    patient_facts(engine, observations, reader=advisor.reader)
    assert advisor.reader is shared
    remembered = len(shared._diplotype_texts)
    assert remembered >= 3                                       # it did remember, across calls
    again = [shared.read([o]) for o in observations]
    assert len(shared._diplotype_texts) == remembered            # nothing parsed twice
    fresh = [GenomicReader(default_mappings()).read([o]) for o in observations]
    assert [r.results for r in first] == [r.results for r in again] == [r.results for r in fresh]
    assert [one(r).diplotype for r in first[:2]] == ["*2/*17", "*1/*2"]
    assert {(r.diplotype, r.phenotype) for r in first[2].results} >= {("*2/*2", None)}
