"""`cds convert pharmcat`: PharmCAT's calls as Genomics Reporting (STU3) Observations a FHIR server can
load, and `cds screen` reading them like any other Observation.

Acceptance: the output parses with fhir.resources (R4B), carries the profile URLs, PharmCAT's version and
data version as method and its callSource; screened with a Patient and a MedicationRequest it gives the
same rows as the same genotypes sent as plain genotype Observations.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from fhir.resources.R4B.observation import Observation

from cds.fhir.genomics_out import CALL_SOURCE_EXTENSION, PROFILE_GENOTYPE, PROFILE_THERAPEUTIC_IMPLICATION
from pgx_paths import REPO, SHARED

PHARMCAT = SHARED / "pharmcat"
REPORT = PHARMCAT / "pharmcat.example.report.json"
# One patient per drug, each on one drug whose advice reads a gene PharmCAT called in the example.
DRUGS = {"codeine": "2670", "clopidogrel": "32968", "abacavir": "190521", "allopurinol": "519",
         "fluorouracil": "4492", "mercaptopurine": "103", "simvastatin": "36567", "tacrolimus": "42316",
         "efavirenz": "195085", "ivacaftor": "1243041", "warfarin": "11289", "siponimod": "2121767"}


def convert(tmp_path, source=REPORT, patient="p1"):
    out = tmp_path / "pharmcat.ndjson"
    done = subprocess.run([sys.executable, "-m", "cds.cli", "convert", "pharmcat", str(source), "--patient", patient,
                           "--out", str(out), "--lab", "Example Genomics Lab"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], done.stdout


def test_output_parses_with_fhir_resources_and_keeps_pharmcats_method_and_call_source(tmp_path):
    resources, stdout = convert(tmp_path)
    report = json.loads(REPORT.read_text(encoding="utf-8"))
    genotypes = {}
    for resource in resources:
        Observation.model_validate(resource)                           # FHIR R4, every line
        assert resource["subject"] == {"reference": "Patient/p1"}
        profile = resource["meta"]["profile"]
        assert profile in ([PROFILE_GENOTYPE], [PROFILE_THERAPEUTIC_IMPLICATION])
        if profile == [PROFILE_GENOTYPE]:
            gene = resource["component"][0]["valueCodeableConcept"]["text"]
            genotypes[gene] = resource
            assert resource["method"]["text"] == "PharmCAT v3.1.0-2-g0b250f81, data version 2025-11-05-00-25"
            assert resource["issued"] == report["timestamp"]
            assert resource["performer"] == [{"display": "Example Genomics Lab"}]
    for gene, r in report["genes"].items():
        rec = r["recommendationDiplotypes"][0]
        if rec["lookupKey"] == ["No Result"]:
            assert gene not in genotypes                               # "No Result": absent, as PharmCAT means it
            assert f"not written: {gene}: PharmCAT has no {gene} call" in stdout
            continue
        obs = genotypes[gene]
        names = "/".join(rec[k]["name"] for k in ("allele1", "allele2") if rec.get(k))
        assert obs["valueCodeableConcept"]["text"] == names
        assert obs["extension"] == [{"url": CALL_SOURCE_EXTENSION, "valueCode": r["callSource"]}]
        indeterminate = rec["lookupKey"] == ["n/a"]
        assert ("interpretation" in obs) == indeterminate, gene
        if indeterminate:
            assert obs["interpretation"][0]["coding"][0]["code"] == "IND"
            assert "no phenotype (n/a)" in obs["note"][0]["text"]
    assert len(genotypes) == 22


def _genotype(gene: str, hgnc: str, diplotype: str, n: int) -> dict:
    """A genotype Observation as the IG's own examples write one, nothing of PharmCAT in it."""
    return {"resourceType": "Observation", "id": f"plain-{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": hgnc,
                                                                "display": gene}]}}],
            "valueCodeableConcept": {"text": diplotype}, "subject": {"reference": "Patient/PATIENT"}}


def _cohort(folder, observations: list[dict]) -> None:
    folder.mkdir()
    patients, requests, results = [], [], []
    for drug, rxnorm in DRUGS.items():
        pid = f"pt-{drug}"
        patients.append({"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"})
        requests.append({"resourceType": "MedicationRequest", "id": f"rx-{drug}", "status": "active", "intent": "order",
                         "subject": {"reference": f"Patient/{pid}"},
                         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                   "code": rxnorm, "display": drug}]}})
        for obs in observations:
            copy = json.loads(json.dumps(obs).replace("PATIENT", pid).replace("Patient/p1", f"Patient/{pid}"))
            copy["id"] = f"{pid}-{obs['id']}"[:64]
            results.append(copy)
    for name, items in (("Patient", patients), ("MedicationRequest", requests), ("Observation", results)):
        (folder / f"{name}.ndjson").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")


