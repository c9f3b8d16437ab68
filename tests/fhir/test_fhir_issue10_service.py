"""Issue 10 through the running service (tests/live_service.py, the app as create_app builds it, with a
SQLite audit store): every shape of result and order the issue names gives the CPIC card, or a card or an
audited reason saying what could not be read. FHIR JSON is shaped as the source each test cites.

Result shapes build on HL7 Genomics Reporting IG 3.0.0 (STU3) Observation-Pgx-geno-1001 (genotype, LOINC
84413-4, gene-studied component 48018-6) and on the lab-style Observation of tests/fixtures/fhir/built
(the gene in the lab's own code, the value as text, after FHIR R4 observation-example-TPMT-diplotype).
Orders build on the CDS Hooks 2.0 order-sign example (cds-hooks/docs, R4 MedicationRequest) and RxNorm
codes from ../shared/rxnorm/scd_sbd_to_ingredient.tsv (309362 clopidogrel 75 MG Oral Tablet, 213169 Plavix).

`test_each_case_prefetched_and_fetched` runs every case of the issue twice, prefetched and fetched from
a loopback FHIR server (tests/fhir_server.py), with one expected outcome; each case's id names its
source. The tests before it cover what only one path has (lab results sent bare in a prefetch, a
malformed patient id, the report and workbench counts)."""
from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pytest
import requests
from fhir_fixtures import load
from sqlalchemy import create_engine, text

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PATIENT = "example"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from live_service import LiveServer

    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("issue10")
    url = f"sqlite:///{root / 'audit.sqlite3'}"
    store = Store.open(url, spool_dir=root / "spool", audit_key="k" * 32)
    server = LiveServer(create_app(Settings(auth_mode="off", fhir_timeout=2.0, fhir_budget=4.0), store=store))
    server.db = create_engine(url)
    yield server
    server.stop()
    server.db.dispose()
    store.close()


# --- shapes ------------------------------------------------------------------------------------------

