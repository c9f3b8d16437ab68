"""The interpretation as HL7 Genomics Reporting (STU3) resources: `cds explain --fhir` and
`cds screen --fhir-out`. Every resource validates with fhir.resources (R4B) and carries a Genomics
Reporting profile; our own FHIR reader reads them back to the same interpretation (round trip)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from cds.explain import explain, to_json
from cds.fhir.genomics_out import PROFILES
from cds.pipeline import patient_facts
from pgx_paths import REPO

# Every way a result can be stated, over genes of each kind, and drugs whose advice reads them (one
# gene, two genes, an allele status beside an activity score, populations, a phenotype whose score decides).
GENOTYPES = ["CYP2C19=*2/*2", "CYP2D6=Poor Metabolizer", "CYP2C9=*1/*3", "HLA-B=*57:01/*08:01", "HLA-A=*31:01 positive",
             "TPMT=*1/*3A", "NUDT15=*1/*1", "DPYD=Intermediate Metabolizer", "SLCO1B1=*5/*5", "G6PD=Mediterranean Haplotype/Mediterranean Haplotype",
             "CYP2B6=*6/*6", "UGT1A1=*28/*28"]
DRUGS = ["clopidogrel", "codeine", "amitriptyline", "abacavir", "carbamazepine", "allopurinol", "phenytoin",
         "mercaptopurine", "fluorouracil", "simvastatin", "rasburicase", "efavirenz", "atazanavir", "citalopram"]


def validate(resource: dict) -> None:
    rtype = resource["resourceType"]
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    model.model_validate(resource)


@pytest.fixture(scope="module")
def bundle():
    done = subprocess.run([sys.executable, "-m", "cds.cli", "explain", *[a for g in GENOTYPES for a in ("--genotype", g)],
                           *[a for d in DRUGS for a in ("--drug", d)], "--source", "all", "--fhir", "--patient", "p1"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout)


def test_every_resource_validates_and_carries_a_genomics_reporting_profile(bundle):
    validate(bundle)
    kinds = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        validate(resource)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        [profile] = resource["meta"]["profile"]
        assert profile in PROFILES
        kinds[profile.rsplit("/", 1)[1]] = kinds.get(profile.rsplit("/", 1)[1], 0) + 1
        if resource["resourceType"] in ("Observation", "Task"):
            assert resource.get("subject", resource.get("for")) == {"reference": "Patient/p1"}
    assert set(kinds) == {"genotype", "therapeutic-implication", "medication-recommendation", "genomic-report"}
    assert kinds["genomic-report"] == 1


def test_implications_carry_the_sources_own_words_and_tasks_where_prescribing_changes(bundle, engine):
    resources = [e["resource"] for e in bundle["entry"]]
    evaluation = explain(engine, GENOTYPES, DRUGS, sources=["CPIC", "DPWG"])
    texts = {m.recommendation.recommendation for d in evaluation.drugs for m in d.matches}
    implications = [r for r in resources if r["meta"]["profile"][0].endswith("therapeutic-implication")
                    and any(c["code"]["coding"][0]["code"] == "51963-7" for c in r["component"])]
    conclusions = {c["valueString"] for r in implications for c in r["component"] if "valueString" in c}
    assert conclusions == texts                                     # one per recommendation, CPIC's/DPWG's words
    clopidogrel = next(r for r in implications if any(c.get("valueCodeableConcept", {}).get("text") == "clopidogrel"
                                                     for c in r["component"])
                       and "Avoid clopidogrel" in json.dumps(r))
    assert "CPIC Strong" in json.dumps(clopidogrel) and clopidogrel["extension"][0]["valueRelatedArtifact"]["url"]
    assert clopidogrel["derivedFrom"] and engine.kb.version in clopidogrel["method"]["text"]
    tasks = [r for r in resources if r["resourceType"] == "Task"]
    abacavir = next(t for t in tasks if t["description"].startswith("abacavir:"))
    assert abacavir["code"]["coding"][0]["code"] == "LA26421-0"      # CPIC flags an alternative drug
    assert all(t["reasonReference"]["reference"].startswith("urn:uuid:") for t in tasks)


def test_round_trip_our_reader_gets_the_same_interpretation(bundle, engine):
    evaluation = explain(engine, GENOTYPES, DRUGS, sources=["CPIC", "DPWG"])
    facts = patient_facts(engine, [bundle], patient_ref="Patient/p1")
    assert not facts.notes and not facts.conflicts and not facts.unreadable_by_gene
    again = engine.evaluate(facts.interpretations, DRUGS, conflicts=facts.conflicts, sources=["CPIC", "DPWG"])
    assert to_json(again)["recommendations"] == to_json(evaluation)["recommendations"]
    for gene, items in evaluation.interpretations.items():
        assert {(i.phenotype, i.lookup_key) for i in items} <= {(i.phenotype, i.lookup_key)
                                                                for i in facts.interpretations[gene]}, gene


def test_an_indeterminate_result_travels_with_its_reason(engine):
    evaluation = explain(engine, ["CYP2C19=*1/*99"], ["clopidogrel"])
    from cds.fhir.interpretation import interpretation_resources

    made = interpretation_resources(engine.kb, evaluation, patient_ref="Patient/p1", as_bundle=True)
    [genotype] = [r for r in made.resources if r["meta"]["profile"][0].endswith("/genotype")]
    assert genotype["interpretation"][0]["coding"][0]["code"] == "IND"
    facts = patient_facts(engine, [made.bundle()], patient_ref="Patient/p1")
    first, *implied = facts.interpretations["CYP2C19"]         # the genotype, then CPIC's Indeterminate advice's
    assert first.indeterminate and first.reason == evaluation.interpretations["CYP2C19"][0].reason
    assert all(i.indeterminate for i in implied)


def test_screen_fhir_out_is_bulk_ndjson_with_pseudonyms_unless_raw_ids(tmp_path):
    from cds.screen.run import ScreenOptions, screen
    from cds.screen.synth import write_cohort
    from cds.knowledge.loader import load_knowledge
    from cds.store.pseudonym import PatientHasher

    key = b"k" * 40
    write_cohort(load_knowledge(REPO), 40, tmp_path / "cohort", 7, False)
    ids = {json.loads(line)["id"] for line in (tmp_path / "cohort" / "Patient.ndjson").read_text().splitlines()}
    for raw in (False, True):
        out = tmp_path / f"fhir-{raw}"
        screen(ScreenOptions(input_dir=tmp_path / "cohort", out=tmp_path / f"out-{raw}", workers=1, audit_key=key,
                             progress=False, raw_ids=raw, fhir_out=out))
        subjects = set()
        for name in ("Observation", "Task", "DiagnosticReport"):
            for line in (out / f"{name}.ndjson").read_text().splitlines():
                resource = json.loads(line)
                assert resource["resourceType"] == name
                validate(resource)
                assert resource["meta"]["profile"][0] in PROFILES
                subjects.add((resource.get("subject") or resource.get("for"))["reference"].removeprefix("Patient/"))
                if not raw:
                    assert not any(pid in line for pid in ids)          # no raw id, no link back to the source
        expected = ids if raw else {PatientHasher(key)(pid) for pid in ids}
        assert subjects and subjects <= expected


def test_validation_remembered_by_shape_still_checks_each_resources_ids_and_values():
    from cds.fhir.genomics_out import genotype_observation
    from cds.fhir.valid import InvalidResource, validated

    good = genotype_observation("a1", "CYP2C19", "*2/*2", subject={"reference": "Patient/1"})
    validated(good)
    validated({**good, "id": "b2", "subject": {"reference": "Patient/2"}})        # the same shape: fine
    with pytest.raises(InvalidResource, match="id"):
        validated({**good, "id": "not an id!"})                                     # same shape, bad id
    with pytest.raises(InvalidResource, match="subject"):
        validated({**good, "subject": {"reference": ""}})
    with pytest.raises(InvalidResource, match="status"):
        validated({**good, "status": 5})
