"""Issue 10 through the running service (tests/live_service.py, the app as create_app builds it, with a
SQLite audit store): every shape of result and order the issue names gives the CPIC card, or a card or an
audited reason saying what could not be read. FHIR JSON is shaped as the source each test cites.

Result shapes build on HL7 Genomics Reporting IG 3.0.0 (STU3) Observation-Pgx-geno-1001 (genotype, LOINC
84413-4, gene-studied component 48018-6) and on the lab-style Observation of tests/fixtures/fhir/built
(the gene in the lab's own code, the value as text, after FHIR R4 observation-example-TPMT-diplotype).
Orders build on the CDS Hooks 2.0 order-sign example (cds-hooks/docs, R4 MedicationRequest) and RxNorm
codes from ../shared/rxnorm/scd_sbd_to_ingredient.tsv (309362 clopidogrel 75 MG Oral Tablet, 213169 Plavix)."""
from __future__ import annotations

import copy
import json
import uuid

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
    server = LiveServer(create_app(Settings(auth_mode="off", fhir_timeout=0.5, fhir_budget=1.0), store=store))
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
                         "genomics": {"resourceType": "Bundle", "type": "searchset",
                                      "entry": [{"resource": o} for o in observations]}}}
    response = live.call(service, body)
    assert response.status_code == 200, response.text
    return response.json()["cards"], audit(live, instance)


def audit(live, instance: str) -> dict:
    assert live.runtime.store.flush(timeout=10)
    with live.db.connect() as conn:
        row = conn.execute(text("SELECT unresolved_drugs, reasons FROM cds_call WHERE hook_instance = :i"),
                           {"i": instance}).one()
    unresolved, reasons = (json.loads(v) if isinstance(v, str) else v for v in row)
    return {"unresolved": unresolved, "reasons": reasons}


def summaries(cards: list[dict]) -> list[str]:
    return [c["summary"] for c in cards]


def pm_card(cards: list[dict]) -> bool:
    return any(s.startswith("Clopidogrel: CYP2C19 Poor Metabolizer") for s in summaries(cards))


# --- item 3: lab text, systems, components, allele spellings --------------------------------------------

def test_lab_diplotype_with_its_stated_phenotype_gives_the_cpic_card(live):
    cards, _ = sign(live, [order(CLOPIDOGREL)], [lab("CYP2C19 genotype", valueString="*2/*3 (Poor Metabolizer)")])
    assert pm_card(cards), summaries(cards)


def test_lab_diplotype_that_contradicts_its_stated_phenotype_is_a_conflict(live):
    cards, _ = sign(live, [order(CLOPIDOGREL)], [lab("CYP2C19 genotype", valueString="*1/*1 (Poor Metabolizer)")])
    assert summaries(cards) == ["Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]


def test_pharmvar_system_written_as_its_https_address(live):
    """Genomics-operations outputs write PharmVar's own https URL as the system, the code only."""
    geno = ig_genotype(valueCodeableConcept={"coding": [{"system": "https://www.pharmvar.org", "code": "CYP2C19*2/*2"}]})
    cards, _ = sign(live, [order(CLOPIDOGREL)], [geno])
    assert pm_card(cards), summaries(cards)


def test_genotype_given_in_a_component_rather_than_the_value(live):
    geno = ig_genotype()
    value = geno.pop("valueCodeableConcept")
    geno["component"].append({"code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                              "valueCodeableConcept": value})
    cards, _ = sign(live, [order(CLOPIDOGREL)], [geno])
    assert pm_card(cards), summaries(cards)


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

def test_results_contained_in_a_diagnostic_report(live):
    report = load("built/diagnosticreport-contained-cyp2c19.json")
    report["subject"] = {"reference": f"Patient/{PATIENT}"}
    for contained in report.get("contained", []):
        contained["subject"] = {"reference": f"Patient/{PATIENT}"}
    cards, _ = sign(live, [order(CLOPIDOGREL)], [report])
    assert pm_card(cards), summaries(cards)


def test_results_referenced_by_a_diagnostic_report_in_the_same_bundle(live):
    geno = ig_genotype()
    report = {"resourceType": "DiagnosticReport", "id": "pgx-report", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]},
              "subject": {"reference": f"Patient/{PATIENT}"}, "result": [{"reference": "Observation/Pgx-geno-1001"}]}
    geno.pop("effectiveDateTime", None)    # dated by its report only
    report["effectiveDateTime"] = "2024-03-01"
    cards, _ = sign(live, [order(CLOPIDOGREL)], [report, geno])
    assert pm_card(cards), summaries(cards)


# --- item 6: a result on file that cannot be read ------------------------------------------------------

def test_an_ambiguous_hla_b_gl_string_says_a_result_is_on_file(live):
    """GL String: '/' separates alternatives (an ambiguity). IG STU3 Observation-genotype-hla-a-glstring-r4
    shape, for HLA-B."""
    gl = load("shared/ig-stu3/Observation-genotype-hla-a-glstring-r4.json")
    gl["subject"] = {"reference": f"Patient/{PATIENT}"}
    gl["valueCodeableConcept"] = {"coding": [{"system": "http://glstring.org",
                                              "code": "hla#3.31.0#HLA-B*57:01:01/HLA-B*57:03+HLA-B*08:01"}]}
    for comp in gl.get("component", []):
        if comp["code"]["coding"][0]["code"] == "48018-6":
            comp["valueCodeableConcept"] = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:4932",
                                                        "display": "HLA-B"}]}
    abacavir = {"coding": [{"system": RXNORM, "code": "242679", "display": "abacavir 300 MG Oral Tablet"}]}
    cards, row = sign(live, [order(abacavir)], [gl])
    assert summaries(cards) == ["Abacavir: HLA-B result on file could not be interpreted — review it before prescribing"]
    assert "GL string is ambiguous" in cards[0]["detail"] and gl["id"] in cards[0]["detail"]
    assert any("GL string is ambiguous" in r for r in row["reasons"])


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