def lab(gene_code_text: str, oid: str | None = None, patient: str = PATIENT, **value) -> dict:
    """A lab-style Observation: the lab's own code names the gene (tests/fixtures/fhir/built/lab-*.json)."""
    return {"resourceType": "Observation", "id": oid or f"lab-{uuid.uuid4().hex[:8]}", "status": "final",
            "code": {"coding": [{"system": "http://acme-lab.example/order-codes", "code": "PGX",
                                 "display": gene_code_text}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2024-03-01", **value}


def ig_genotype(**changes) -> dict:
    """IG STU3 Observation-Pgx-geno-1001 (CYP2C19 *2/*2), re-pointed at the context patient."""
    geno = load("shared/ig-stu3/Observation-Pgx-geno-1001.json")
    geno["subject"] = {"reference": f"Patient/{PATIENT}"}
    geno.update(changes)
    return geno


def order(concept: dict | None = None, oid: str = "o1", rtype: str = "MedicationRequest", **fields) -> dict:
    resource = {"resourceType": rtype, "id": oid, "status": "draft", "intent": "order",
                "subject": {"reference": f"Patient/{PATIENT}"}, **fields}
    if concept is not None:
        resource["medicationCodeableConcept"] = concept
    return resource


def searchset(*resources: dict) -> dict:
    """A search's answer (FHIR R4 bundle.html#searchset), as an EHR prefetches it."""
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


CLOPIDOGREL = {"coding": [{"system": RXNORM, "code": "309362", "display": "clopidogrel 75 MG Oral Tablet"}]}


def sign(live, orders: list[dict], observations: list[dict], *, service: str = "pgx-order-sign",
         patient: dict | None = None, patient_id: str = PATIENT) -> tuple[list[dict], dict]:
    """order-sign through HTTP; returns the cards and the call's audit row."""
    instance = str(uuid.uuid4())
    context = {"userId": "Practitioner/example", "patientId": patient_id}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}
    if service == "pgx-medication-prescribe":
        context["medications"] = bundle
        hook = "medication-prescribe"
    else:
        context["draftOrders"] = bundle
        hook = "order-sign"
    body = {"hook": hook, "hookInstance": instance, "context": context,
            "prefetch": {"patient": patient or {"resourceType": "Patient", "id": PATIENT, "birthDate": "1970-01-01"},
                         "genomics": searchset(*observations)}}
    response = live.call(service, body)
    assert response.status_code == 200, response.text
    return response.json()["cards"], audit(live, instance)


def audit(live, instance: str) -> dict:
    assert live.runtime.store.flush(timeout=10)
    with live.db.connect() as conn:
        row = conn.execute(text("SELECT unresolved_drugs, reasons, fhir_errors FROM cds_call WHERE hook_instance = :i"),
                           {"i": instance}).one()
    unresolved, reasons, errors = (json.loads(v) if isinstance(v, str) else v for v in row)
    return {"unresolved": unresolved, "reasons": reasons, "fhir_errors": errors or []}


def summaries(cards: list[dict]) -> list[str]:
    return [c["summary"] for c in cards]


def pm_card(cards: list[dict]) -> bool:
    return any(s.startswith("Clopidogrel: CYP2C19 Poor Metabolizer") for s in summaries(cards))


# --- item 3: lab-style results sent bare in the prefetch (the lab's own code names the gene) -------------

def test_lab_diplotype_with_its_stated_phenotype_gives_the_cpic_card(live):
    cards, _ = sign(live, [order(CLOPIDOGREL)], [lab("CYP2C19 genotype", valueString="*2/*3 (Poor Metabolizer)")])
    assert pm_card(cards), summaries(cards)


def test_lab_diplotype_that_contradicts_its_stated_phenotype_is_a_conflict(live):
    cards, _ = sign(live, [order(CLOPIDOGREL)], [lab("CYP2C19 genotype", valueString="*1/*1 (Poor Metabolizer)")])
    assert summaries(cards) == ["Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]


def test_hla_b_written_without_colons(live):
    """'HLA-B*5701' is HLA-B*57:01 in the pre-2010 notation (Marsh et al., Tissue Antigens 2010)."""
    abacavir = {"coding": [{"system": RXNORM, "code": "242679", "display": "abacavir 300 MG Oral Tablet"}]}
    cards, _ = sign(live, [order(abacavir)], [lab("HLA-B*5701 screen", valueString="Positive")])
    assert any(s.startswith("Abacavir: HLA-B*57:01 positive") for s in summaries(cards)), summaries(cards)


def test_dpyd_star_2a_as_labs_write_it(live):
    """CPIC names the allele 'c.1905+1G>A (*2A)'; labs write 'DPYD *2A'."""
    fluorouracil = {"coding": [{"system": RXNORM, "code": "4492", "display": "fluorouracil"}]}
    cards, _ = sign(live, [order(fluorouracil)], [lab("DPYD genotype", valueString="DPYD *2A/*2A")])
    assert any(s.startswith("Fluorouracil: DPYD") for s in summaries(cards)), summaries(cards)


def test_mt_rnr1_variant_without_the_m_prefix(live):
    gentamicin = {"coding": [{"system": RXNORM, "code": "4413", "display": "gentamicin"}]}
    cards, _ = sign(live, [order(gentamicin)], [lab("MT-RNR1 variant", valueString="MT-RNR1 1555A>G")])
    assert any(s.startswith("Gentamicin: MT-RNR1") for s in summaries(cards)), summaries(cards)


# --- item 2: a result reachable only through a DiagnosticReport ----------------------------------------

def test_results_referenced_by_a_diagnostic_report_in_the_same_bundle(live):
    geno = ig_genotype()
    report = {"resourceType": "DiagnosticReport", "id": "pgx-report", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]},
              "subject": {"reference": f"Patient/{PATIENT}"}, "result": [{"reference": "Observation/Pgx-geno-1001"}]}
    geno.pop("effectiveDateTime", None)    # dated by its report only
    report["effectiveDateTime"] = "2024-03-01"
    cards, _ = sign(live, [order(CLOPIDOGREL)], [report, geno])
    assert pm_card(cards), summaries(cards)


# --- item 7: only the context patient ------------------------------------------------------------------

def test_another_patients_observation_is_not_used_and_the_audit_says_so(live):
    foreign = lab("CYP2C19 genotype", oid="someone-else", patient="other-patient", valueString="*2/*2")
    cards, row = sign(live, [order(CLOPIDOGREL)], [foreign])
    assert not pm_card(cards)
    assert "Observation/someone-else: its subject is not the patient of this request; not used" in row["reasons"]


def test_another_patients_order_is_not_used(live):
    theirs = order(CLOPIDOGREL, subject={"reference": "Patient/other-patient"})
    cards, row = sign(live, [theirs], [lab("CYP2C19 genotype", valueString="*2/*2")])
    assert cards == []
    assert row["unresolved"] == []
    assert any("MedicationRequest/o1: its subject is not the patient" in r for r in row["reasons"])


@pytest.mark.parametrize("patient_id", ["Patient/123/_history/4", "123&subject=456", "../Patient/9", "a" * 65])
def test_a_malformed_patient_id_is_refused(live, patient_id):
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/x", "patientId": patient_id,
                        "draftOrders": {"resourceType": "Bundle", "entry": []}}, "prefetch": {}}
    response = live.call("pgx-order-sign", body)
    assert response.status_code == 400 and response.json()["field"] == "context.patientId", response.text


# --- item 8: orders that used to resolve to nothing -----------------------------------------------------

PM = [lab("CYP2C19 genotype", valueString="*2/*2")]


@pytest.mark.parametrize("concept", [
    pytest.param({"text": "Plavix 75 mg tablet"}, id="brand-name-alone"),
    pytest.param({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "309362"}]}, id="rxnorm-oid"),
    pytest.param({"coding": [{"system": RXNORM + "/", "code": "309362"}]}, id="rxnorm-trailing-slash"),
    pytest.param({"coding": [{"system": RXNORM, "code": "2001001001", "display": "clopidogrel 97 MG Oral Tablet"}]},
                 id="rxnorm-product-not-in-table"),
    pytest.param({"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AC04"}]}, id="atc"),
])
def test_orders_that_resolve_now(live, concept):
    cards, row = sign(live, [order(concept)], PM)
    assert pm_card(cards), summaries(cards)
    assert row["unresolved"] == []


