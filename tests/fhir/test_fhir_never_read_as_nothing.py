"""FHIR results that used to be read as nothing (issue 20 items 7 and 8): each now gives a fact, or a
reason that is said (a card where it concerns an ordered drug, else the audit), never an empty answer.

Shapes and their sources (built here by hand after them, except the shared IG file read in place):
- genomics-operations' find-subject-tx-implications output (github.com/FHIR/genomics-operations,
  tests/expected_outputs/find_subject_tx_implications/2.json, commit 8176b42): a therapeutic implication
  whose `predicted-therapeutic-implication` component's text is "CYP2C19 Rapid Metabolizer" or only
  "Normal Metabolizer", with `medication-assessed` (LOINC 51963-7, RxNorm 704 amitriptyline) and
  `derivedFrom` a genotype that may not come with it.
- HL7 Genomics Reporting IG, example genotype-1a (input/fsh/examples/genotype-1a.fsh): a genotype whose
  gene-studied components name CYP2C9 and VKORC1 and whose value is "CYP2C9 *2/*5".
- IG STU3 Bundle-bundle-CYP2C19.json (../shared/fhir-examples): a transaction Bundle whose report holds
  only variant calls (69548-6) and a phase relation (82120-7), entries named by urn:uuid fullUrls.
- FHIR R4 core observation-example-haplotype1: code LOINC 55233-1, the gene in the
  observation-geneticsGene extension.
"""
from __future__ import annotations

import json

import pytest
from fhir_fixtures import EXAMPLES, needs_shared

from cds.decision import PatientCase, decide
from cds.fhir import read_genomic_results
from cds.pipeline import Advisor

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TBD = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
GENE_STUDIED = {"coding": [{"system": "http://loinc.org", "code": "48018-6", "display": "Gene studied"}]}


@pytest.fixture(scope="module")
def advisor(engine) -> Advisor:
    return Advisor.build(engine)


def implication(oid: str, phenotype_text: str, rxnorm: str, drug: str, derived_from: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "meta": {"profile": ["http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/therapeutic-implication"]},
            "code": {"coding": [{"system": TBD, "code": "therapeutic-implication"}]},
            "subject": {"reference": "Patient/NB6TK328"},
            "derivedFrom": [{"reference": derived_from}],
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "51963-7", "display": "medication-assessed"}]},
                 "valueCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": drug}]}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "93044-6", "display": "Level of evidence"}]},
                 "valueCodeableConcept": {"text": "CPIC Level A"}},
                {"code": {"coding": [{"system": TBD, "code": "predicted-therapeutic-implication"}]},
                 "valueCodeableConcept": {"text": phenotype_text}}]}