def _rows(out, kind):
    with open(out / f"{kind}.csv", newline="", encoding="utf-8") as f:
        return sorted(tuple(v for k, v in r.items() if k != "where") for r in csv.DictReader(f))


def test_screened_like_the_same_genotypes_sent_as_observations(tmp_path):
    from cds.fhir.mappings import default_mappings
    from cds.screen.run import ScreenOptions, screen

    converted, _ = convert(tmp_path)
    report = json.loads(REPORT.read_text(encoding="utf-8"))
    hgnc = {g: f"HGNC:{n}" for n, g in default_mappings().gene_by_hgnc_number.items()}
    plain = []
    for n, (gene, r) in enumerate(report["genes"].items()):
        rec = r["recommendationDiplotypes"][0]
        if rec["lookupKey"] in (["No Result"], ["n/a"]) or gene not in hgnc:
            continue          # PharmCAT's "n/a" calls are compared on their own below
        plain.append(_genotype(gene, hgnc[gene], "/".join(rec[k]["name"] for k in ("allele1", "allele2") if rec.get(k)), n))
    _cohort(tmp_path / "converted", converted)
    _cohort(tmp_path / "plain", plain)
    outputs = {}
    for name in ("converted", "plain"):
        out = tmp_path / f"out-{name}"
        screen(ScreenOptions(input_dir=tmp_path / name, out=out, workers=1, audit_key=b"k" * 40, progress=False))
        outputs[name] = out
    for kind in ("actionable", "testing", "no_card", "withheld", "carriers"):
        assert _rows(outputs["converted"], kind) == _rows(outputs["plain"], kind), kind
    assert len(_rows(outputs["converted"], "actionable")) >= 3      # codeine, abacavir, allopurinol at least
    # PharmCAT's own "n/a" (MT-RNR1 1555A>G, IFNL3) travels as Indeterminate with PharmCAT's reason: a
    # result on file that could not be interpreted, never a phenotype PharmCAT did not give.
    from cds.engine import Engine
    from cds.knowledge.loader import load_knowledge
    from cds.pipeline import patient_facts

    facts = patient_facts(Engine.from_knowledge(load_knowledge(REPO)), converted, patient_ref="Patient/p1")
    mt = facts.interpretations["MT-RNR1"]
    assert [i.phenotype for i in mt] == ["Indeterminate"]
    assert mt[0].reason == "PharmCAT assigns 1555A>G (allele function: Unassigned function) no phenotype (n/a)"


def test_an_outside_call_file_converts_and_a_phenotype_alone_is_an_implication(tmp_path):
    source = tmp_path / "calls.tsv"
    source.write_text("CYP2C19\t*2/*2\nHLA-B\t\t*57:01 positive\nCYP2C9\t\t\t1.5\nCYP2D6\t*1/*2 or *1/*4\n", encoding="utf-8")
    resources, stdout = convert(tmp_path, source)
    by_gene = {}
    for r in resources:
        gene = next(c["valueCodeableConcept"]["text"] for c in r["component"] if c["code"]["coding"][0]["code"] == "48018-6")
        by_gene.setdefault(gene, []).append(r)
    assert by_gene["CYP2C19"][0]["method"]["text"].startswith("Outside calls in PharmCAT's outside-call format")
    status = by_gene["HLA-B"][0]
    assert status["meta"]["profile"] == [PROFILE_THERAPEUTIC_IMPLICATION]
    assert status["component"][0]["valueCodeableConcept"]["text"] == "HLA-B *57:01 positive"
    ambiguous = by_gene["CYP2D6"][0]
    assert ambiguous["valueCodeableConcept"]["text"] == "*1/*2 or *1/*4"
    assert ambiguous["interpretation"][0]["coding"][0]["code"] == "IND"
    assert "CYP2C9: stated as activity score 1.5" in stdout and "CYP2C9" not in by_gene

    from cds.knowledge.loader import load_knowledge
    from cds.engine import Engine
    from cds.pipeline import patient_facts

    engine = Engine.from_knowledge(load_knowledge(REPO))
    facts = patient_facts(engine, resources, patient_ref="Patient/p1")
    assert [i.phenotype for i in facts.interpretations["HLA-B"]] == ["*57:01 positive"]
    assert facts.unreadable_by_gene["CYP2D6"] == [
        f"Observation/{ambiguous['id']}: PharmCAT: the outside call names 2 possible CYP2D6 diplotypes (*1/*2 or *1/*4)"]


@pytest.mark.parametrize("args, message", [
    (["--patient", "Patient/1"], "--patient is the Patient's id"),
])
def test_convert_refuses_a_reference_for_a_patient_id(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "cds.cli", "convert", "pharmcat", str(REPORT), *args,
                           "--out", str(tmp_path / "x.ndjson")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