def test_a_dstu2_medication_order_from_a_cds_hooks_1_client(live):
    """FHIR DSTU2 MedicationOrder (patient, not subject; hl7.org/fhir/DSTU2/medicationorder.html) in the
    CDS Hooks 1.0 medication-prescribe hook's `medications`."""
    dstu2 = {"resourceType": "MedicationOrder", "id": "mo1", "status": "draft",
             "patient": {"reference": f"Patient/{PATIENT}"}, "medicationCodeableConcept": CLOPIDOGREL}
    cards, _ = sign(live, [dstu2], PM, service="pgx-medication-prescribe")
    assert pm_card(cards), summaries(cards)


@pytest.mark.parametrize("concept,why", [
    pytest.param({"coding": [{"system": "http://snomed.info/sct", "code": "319769008"}]}, "snomed-ct-not-mapped",
                 id="snomed-only"),
    pytest.param({"coding": [{"system": RXNORM, "code": "309362"}, {"system": RXNORM, "code": "198211"}]},
                 "conflicting-codes", id="codes-naming-two-drugs"),
    pytest.param({"coding": [{"system": RXNORM, "code": "309362", "display": "simvastatin 40 MG Oral Tablet"}]},
                 "conflicting-codes", id="code-and-text-disagree"),
    pytest.param({"coding": [{"system": RXNORM, "code": "2001001002"}]}, "rxnorm-code-not-in-product-table",
                 id="unknown-rxnorm-code"),
])
def test_orders_we_cannot_identify_are_audited_by_code_and_system(live, concept, why):
    cards, row = sign(live, [order(concept)], PM)
    assert not pm_card(cards)
    [entry] = row["unresolved"]
    assert entry.endswith(f"({why})")
    first = concept["coding"][0]
    assert entry.startswith("rxnorm:" + first["code"] if first["system"] == RXNORM else f"{first['system']}|{first['code']}")


def test_an_order_whose_codes_name_two_knowledge_base_drugs_gets_a_card(live):
    """Refused, not settled to the first code: and since either drug could be the one meant, the
    clinician is told the pharmacogenomic check was not done."""
    both = {"coding": [{"system": RXNORM, "code": "309362"}, {"system": RXNORM, "code": "198211"}]}
    cards, row = sign(live, [order(both)], PM)
    assert summaries(cards) == ["Order could not be identified: its codes name clopidogrel and simvastatin — "
                                "pharmacogenomic check not done"]
    assert row["unresolved"] == ["rxnorm:309362, rxnorm:198211 (conflicting-codes)"]


def test_an_unknown_product_gets_no_card_but_is_counted(live):
    cards, row = sign(live, [order({"coding": [{"system": RXNORM, "code": "2001001003"}]})], PM)
    assert cards == [] and row["unresolved"] == ["rxnorm:2001001003 (rxnorm-code-not-in-product-table)"]


def test_codeine_free_cough_syrup_is_not_codeine(live):
    cyp2d6_pm = [lab("CYP2D6 genotype", valueString="*4/*4")]
    cards, row = sign(live, [order({"text": "Codeine-free cough syrup"})], cyp2d6_pm)
    assert not any(s.startswith("Codeine") for s in summaries(cards)), summaries(cards)
    assert row["unresolved"] == ['text:Codeine-free cough syrup (not-resolved)']


# --- item 9: counted and visible -----------------------------------------------------------------------

def test_unresolved_orders_and_reasons_in_the_report_and_the_workbench(live):
    from cds.store.report import format_report

    sign(live, [order({"coding": [{"system": "http://snomed.info/sct", "code": "319769008"}]}, oid="sn")], PM)
    sign(live, [order(CLOPIDOGREL)], [lab("CYP2C19 genotype", oid="x1", patient="someone", valueString="*2/*2")])
    live.runtime.store.flush(timeout=10)
    report = live.runtime.store.report()
    table = format_report(report)
    assert "orders we could not identify, by code/system" in table
    assert "http://snomed.info/sct|319769008 (snomed-ct-not-mapped)" in table
    assert "results and orders on file that were not used" in table
    assert "its subject is not the patient of this request; not used" in table
    page = requests.get(f"{live.url}/workbench/statistics", timeout=30)
    assert page.status_code == 200
    assert "Orders we could not identify, by code/system" in page.text
    assert "http://snomed.info/sct|319769008 (snomed-ct-not-mapped)" in page.text
    assert "Results and orders on file that were not used" in page.text


# --- every case, prefetched and fetched from the EHR's FHIR server ----------------------------------------
# Each case below is one shape the issue names, run twice through the running service with the same
# expected outcome:
#   prefetch  the EHR sends what is on file in the prefetch (CDS Hooks 2.0, "Prefetch Template"):
#             Observations under `genomics`, DiagnosticReports under `reports`, the Patient under
#             `patient`, an order's Medication beside it in draftOrders; no fhirServer.
#   fetched   no prefetch at all: what is on file is on a loopback FHIR R4 server (tests/fhir_server.py)
#             given as `fhirServer` (CDS Hooks 2.0, "FHIR Resource Access"), which the service searches by
#             patient and code (FHIR R4 search.html#token), one entry a page so every search is paged
#             (http.html#paging), with Genomics Reports and their results (search.html#include) and
#             Medications read by reference (http.html#read).
# A lab's own result code is not among the codes the service searches for (guidelines/fhir-mappings.yaml),
# so such results are on file inside the laboratory's Genomics Report, as labs deliver them (HL7 Genomics
# Reporting IG 3.0.0 genomic-report: DiagnosticReport.result references the results).