def order(advisor: Advisor, drug: str, patient: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": advisor.engine.drug_plan(drug).rxnorm}]}}


def decided(advisor: Advisor, genomics: list, drug: str, patient: str = "NB6TK328"):
    return decide(advisor, PatientCase(hook="order-sign", patient_ref=f"Patient/{patient}", genomics=genomics,
                                       medications=[order(advisor, drug, patient)]))


# --- item 7 ---------------------------------------------------------------------------------------

def test_an_implication_naming_its_gene_only_in_its_text_is_read(advisor):
    alone = implication("imp-1", "CYP2C19 Rapid Metabolizer", "704", "Amitriptyline", "Observation/not-here")
    advice = decided(advisor, [alone], "citalopram")
    (got,) = advice.facts.interpretations["CYP2C19"]
    assert got.phenotype == "Rapid Metabolizer" and got.source_ids == ("Observation/imp-1",)
    assert advice.cards and all("could not be interpreted" not in c.card["summary"] for c in advice.cards)
    assert any("CYP2C19 Rapid Metabolizer" in c.card["summary"] for c in advice.cards)


def test_an_implication_whose_gene_cannot_be_told_is_said_for_the_drug_it_assesses(advisor):
    alone = implication("imp-2", "Normal Metabolizer", "704", "Amitriptyline", "Observation/not-here")
    advice = decided(advisor, [alone], "amitriptyline")
    assert [c.rule_id for c in advice.cards] == ["result-not-interpretable"]
    assert "Observation/imp-2" in advice.cards[0].card["detail"]
    # the same result beside the genotype it is derived from is read as that gene's phenotype
    genotype = {"resourceType": "Observation", "id": "g-2", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                "subject": {"reference": "Patient/NB6TK328"},
                "component": [{"code": GENE_STUDIED, "valueCodeableConcept": {"coding": [
                    {"system": "http://www.genenames.org/geneId", "code": "HGNC:2625", "display": "CYP2D6"}]}}],
                "valueCodeableConcept": {"coding": [{"system": "https://www.pharmvar.org", "code": "CYP2D6 *1/*41",
                                                     "display": "CYP2D6 *1/*41"}]}}
    both = decided(advisor, [implication("imp-2", "Normal Metabolizer", "704", "Amitriptyline", "Observation/g-2"),
                             genotype], "amitriptyline")
    assert "result-not-interpretable" not in [c.rule_id for c in both.cards]
    assert {i.source_ids[0] for i in both.facts.interpretations["CYP2D6"]} == {"Observation/g-2", "Observation/imp-2"}


# --- item 8 ---------------------------------------------------------------------------------------

def test_a_genotype_listing_two_genes_studied_is_read_per_gene_from_its_value():
    genotype_1a = {"resourceType": "Observation", "id": "genotype-1a", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                   "subject": {"reference": "Patient/patient-1a"}, "effectiveDateTime": "2016",
                   "valueCodeableConcept": {"coding": [{"system": "http://www.pharmvar.org", "code": "CYP2C9 *2/*5",
                                                        "display": "CYP2C9 *2/*5"}]},
                   "component": [
                       {"code": GENE_STUDIED, "valueCodeableConcept": {"coding": [
                           {"system": "http://www.genenames.org/geneId", "code": "2623", "display": "CYP2C9"}]}},
                       {"code": GENE_STUDIED, "valueCodeableConcept": {"coding": [
                           {"system": "http://www.genenames.org/geneId", "code": "23663", "display": "VKORC1"}]}}]}
    reading = read_genomic_results([genotype_1a])
    assert [(r.gene, r.diplotype) for r in reading.results] == [("CYP2C9", "*2/*5")]
    assert any("VKORC1" in s and "genotype-1a" in s for s in reading.skipped)


def test_a_report_of_variant_calls_only_is_said():
    needs_shared()
    bundle = json.loads((EXAMPLES / "HL7_genomics-reporting" / "STU3-3.0.0-published" / "Bundle-bundle-CYP2C19.json")
                        .read_text(encoding="utf-8"))
    reading = read_genomic_results(bundle)
    assert reading.results == []
    assert any(s.startswith("DiagnosticReport/report-CYP2C19: none of its") for s in reading.skipped)


def test_an_r4_core_haplotype_with_the_gene_extension_gives_a_stated_reason(advisor):
    haplotype = {"resourceType": "Observation", "id": "example-haplotype1", "status": "final",
                 "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/observation-geneticsGene",
                                "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "2623",
                                                                     "display": "CYP2C9"}]}}],
                 "code": {"coding": [{"system": "http://loinc.org", "code": "55233-1",
                                      "display": "Genetic analysis master panel"}]},
                 "subject": {"reference": "Patient/example"},
                 "valueCodeableConcept": {"coding": [{"system": "http://pharmakb.org", "code": "PA165971634", "display": "*1"}]}}
    advice = decided(advisor, [haplotype], "celecoxib", patient="example")
    assert [c.rule_id for c in advice.cards] == ["result-not-interpretable"]
    assert "55233-1" in advice.cards[0].card["detail"]


def test_a_transaction_entry_without_id_is_named_by_its_full_url(advisor):
    url = "urn:uuid:0b2f6a3c-1111-4c2a-9d7e-5f0e3a6b7c01"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"fullUrl": url, "request": {
        "method": "POST", "url": "Observation"}, "resource": {
        "resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/example"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
        "component": [{"code": GENE_STUDIED, "valueCodeableConcept": {"coding": [
            {"system": "http://www.genenames.org/geneId", "code": "HGNC:2621", "display": "CYP2C19"}]}}],
        "valueCodeableConcept": {"text": "CYP2C19 *1/*99"}}}]}
    advice = decided(advisor, [bundle], "clopidogrel", patient="example")
    assert [c.rule_id for c in advice.cards] == ["result-not-interpretable"]
    assert "urn\\:uuid\\:0b2f6a3c" in advice.cards[0].card["detail"]
    assert any(r.startswith(url) for r in advice.reasons())