# --- the same shapes fetched from the EHR's FHIR server ---------------------------------------------------
# tests/fhir_server.py: a loopback FHIR R4 server searched by patient and code (search.html#token), paging,
# DiagnosticReports. Only shapes coded with a code the mappings search for can be fetched: a lab's own code
# (the lab-style shapes above) is found by a prefetch the EHR fills, or once the site adds its code to
# guidelines/fhir-mappings.yaml (docs/fhir-reading.md).

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


def _report_and_result() -> list[dict]:
    geno = ig_genotype(id="reported-geno")
    report = {"resourceType": "DiagnosticReport", "id": "ge-report", "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]},
              "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": "2024-03-01",
              "result": [{"reference": "Observation/reported-geno"}]}
    geno["code"] = {"coding": [{"system": "http://acme-lab.example/order-codes", "code": "PGX",
                                "display": "CYP2C19 genotype"}]}      # found only through its report
    return [report, geno]


@pytest.mark.parametrize("resources,expected", [
    pytest.param(lambda: [_pm_text("CYP2C19 *2/*3 (Poor Metabolizer)")], "pm", id="stated-phenotype"),
    pytest.param(lambda: [ig_genotype(id="fetched-https", valueCodeableConcept={
        "coding": [{"system": "https://www.pharmvar.org", "code": "CYP2C19*2/*2"}]})], "pm", id="https-pharmvar"),
    pytest.param(lambda: [_component_genotype()], "pm", id="genotype-in-component"),
    pytest.param(_report_and_result, "pm", id="result-only-through-its-report"),
])
def test_fetched_from_the_fhir_server(live, resources, expected):
    from fhir_server import FhirTestServer

    server = FhirTestServer(page_size=1)           # one entry a page: the reader sees every page
    try:
        server.add(*resources())
        body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                "context": {"userId": "Practitioner/example", "patientId": PATIENT,
                            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order(CLOPIDOGREL)}]}},
                "prefetch": {"patient": {"resourceType": "Patient", "id": PATIENT, "birthDate": "1970-01-01"}},
                "fhirServer": server.url}
        response = live.call("pgx-order-sign", body)
        assert response.status_code == 200, response.text
        cards = response.json()["cards"]
        assert server.searched("Observation"), server.requests
        assert pm_card(cards), summaries(cards)
    finally:
        server.stop()


# --- item 10: a patient without a birth date, advice that differs by age group ----------------------------

@pytest.mark.parametrize("patient", [
    pytest.param({"resourceType": "Patient", "id": PATIENT}, id="no-birthDate"),
    pytest.param({"resourceType": "Patient", "id": PATIENT, "birthDate": {"not": "a date"}}, id="birthDate-not-a-date"),
])
def test_no_birth_date_reaches_the_cards_as_unknown_age(live, patient):
    """CPIC's voriconazole advice for a CYP2C19 poor metabolizer differs for adults and pediatrics. With
    no usable birth date the renderer is given no age, so neither population is chosen for the patient:
    the advice of both reaches the card(s), each population named (the card renderer words them)."""
    voriconazole = {"coding": [{"system": RXNORM, "code": "121243", "display": "voriconazole"}]}
    cards, row = sign(live, [order(voriconazole)], PM, patient=patient)
    text = " ".join(c["detail"] for c in cards if c["summary"].startswith("Voriconazole"))
    assert "adults" in text.lower() and "pediatric" in text.lower(), [c["summary"] for c in cards]
    dated = {"resourceType": "Patient", "id": PATIENT, "birthDate": "1970-01-01"}
    adult_cards, _ = sign(live, [order(voriconazole)], PM, patient=dated)
    adult_text = " ".join(c["detail"] for c in adult_cards if c["summary"].startswith("Voriconazole"))
    assert "population: adults" in adult_text.lower() or "adults" in adult_text.lower()
    assert "pediatrics" not in adult_text.lower()