ADULT = {"resourceType": "Patient", "id": PATIENT, "birthDate": "1970-01-01"}
PM_CARD = "Clopidogrel: CYP2C19 Poor Metabolizer — avoid; use prasugrel or ticagrelor if no contraindication"
CANNOT = "Clopidogrel: pharmacogenomic check could not be completed"


def genomics_report(rid: str, *results: dict, **changes) -> list[dict]:
    """A Genomics Report holding `results` by reference, with them: shaped as IG 3.0.0
    DiagnosticReport-PGxGenomicReportEMERGE (category v2-0074 GE, LOINC 51969-4 'Genetic analysis report')."""
    report = {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4", "display": "Genetic analysis report"}]},
              "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": "2024-03-01",
              "result": [{"reference": f"Observation/{r['id']}"} for r in results], **changes}
    return [report, *results]


def _pm_text(text: str) -> dict:
    geno = ig_genotype(id="fetched-geno")
    geno["valueCodeableConcept"] = {"text": text}
    return geno


def _component_genotype() -> dict:
    geno = ig_genotype(id="fetched-component")
    value = geno.pop("valueCodeableConcept")
    geno["component"].append({"code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                              "valueCodeableConcept": value})
    return geno


def _per_gene_loinc(code: str) -> dict:
    """The PharmCAT-based pipeline's genotype Observation (issue 10's lab bundle): a per-gene LOINC code whose
    display names the gene, the value as text."""
    return {"resourceType": "Observation", "id": f"pharmcat-{code}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code,
                                 "display": "CYP2C19 gene product metabolic activity interpretation"}]},
            "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": "2024-03-01",
            "valueCodeableConcept": {"text": "Poor Metabolizer"}}


def _contained_report(**changes) -> list[dict]:
    report = load("built/diagnosticreport-contained-cyp2c19.json")
    report["subject"] = {"reference": f"Patient/{PATIENT}"}
    for contained in report.get("contained", []):
        contained["subject"] = {"reference": f"Patient/{PATIENT}"}
    report.update(changes)
    return [report]


def _gl_string_hla_b(**changes) -> dict:
    """IG 3.0.0 Observation-genotype-hla-a-glstring-r4, for HLA-B, with a '/' (an ambiguity in GL String)."""
    gl = load("shared/ig-stu3/Observation-genotype-hla-a-glstring-r4.json")
    gl["subject"] = {"reference": f"Patient/{PATIENT}"}
    gl["valueCodeableConcept"] = {"coding": [{"system": "http://glstring.org",
                                              "code": "hla#3.31.0#HLA-B*57:01:01/HLA-B*57:03+HLA-B*08:01"}]}
    for comp in gl.get("component", []):
        if comp["code"]["coding"][0]["code"] == "48018-6":
            comp["valueCodeableConcept"] = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:4932",
                                                        "display": "HLA-B"}]}
    gl.update(changes)
    return gl


def _medication_by_reference() -> list[dict]:
    code, display = CLOPIDOGREL["coding"][0]["code"], CLOPIDOGREL["coding"][0]["display"]
    return [{"resourceType": "Medication", "id": "med-clopidogrel",
             "code": {"coding": [{"system": RXNORM, "code": code, "display": display}]}}]


ABACAVIR = {"coding": [{"system": RXNORM, "code": "242679", "display": "abacavir 300 MG Oral Tablet"}]}
FLUOROURACIL = {"coding": [{"system": RXNORM, "code": "4492", "display": "fluorouracil"}]}
GENTAMICIN = {"coding": [{"system": RXNORM, "code": "4413", "display": "gentamicin"}]}
CARBAMAZEPINE = {"coding": [{"system": RXNORM, "code": "197441", "display": "Carbamazepine 100 MG Oral Tablet"}]}
VORICONAZOLE = {"coding": [{"system": RXNORM, "code": "121243", "display": "voriconazole"}]}


@dataclass(frozen=True)
class Outcome:
    summaries: tuple[str, ...]                # the cards' summaries, exactly, in order
    reasons: tuple[str, ...] = ()             # each a part of an audited reason (results, orders or retrieval)
    unresolved: tuple[str, ...] = ()          # the audit's orders we could not identify, exactly
    details: tuple[str, ...] = ()             # each a part of some card's detail


@dataclass(frozen=True)
class Case:
    on_file: Callable[[], list[dict]]         # what the EHR holds (results, reports, Medications)
    outcome: Outcome
    orders: Callable[[], list[dict]] = lambda: [order(CLOPIDOGREL)]
    service: str = "pgx-order-sign"
    patient: dict = field(default_factory=lambda: copy.deepcopy(ADULT))
    prefetched: dict = field(default_factory=dict)      # prefetch: keys the EHR fills with this instead
    misbehave: tuple[tuple[str, str | None], ...] = ()  # fetched: (kind, resource type) of tests/fhir_server.py


