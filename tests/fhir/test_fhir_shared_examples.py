"""Acceptance: every genotype, haplotype and therapeutic-implication example in ../shared/fhir-examples
is read into the gene and the diplotype, phenotype or allele status it states.

EXPECTED was written by reading each file (not by running the reader). The test finds the examples
itself (any Observation, at any depth, whose code is a genotype, haplotype, phenotype or therapeutic-
implication code) and fails if one is missing from EXPECTED, so a new example cannot slip through.

Reading context: a Bundle or Parameters file is read on its own; the standalone Observation and
DiagnosticReport files of one folder are read together, as the IG publishes them (TxImp01 is derived
from Pgx-geno-1001, the PharmVar haplotypes from GenotypeExamplePharmVar).

Values in EXPECTED, and why:
- ClinVar codes carry the diplotype only in `display` ("CYP2C19*2/*2" → "*2/*2").
- PharmVar suballeles become core alleles (CYP2D6*7.001 → *7; PharmGKB/CPIC use core alleles).
- A single HLA allele in a genotype (HLA-B*15:02) states that allele is present.
- GL strings "A+B" are a typing; one with "|" or "/" is ambiguous and is skipped.
- TxImp06 is derived from CYP2C9 and VKORC1 results: which gene its "Normal metabolizer" belongs to
  is not stated, so it is skipped rather than guessed.
- LA19541-4 "High risk" is a drug-specific risk, not a CPIC phenotype: skipped.
- CG-IG-HLA-FullBundle-01-12's GL string "HLA-A:01:01G+…" lacks the '*': skipped; its haplotypes
  (-10, -11) still make the pair.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir_fixtures import EXAMPLES, needs_shared

from cds.fhir import read_genomic_results

R4 = "FHIR_R4_core_spec_examples__via_fhir-ru_fhir-ru.github.io"
STU1 = "HL7_genomics-reporting/STU1-era-2020-build-json-ff8778e"
STU2 = "HL7_genomics-reporting/STU2-2.0.0-commit-a7c55c3"
STU3 = "HL7_genomics-reporting/STU3-3.0.0-published"

PM = ("phenotype", "CYP2C19", "Poor Metabolizer")

# (file, Observation id) → what it states:
#   ("diplotype", gene, value) | ("phenotype", gene, term) | ("allele", gene, allele, present)
#   ("pair", gene, diplotype, partner id)  a haplotype read as half of a diplotype
#   ("skipped", words the reason contains)
EXPECTED: dict[tuple[str, str], tuple] = {
    (f"{R4}/observation-example-TPMT-diplotype.json", "example-TPMT-diplotype"): ("diplotype", "TPMT", "*1/*4"),
    (f"{R4}/observation-example-diplotype1.json", "example-diplotype1"): ("skipped", "no genotype value"),
    (f"{R4}/observation-example-phenotype.json", "example-phenotype"): ("phenotype", "CYP2C9", "Normal Metabolizer"),

    (f"{STU1}/Bundle-HLAB1502-pgx-example.json", "genotype-pgx-example"): ("allele", "HLA-B", "*15:02", True),
    (f"{STU1}/Bundle-HLAB1502-pgx-example.json", "medication-high-risk"): ("skipped", "LA19541-4"),
    (f"{STU1}/Bundle-diagnosticreport-pgxexample.json", "genotype-pgx-example"): ("diplotype", "CYP2C9", "*4/*35B"),
    (f"{STU1}/Bundle-diagnosticreport-pgxexample.json", "med-impact-pgx-example"): ("phenotype", "CYP2C9", "Rapid Metabolizer"),
    (f"{STU1}/Bundle-diagnosticreport-pgxexample.json", "haplotype-1-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-2-pgx-example"),
    (f"{STU1}/Bundle-diagnosticreport-pgxexample.json", "haplotype-2-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-1-pgx-example"),

    (f"{STU2}/Bundle-bundle-pgxexample.json", "genotype-pgx-example"): ("diplotype", "CYP2C9", "*4/*35B"),
    (f"{STU2}/Bundle-bundle-pgxexample.json", "med-impact-pgx-example"): ("phenotype", "CYP2C9", "Rapid Metabolizer"),
    (f"{STU2}/Bundle-bundle-pgxexample.json", "haplotype-1-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-2-pgx-example"),
    (f"{STU2}/Bundle-bundle-pgxexample.json", "haplotype-2-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-1-pgx-example"),
    (f"{STU2}/Observation-GenotypeExample1.json", "GenotypeExample1"): ("allele", "HLA-B", "*15:02", True),
    (f"{STU2}/Observation-GenotypeExamplePharmVar.json", "GenotypeExamplePharmVar"): ("diplotype", "CYP2D6", "*7/*1"),
    (f"{STU2}/Observation-HaplotypeExamplePharmVar01.json", "HaplotypeExamplePharmVar01"): ("pair", "CYP2D6", "*7/*1", "HaplotypeExamplePharmVar02"),
    (f"{STU2}/Observation-HaplotypeExamplePharmVar02.json", "HaplotypeExamplePharmVar02"): ("pair", "CYP2D6", "*7/*1", "HaplotypeExamplePharmVar01"),
    (f"{STU2}/Observation-Pgx-geno-1001.json", "Pgx-geno-1001"): ("diplotype", "CYP2C19", "*2/*2"),
    (f"{STU2}/Observation-Pgx-geno-1002.json", "Pgx-geno-1002"): ("diplotype", "CYP2C9", "*1/*1"),
    (f"{STU2}/Observation-Pgx-geno-1003.json", "Pgx-geno-1003"): ("diplotype", "VKORC1", "rs9923231 C/T"),
    (f"{STU2}/Observation-TherapeuticImplicationExample1.json", "TherapeuticImplicationExample1"): ("skipped", "LA19541-4"),
    (f"{STU2}/Observation-TxImp01.json", "TxImp01"): PM,
    (f"{STU2}/Observation-TxImp02.json", "TxImp02"): PM,
    (f"{STU2}/Observation-TxImp03.json", "TxImp03"): PM,
    (f"{STU2}/Observation-TxImp04.json", "TxImp04"): PM,
    (f"{STU2}/Observation-TxImp05.json", "TxImp05"): PM,
    (f"{STU2}/Observation-TxImp06.json", "TxImp06"): ("skipped", "several genes (CYP2C9, VKORC1)"),

    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-10"): ("pair", "HLA-A", "*01:01:01G/*01:02", "CG-IG-HLA-FullBundle-01-11"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-11"): ("pair", "HLA-A", "*01:01:01G/*01:02", "CG-IG-HLA-FullBundle-01-10"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-12"): ("skipped", "GL string"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-17"): ("pair", "HLA-B", "*15:01:01G/*57:01:01G", "CG-IG-HLA-FullBundle-01-18"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-18"): ("pair", "HLA-B", "*15:01:01G/*57:01:01G", "CG-IG-HLA-FullBundle-01-17"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-19"): ("diplotype", "HLA-B", "*15:01:01G/*57:01:01G"),
    # both HLA-C haplotypes of this example are C*01:02:01G, while its genotype says *01:02:01G+*03:04:01G
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-24"): ("pair", "HLA-C", "*01:02:01G/*01:02:01G", "CG-IG-HLA-FullBundle-01-25"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-25"): ("pair", "HLA-C", "*01:02:01G/*01:02:01G", "CG-IG-HLA-FullBundle-01-24"),
    (f"{STU3}/Bundle-bundle-CG-IG-HLA-FullBundle-01.json", "CG-IG-HLA-FullBundle-01-26"): ("diplotype", "HLA-C", "*01:02:01G/*03:04:01G"),
    (f"{STU3}/Bundle-bundle-pgxexample.json", "genotype-pgx-example"): ("diplotype", "CYP2C9", "*4/*35B"),
    (f"{STU3}/Bundle-bundle-pgxexample.json", "med-impact-pgx-example"): ("phenotype", "CYP2C9", "Rapid Metabolizer"),
    (f"{STU3}/Bundle-bundle-pgxexample.json", "haplotype-1-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-2-pgx-example"),
    (f"{STU3}/Bundle-bundle-pgxexample.json", "haplotype-2-pgx-example"): ("pair", "CYP2C9", "*35B/*4", "haplotype-1-pgx-example"),
    (f"{STU3}/Observation-Genotype-Clinical-Trial-Example-using-haplotypes.json", "Genotype-Clinical-Trial-Example-using-haplotypes"): ("diplotype", "APOE", "e1/e1"),
    (f"{STU3}/Observation-GenotypeExample1.json", "GenotypeExample1"): ("allele", "HLA-B", "*15:02", True),
    (f"{STU3}/Observation-GenotypeExamplePharmVar.json", "GenotypeExamplePharmVar"): ("diplotype", "CYP2D6", "*7/*1"),
    # no report or genotype holds these two together: each states only that B*35:01 is present
    (f"{STU3}/Observation-HLA-B-haplotype1.json", "HLA-B-haplotype1"): ("allele", "HLA-B", "*35:01", True),
    (f"{STU3}/Observation-HLA-B-haplotype2.json", "HLA-B-haplotype2"): ("allele", "HLA-B", "*35:01", True),
    (f"{STU3}/Observation-HaplotypeExamplePharmVar01.json", "HaplotypeExamplePharmVar01"): ("pair", "CYP2D6", "*7/*1", "HaplotypeExamplePharmVar02"),
    (f"{STU3}/Observation-HaplotypeExamplePharmVar02.json", "HaplotypeExamplePharmVar02"): ("pair", "CYP2D6", "*7/*1", "HaplotypeExamplePharmVar01"),
    (f"{STU3}/Observation-Pgx-geno-1001.json", "Pgx-geno-1001"): ("diplotype", "CYP2C19", "*2/*2"),
    (f"{STU3}/Observation-Pgx-geno-1002.json", "Pgx-geno-1002"): ("diplotype", "CYP2C9", "*1/*1"),
    (f"{STU3}/Observation-Pgx-geno-1003.json", "Pgx-geno-1003"): ("diplotype", "VKORC1", "rs9923231 C/T"),
    (f"{STU3}/Observation-TherapeuticImplicationExample1.json", "TherapeuticImplicationExample1"): ("skipped", "LA19541-4"),
    (f"{STU3}/Observation-TxImp01.json", "TxImp01"): PM,
    (f"{STU3}/Observation-TxImp02.json", "TxImp02"): PM,
    (f"{STU3}/Observation-TxImp03.json", "TxImp03"): PM,
    (f"{STU3}/Observation-TxImp04.json", "TxImp04"): PM,
    (f"{STU3}/Observation-TxImp05.json", "TxImp05"): PM,
    (f"{STU3}/Observation-TxImp06.json", "TxImp06"): ("skipped", "several genes (CYP2C9, VKORC1)"),
    (f"{STU3}/Observation-genotype-hla-a-glstring-r4.json", "genotype-hla-a-glstring-r4"): ("diplotype", "HLA-A", "*03:01:01:01/*30:01:01"),
    # its report holds only this one HLA-A haplotype: it states that A*03:01:01:01 is present
    (f"{STU3}/Observation-haplotype-hla-a-1-r4.json", "haplotype-hla-a-1-r4"): ("allele", "HLA-A", "*03:01:01:01", True),
    (f"{STU3}/Parameters-FindSubjectHaplotypesOutput.json", "GenotypeCYP2D6"): ("diplotype", "CYP2D6", "*1/*1"),     # code CYP2D6_*1/*1
    (f"{STU3}/Parameters-FindSubjectHaplotypesOutput.json", "GenotypeCYP2C19"): ("diplotype", "CYP2C19", "*1/*2"),
    (f"{STU3}/Parameters-FindSubjectSpecificHaplotypesOutput.json", "Genotype7"): ("skipped", "GL string is ambiguous"),
    # a somatic lapatinib implication derived from a variant that is not in the file
    (f"{STU3}/Parameters-FindSubjectTxImplicationsOutput.json", "TherapeuticImplicationExample"): ("skipped", "no gene stated"),
}

# What makes an Observation a genotype/haplotype/phenotype/therapeutic-implication example (by reading
# the files: LOINC 84413-4, 84414-2, 53040-2, 79716-7; SNOMED 363779003; the IG's therapeutic-implication).
EXAMPLE_CODES = {"84413-4", "84414-2", "53040-2", "79716-7", "363779003", "therapeutic-implication"}


def _observations(node, found):
    if isinstance(node, dict):
        if node.get("resourceType") == "Observation":
            codes = {c.get("code") for c in (node.get("code") or {}).get("coding", [])}
            if codes & EXAMPLE_CODES:
                found.append(node["id"])
        for value in node.values():
            _observations(value, found)
    elif isinstance(node, list):
        for value in node:
            _observations(value, found)
    return found


def _contexts() -> list[tuple[list[str], list[dict]]]:
    """(files, resources) read together: each Bundle/Parameters alone; a folder's other files together."""
    contexts = []
    for folder in sorted({p.parent for p in EXAMPLES.rglob("*.json")}):
        loose = []
        for path in sorted(folder.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if "resourceType" not in data:
                continue  # CDS Hooks request bodies: read by the medication tests
            rel = str(path.relative_to(EXAMPLES))
            if data["resourceType"] in ("Bundle", "Parameters"):
                contexts.append(([rel], [data]))
            else:
                loose.append((rel, data))
        if loose:
            contexts.append(([r for r, _ in loose], [d for _, d in loose]))
    return contexts


def test_every_example_is_listed():
    needs_shared()
    found = set()
    for path in EXAMPLES.rglob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        for oid in _observations(data, []):
            found.add((str(path.relative_to(EXAMPLES)), oid))
    assert len(found) == 63
    assert found == set(EXPECTED)


@pytest.mark.parametrize("files,resources", _contexts() if EXAMPLES.is_dir() else [],
                         ids=lambda v: Path(v[0]).name if isinstance(v, list) and v and isinstance(v[0], str) else None)
def test_examples_read_as_stated(files, resources):
    reading = read_genomic_results(resources)
    expected = {oid: want for (f, oid), want in EXPECTED.items() if f in files}
    by_id: dict[str, list] = {}
    for r in reading.results:
        for part in r.source_id.split("+"):
            by_id.setdefault(part.removeprefix("Observation/"), []).append(r)
    # nothing read that EXPECTED does not list
    assert set(by_id) <= set(expected), set(by_id) - set(expected)
    for oid, want in expected.items():
        got = by_id.get(oid, [])
        if want[0] == "skipped":
            assert not got, f"{oid} should be skipped, got {got}"
            reasons = [s for s in reading.skipped if s.startswith(f"Observation/{oid}:") or s.startswith(f"Observation/{oid} (")]
            assert len(reasons) == 1 and want[1] in reasons[0], (oid, reading.skipped)
            continue
        assert len(got) == 1, f"{oid}: {got}"
        r = got[0]
        assert r.gene == want[1], oid
        assert r.status == "final"
        if want[0] == "diplotype":
            assert (r.diplotype, r.phenotype, r.allele) == (want[2], None, None), oid
            assert r.source_id == f"Observation/{oid}"
        elif want[0] == "phenotype":
            assert (r.phenotype, r.diplotype, r.allele) == (want[2], None, None), oid
        elif want[0] == "allele":
            assert (r.allele, r.allele_present, r.diplotype) == (want[2], want[3], None), oid
        elif want[0] == "pair":
            assert r.diplotype == want[2], oid
            assert set(r.source_id.split("+")) == {f"Observation/{oid}", f"Observation/{want[3]}"}