GIVES_PM = Outcome((PM_CARD,))
CASES = {
    # item 1: per-gene LOINC codes (issue 10's PharmCAT-based lab bundle), read by the gene they display
    "loinc-79712-6 (PharmCAT lab bundle)": Case(lambda: [_per_gene_loinc("79712-6")], GIVES_PM),
    "loinc-79713-4 (PharmCAT lab bundle)": Case(lambda: [_per_gene_loinc("79713-4")], GIVES_PM),
    "loinc-79714-2 (PharmCAT lab bundle)": Case(lambda: [_per_gene_loinc("79714-2")], GIVES_PM),
    "IG-3.0.0-genotype-84413-4 (Observation-Pgx-geno-1001)": Case(lambda: [ig_genotype()], GIVES_PM),
    # item 2: results reachable only through a DiagnosticReport
    "result-by-reference-only (IG 3.0.0 genomic-report, lab code)": Case(lambda: genomics_report(
        "ge-report", lab("CYP2C19 genotype", oid="reported-geno", valueString="*2/*2")), GIVES_PM),
    "contained-results (IG 3.0.0 Pgx-geno-1001 + TxImp01 in a report, no category)": Case(_contained_report, GIVES_PM),
    "contained-results (the same report, category GE)": Case(lambda: _contained_report(category=[{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}]), GIVES_PM),
    # item 3: lab text, systems, components, allele spellings
    "stated-phenotype '*2/*3 (Poor Metabolizer)' (lab text)": Case(
        lambda: [_pm_text("CYP2C19 *2/*3 (Poor Metabolizer)")], GIVES_PM),
    "stated-phenotype-contradicts '*1/*1 (Poor Metabolizer)' (lab text)": Case(
        lambda: [_pm_text("CYP2C19 *1/*1 (Poor Metabolizer)")],
        Outcome(("Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible",))),
    "https-pharmvar-system (genomics-operations outputs)": Case(lambda: [ig_genotype(id="fetched-https", valueCodeableConcept={
        "coding": [{"system": "https://www.pharmvar.org", "code": "CYP2C19*2/*2"}]})], GIVES_PM),
    "genotype-in-component (lab bundle)": Case(lambda: [_component_genotype()], GIVES_PM),
    "HLA-B*5701 (pre-2010 HLA nomenclature, Marsh 2010; lab report)": Case(
        lambda: genomics_report("hla-report", lab("HLA-B*5701 screen", oid="hla-5701", valueString="Positive")),
        Outcome(("Abacavir: HLA-B*57:01 positive — abacavir is not recommended (hypersensitivity risk)",)), orders=lambda: [order(ABACAVIR)]),
    "DPYD *2A (lab spelling of CPIC c.1905+1G>A (*2A); lab report)": Case(
        lambda: genomics_report("dpyd-report", lab("DPYD genotype", oid="dpyd-2a", valueString="DPYD *2A/*2A")),
        Outcome(("Fluorouracil: DPYD Poor Metabolizer — Avoid use of 5-fluorouracil or 5-fluorouracil prodrug-based regimens",)), orders=lambda: [order(FLUOROURACIL)]),
    "MT-RNR1 1555A>G (HGVS m. prefix dropped; lab report)": Case(
        lambda: genomics_report("mt-report", lab("MT-RNR1 variant", oid="mt-1555", valueString="MT-RNR1 1555A>G")),
        Outcome(("Gentamicin: MT-RNR1 increased risk of aminoglycoside-induced hearing loss — alternative drug advised — see detail",)),
        orders=lambda: [order(GENTAMICIN)]),
    # item 4: several results, each on its own page when fetched; the decisive one last
    "paged-results (FHIR R4 http.html#paging)": Case(lambda: [
        ig_genotype(id="a1", component=[_gene_component("CYP2D6", "HGNC:2625")],
                    valueCodeableConcept={"text": "*1/*1"}),
        ig_genotype(id="a2", component=[_gene_component("CYP3A5", "HGNC:2638")],
                    valueCodeableConcept={"text": "*3/*3"}),
        ig_genotype(id="a3")], GIVES_PM),
    # item 5: an OperationOutcome where the genomics search's Bundle should be (CDS Hooks 2.0 Prefetch Template)
    "operation-outcome-instead-of-results (CDS Hooks 2.0 Prefetch Template)": Case(
        lambda: [ig_genotype()], Outcome((CANNOT,), reasons=("OperationOutcome",)),
        prefetched={"genomics": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "too-costly", "diagnostics": "search failed"}]}},
        misbehave=(("outcome", "Observation"),)),
    # item 6: a result on file that cannot be read
    "ambiguous-GL-string-in-its-report (IG 3.0.0 DiagnosticReport-diagnosticreport-hla-glstring-r4)": Case(
        lambda: genomics_report("hla-gl-report", _gl_string_hla_b()),
        Outcome(("Abacavir: HLA-B result on file could not be interpreted — review it before prescribing",),
                reasons=("GL string is ambiguous",), details=("genotype-hla-a-glstring-r4", "GL string is ambiguous")),
        orders=lambda: [order(ABACAVIR)]),
    "ambiguous-GL-string (IG 3.0.0 Observation-genotype-hla-a-glstring-r4, for HLA-B)": Case(
        lambda: [_gl_string_hla_b()],
        Outcome(("Abacavir: HLA-B result on file could not be interpreted — review it before prescribing",),
                reasons=("GL string is ambiguous",), details=("genotype-hla-a-glstring-r4", "GL string is ambiguous")),
        orders=lambda: [order(ABACAVIR)]),
    # item 6, beside an older readable result: the newest result counts (cds/fhir/selection.py rule 5), so a
    # newer one that cannot be read is said, and the older one it replaces is named, never used silently
    "newer-unreadable-beside-older-readable (IG 3.0.0 GL string 2024; lab HLA-B*57:01 negative 2019)": Case(
        lambda: [_gl_string_hla_b(effectiveDateTime="2024-01-01"), *genomics_report(
            "hla-2019", lab("HLA-B*57:01", oid="older-negative", valueString="Negative",
                            effectiveDateTime="2019-01-01"), effectiveDateTime="2019-01-01")],
        Outcome(("Abacavir: HLA-B result on file could not be interpreted — review it before prescribing",),
                reasons=("Observation/older-negative (HLA-B): superseded by Observation/genotype-hla-a-glstring-r4 "
                         "(2024-01-01), a newer result that could not be read", "GL string is ambiguous"),
                details=("GL string is ambiguous", "Observation/older-negative (2019-01-01)\\: older, not used in its place")),
        orders=lambda: [order(ABACAVIR)]),
    # item 6 per allele: an HLA-B*57:01 result that cannot be read beside a readable HLA-B*15:02 one is
    # still a result on file for abacavir (no "test first"), while carbamazepine keeps its *15:02 advice
    "unreadable-allele-beside-readable-other-allele (lab report, HLA-B*57:01 Inconclusive)": Case(
        lambda: genomics_report("hla-two", lab("HLA-B*15:02", oid="b1502", valueString="Negative"),
                                lab("HLA-B*57:01", oid="b5701", valueString="Inconclusive")),
        Outcome(("Abacavir: HLA-B result on file could not be interpreted — review it before prescribing",),
                reasons=("Observation/b5701 (HLA-B lab): the value is not a HLA-B typing or allele status",),
                details=("Observation/b5701",)),
        orders=lambda: [order(ABACAVIR)]),
    "readable-allele-beside-unreadable-other-allele (the same lab report, carbamazepine rests on HLA-B*15:02)": Case(
        lambda: genomics_report("hla-two", lab("HLA-B*15:02", oid="b1502", valueString="Negative"),
                                lab("HLA-B*57:01", oid="b5701", valueString="Inconclusive")),
        Outcome((), reasons=("carbamazepine: no card — CPIC recommendation matched (Strong)",
                             "Observation/b5701 (HLA-B lab): the value is not a HLA-B typing or allele status")),
        orders=lambda: [order(CARBAMAZEPINE)]),
    "newer-unreadable-codings-disagree (IG 3.0.0 Pgx-geno-1001 2024, older *1/*1 2019)": Case(
        lambda: [ig_genotype(id="older-nm", effectiveDateTime="2019-04-01", valueCodeableConcept={"text": "*1/*1"}),
                 ig_genotype(id="newer-unreadable", effectiveDateTime="2024-03-01", valueCodeableConcept={
                     "coding": [{"system": "http://www.ncbi.nlm.nih.gov/clinvar", "code": "638797",
                                 "display": "CYP2C19*2/*2"}], "text": "CYP2C19 *1/*1"})],
        Outcome(("Clopidogrel: CYP2C19 result on file could not be interpreted — review it before prescribing",),
                reasons=("superseded by Observation/newer-unreadable (2024-03-01), a newer result that could not be read",),
                details=("Observation/newer-unreadable", "codings and text disagree",
                         "Observation/older-nm (2019-04-01)\\: older, not used in its place"))),
    "older-unreadable-beside-newer-readable (IG 3.0.0 Pgx-geno-1001)": Case(
        lambda: [ig_genotype(id="older-unreadable", effectiveDateTime="2015-01-01", valueCodeableConcept={
                     "coding": [{"system": "http://www.ncbi.nlm.nih.gov/clinvar", "code": "638797",
                                 "display": "CYP2C19*2/*2"}], "text": "CYP2C19 *1/*1"}), ig_genotype()],
        Outcome((PM_CARD,), reasons=("Observation/older-unreadable (CYP2C19 genotype): the value's codings and text "
                                     "disagree",))),
    # item 7: only the context patient's results and orders (the server returns another patient's too)
    "another-patients-result-in-this-patients-report (FHIR R4 DiagnosticReport.result)": Case(
        lambda: genomics_report("mixed", ig_genotype(id="theirs", subject={"reference": "Patient/other-patient"})),
        Outcome((), reasons=("Observation/theirs: its subject is not the patient of this request; not used",
                             "clopidogrel: no card — no CYP2C19 result on file"))),
    "another-patients-report-with-contained-results": Case(
        lambda: _contained_report(subject={"reference": "Patient/other-patient"}),
        Outcome((), reasons=("DiagnosticReport/contained-pgx-report: its subject is not the patient of this request",
                             "clopidogrel: no card — no CYP2C19 result on file")),
        misbehave=(("ignore-patient", None),)),
    "another-patients-result (FHIR R4 Observation.subject)": Case(
        lambda: [ig_genotype(id="someone-else", subject={"reference": "Patient/other-patient"})],
        Outcome((), reasons=("Observation/someone-else: its subject is not the patient of this request; not used",
                             "clopidogrel: no card — no CYP2C19 result on file")),
        misbehave=(("ignore-patient", None),)),
    "another-patients-order (FHIR R4 MedicationRequest.subject)": Case(
        lambda: [ig_genotype()], Outcome((), reasons=("MedicationRequest/o1: its subject is not the patient",)),
        orders=lambda: [order(CLOPIDOGREL, subject={"reference": "Patient/other-patient"})]),
    # item 8: orders (CDS Hooks 2.0 order-sign draftOrders; RxNorm from ../shared/rxnorm)
    "brand-name-alone 'Plavix 75 mg tablet'": Case(lambda: [ig_genotype()], GIVES_PM,
                                                   orders=lambda: [order({"text": "Plavix 75 mg tablet"})]),
    "rxnorm-as-oid (HL7 THO NamingSystem RxNorm 2.16.840.1.113883.6.88)": Case(lambda: [ig_genotype()], GIVES_PM, orders=lambda: [
        order({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "309362"}]})]),
    "rxnorm-trailing-slash": Case(lambda: [ig_genotype()], GIVES_PM, orders=lambda: [
        order({"coding": [{"system": RXNORM + "/", "code": "309362"}]})]),
    "rxnorm-product-not-in-table (display names the ingredient)": Case(lambda: [ig_genotype()], GIVES_PM, orders=lambda: [
        order({"coding": [{"system": RXNORM, "code": "2001001001", "display": "clopidogrel 97 MG Oral Tablet"}]})]),
    "atc-B01AC04 (CPIC drug table, WHO ATC)": Case(lambda: [ig_genotype()], GIVES_PM, orders=lambda: [
        order({"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AC04"}]})]),
    "medication-reference (FHIR R4 MedicationRequest.medicationReference)": Case(
        lambda: [ig_genotype(), *_medication_by_reference()], GIVES_PM,
        orders=lambda: [order(medicationReference={"reference": "Medication/med-clopidogrel"})]),
    "dstu2-medication-order (FHIR DSTU2 medicationorder.html, CDS Hooks 1.0 medication-prescribe)": Case(
        lambda: [ig_genotype()], GIVES_PM, service="pgx-medication-prescribe",
        orders=lambda: [{"resourceType": "MedicationOrder", "id": "mo1", "status": "draft",
                         "patient": {"reference": f"Patient/{PATIENT}"}, "medicationCodeableConcept": CLOPIDOGREL}]),
    "codes-naming-two-drugs (refused, not settled to the first)": Case(
        lambda: [ig_genotype()],
        Outcome(("Order could not be identified: its codes name clopidogrel and simvastatin — "
                 "pharmacogenomic check not done",), unresolved=("rxnorm:309362, rxnorm:198211 (conflicting-codes)",)),
        orders=lambda: [order({"coding": [{"system": RXNORM, "code": "309362"}, {"system": RXNORM, "code": "198211"}]})]),
    "snomed-ct-only (no cited SNOMED CT -> RxNorm map)": Case(
        lambda: [ig_genotype()], Outcome((), unresolved=("http://snomed.info/sct|319769008 (snomed-ct-not-mapped)",)),
        orders=lambda: [order({"coding": [{"system": "http://snomed.info/sct", "code": "319769008"}]})]),
    "rxnorm-product-unknown": Case(
        lambda: [ig_genotype()], Outcome((), unresolved=("rxnorm:2001001003 (rxnorm-code-not-in-product-table)",)),
        orders=lambda: [order({"coding": [{"system": RXNORM, "code": "2001001003"}]})]),
    "codeine-free-cough-syrup (text only)": Case(
        lambda: genomics_report("c2d6-report", lab("CYP2D6 genotype", oid="cyp2d6-pm", valueString="*4/*4")),
        Outcome((), unresolved=("text:Codeine-free cough syrup (not-resolved)",)),
        orders=lambda: [order({"text": "Codeine-free cough syrup"})]),
    # item 10: no birth date, advice that differs by age group: one card naming each population
    "no-birthDate-voriconazole (FHIR R4 Patient.birthDate 0..1)": Case(
        lambda: [ig_genotype()],
        Outcome(("Voriconazole: CYP2C19 Poor Metabolizer — change of drug or dose advised; differs by age group — see detail",),
                details=("the request does not say which applies", "- **Adults** (", "- **Children (pediatrics)** (")),
        orders=lambda: [order(VORICONAZOLE)], patient={"resourceType": "Patient", "id": PATIENT}),
}


def _gene_component(symbol: str, hgnc: str) -> dict:
    return {"code": {"coding": [{"code": "48018-6", "system": "http://loinc.org"}]},
            "valueCodeableConcept": {"coding": [{"code": hgnc, "system": "http://www.genenames.org", "display": symbol}]}}


def _call(live, case: Case, how: str) -> tuple[list[dict], dict]:
    """One hook call for `case`, `how` = "prefetch" or "fetched"; the cards and the call's audit row."""
    on_file = case.on_file()
    orders = case.orders()
    medications = [r for r in on_file if r["resourceType"] == "Medication"]
    context = {"userId": "Practitioner/example", "patientId": PATIENT}
    if case.service == "pgx-medication-prescribe":
        hook, key = "medication-prescribe", "medications"
    else:
        hook, key = "order-sign", "draftOrders"
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    server = None
    if how == "prefetch":
        context[key] = {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": r} for r in orders + medications]}
        body["prefetch"] = {
            "patient": case.patient,
            "genomics": searchset(*(r for r in on_file if r["resourceType"] == "Observation")),
            "reports": searchset(*(r for r in on_file if r["resourceType"] == "DiagnosticReport")),
            **case.prefetched}
    else:
        from fhir_server import FhirTestServer

        context[key] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in orders]}
        server = FhirTestServer(page_size=1)
        server.add(case.patient, *on_file)
        for kind, only in case.misbehave:
            server.misbehave(kind, only=only)
        body["fhirServer"] = server.url
    try:
        response = live.call(case.service, body)
        assert response.status_code == 200, response.text
        if server is not None:
            assert server.searched("Observation"), server.requests
        return response.json()["cards"], audit(live, body["hookInstance"])
    finally:
        if server is not None:
            server.stop()


@pytest.mark.parametrize("how", ["prefetch", "fetched"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_case_prefetched_and_fetched(live, name, how):
    case = CASES[name]
    cards, row = _call(live, case, how)
    assert tuple(summaries(cards)) == case.outcome.summaries, (summaries(cards), row)
    said = row["reasons"] + row["fhir_errors"]
    assert len(said) == len(set(said)), said          # a result reached twice is said once
    for part in case.outcome.reasons:
        assert any(part in r for r in said), (part, said)
    assert tuple(row["unresolved"]) == case.outcome.unresolved, row
    details = " ".join(c["detail"] for c in cards)
    for part in case.outcome.details:
        assert part in details, (part, details)


# --- item 10: a patient without a birth date, advice that differs by age group ----------------------------

@pytest.mark.parametrize("patient", [
    pytest.param({"resourceType": "Patient", "id": PATIENT}, id="no-birthDate"),
    pytest.param({"resourceType": "Patient", "id": PATIENT, "birthDate": {"not": "a date"}}, id="birthDate-not-a-date"),
])
def test_no_birth_date_reaches_the_cards_as_unknown_age(live, patient):
    """CPIC's voriconazole advice for a CYP2C19 poor metabolizer differs for adults and pediatrics
    (cpic_recommendations_v1.54.tsv, population). With no usable birth date neither population is chosen
    for the patient: exactly one voriconazole card, whose detail names each population with its own
    advice (not two contrary cards). With a birth date, the one card gives the adults' advice alone."""
    cards, row = sign(live, [order(VORICONAZOLE)], PM, patient=patient)
    assert summaries(cards) == ["Voriconazole: CYP2C19 Poor Metabolizer — change of drug or dose advised; "
                                "differs by age group — see detail"]
    detail = cards[0]["detail"]
    assert "the request does not say which applies" in detail
    adults, children = detail.index("- **Adults** ("), detail.index("- **Children (pediatrics)** (")
    assert "isavuconazole" in detail[adults:children] and "isavuconazole" not in detail[children:]
    dated = {"resourceType": "Patient", "id": PATIENT, "birthDate": "1970-01-01"}
    adult_cards, _ = sign(live, [order(VORICONAZOLE)], PM, patient=dated)
    assert len(adult_cards) == 1 and adult_cards[0]["summary"].startswith("Voriconazole: CYP2C19 Poor Metabolizer")
    assert "isavuconazole" in adult_cards[0]["detail"]
    assert "pediatric" not in adult_cards[0]["detail"].lower() and "differs by age group" not in adult_cards[0]["detail"]


def test_patient_view_says_an_unreadable_allele_beside_a_readable_one(engine):
    """patient-view's summary of the same lab report names the HLA-B result it could not interpret."""
    from cds.decision import PatientCase, decide
    from cds.pipeline import Advisor

    resources = genomics_report("hla-two", lab("HLA-B*15:02", oid="b1502", valueString="Negative"),
                                lab("HLA-B*57:01", oid="b5701", valueString="Inconclusive"))
    advice = decide(Advisor.build(engine), PatientCase(hook="patient-view", patient_ref=f"Patient/{PATIENT}",
                                                       genomics=resources))
    notices = [c.card for c in advice.cards if "could not be interpreted" in c.card["summary"]]
    assert [n["summary"] for n in notices] == ["Pharmacogenomic results on file could not be interpreted: HLA-B"]
    assert "Observation/b5701" in notices[0]["detail"]
