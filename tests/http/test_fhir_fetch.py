"""Fetching FHIR data, over real HTTP: the service (tests/live_service.py) calls a loopback FHIR server
(tests/fhir_server.py) the test fills and tells to misbehave.

Specification passages these tests hold the service to:
- CDS Hooks 2.0, "Prefetch Template": the CDS Service checks prefetched data against its template and
  retrieves what is missing itself; a CDS Client "SHOULD" report a failed prefetch with an
  OperationOutcome and "CDS Services SHOULD check any prefetched data for the existence of
  OperationOutcomes"; tokens are `{{context.*}}` and `{{userPractitionerId}}`-style only.
- CDS Hooks 2.0, "FHIR Resource Access": `fhirServer` is the base URL and `fhirAuthorization.access_token`
  the bearer token for it (so: for it only).
- FHIR R4 http.html#paging and bundle.html#searchset: a page's `next` link leads to the following page.
- FHIR R4 search.html#include: `_include=DiagnosticReport:result` returns the reports' results too.
- HL7 Genomics Reporting IG STU3, genomic-report profile: a Genomics Report is a DiagnosticReport of
  category v2-0074 GE whose `result`s are the genotype Observations.
"""
from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import text

from fhir_server import FhirTestServer, outcome
from fhirdata import PRODUCTS, RXNORM, genotype, hook_request, medication_request, searchset

CANNOT = "Clopidogrel: pharmacogenomic check could not be completed"
TOKEN = {"access_token": "secret-token-for-the-ehr-only", "token_type": "Bearer", "expires_in": 300,
         "scope": "patient/*.read", "subject": "pgx-cds"}


def summaries(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["summary"] for c in response.json()["cards"]]


def audited_errors(service, body: dict) -> list[str]:
    store = service.runtime.store
    assert store.flush(10)
    with store.engine.connect() as conn:
        rows = conn.execute(text("select fhir_errors from cds_call where hook_instance = :h"),
                            {"h": body["hookInstance"]}).all()
    assert len(rows) == 1
    errors = rows[0][0]
    return errors if isinstance(errors, list) else __import__("json").loads(errors)


def report(rid: str, *results: str, patient: str = "p1") -> dict:
    """A Genomics Report shaped as the IG STU3 DiagnosticReport-PGxGenomicReportEMERGE (category GE, LOINC
    51969-4 'Genetic analysis report', results by reference)."""
    return {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4", "display": "Genetic analysis report"}]},
            "subject": {"reference": f"Patient/{patient}"}, "issued": "2024-03-02T00:00:00Z",
            "result": [{"reference": r} for r in results]}


@pytest.fixture()
def other_server():
    """A second FHIR server on another port: another origin, which must never see the token."""
    server = FhirTestServer()
    server.add(genotype("CYP2C19", "*1/*1", oid="foreign"))
    yield server
    server.stop()


# --- 1. the codes searched are the codes mapped -----------------------------------------------------

def test_the_codes_searched_and_the_codes_the_reader_maps_are_one_set(service, fhir_server):
    """Issue 10 item 1: the prefetch templates (discovery) and the service's own search ask for exactly
    the Observation codes guidelines/fhir-mappings.yaml maps (observation_kinds and lab_codes)."""
    from cds.fhir.mappings import default_mappings

    mappings = default_mappings()
    mapped = {f"{s}|{c}" for s, c in mappings.observation_kinds} | {f"{s}|{c}" for s, c in mappings.lab_codes} \
        | {f"{s}|{c}" for s, c in mappings.text_coded_results}
    assert "http://loinc.org|84413-4" in mapped and "http://loinc.org|79716-7" in mapped

    services = requests.get(f"{service.url}/cds-services", timeout=10).json()["services"]
    for s in services:
        template = s["prefetch"]["genomics"]
        assert "pgx." not in template                       # only CDS Hooks tokens reach the EHR
        codes = template.split("&code=", 1)[1].split("&")[0]
        assert set(codes.split(",")) == mapped, s["id"]

    fhir_server.add(genotype("CYP2C19", "*2/*2"))
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    assert summaries(service.call("pgx-order-sign", body))[0].startswith("Clopidogrel")
    searched = fhir_server.searched("Observation")[0]["query"]["code"][0]
    assert set(searched.split(",")) == mapped


def test_genomics_reports_are_searched_by_every_mapped_category_and_code(service, fhir_server):
    """Genomics Reports are marked differently across IG versions (category GE in STU2/STU3, code
    51969-4 in STU3, 81247-9 and no category in the STU1-era build): one search by the mapped categories,
    one by the mapped codes, both lists from guidelines/fhir-mappings.yaml, in discovery and on fhirServer."""
    from cds.fhir.mappings import default_mappings

    mappings = default_mappings()
    categories = {f"{s}|{c}" for s, c in mappings.genomic_report_categories}
    codes = {f"{s}|{c}" for s, c in mappings.genomic_report_codes}
    assert "http://terminology.hl7.org/CodeSystem/v2-0074|GE" in categories
    assert {"http://loinc.org|51969-4", "http://loinc.org|81247-9"} <= codes

    services = requests.get(f"{service.url}/cds-services", timeout=10).json()["services"]
    for s in services:
        assert set(s["prefetch"]["reports"].split("&category=", 1)[1].split(",")) == categories, s["id"]
        assert set(s["prefetch"]["reports-by-code"].split("&code=", 1)[1].split(",")) == codes, s["id"]

    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    assert service.call("pgx-order-sign", body).status_code == 200
    asked = [r["query"] for r in fhir_server.searched("DiagnosticReport")]
    assert sorted(set(q["category"][0].split(",")) for q in asked if "category" in q) == [categories]
    assert sorted(set(q["code"][0].split(",")) for q in asked if "code" in q) == [codes]


# --- 2. Genomics Reports ----------------------------------------------------------------------------

@pytest.mark.parametrize("include", [True, False])
def test_a_genomics_report_fetched_from_the_fhir_server_yields_its_results(service, fhir_server, include):
    """The EHR prefetched an empty genomics search; the report and its result are only on fhirServer,
    the result through _include or, from a server that ignores _include, read by reference. The result's
    code is not among the searched ones (a lab's own code), so only the report leads to it."""
    fhir_server.supports_include = include
    result = genotype("CYP2C19", "*2/*2", oid="in-report")
    result["code"] = {"coding": [{"system": "http://example.org/lab-codes", "code": "PGX-C19"}], "text": "CYP2C19 genotype"}
    fhir_server.add(result, report("rep1", "Observation/in-report"))
    body = hook_request("order-sign", medication_request("clopidogrel"), prefetch={"genomics": searchset()},
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    searches = fhir_server.searched("DiagnosticReport")
    assert sorted(k for r in searches for k in r["query"] if k in ("category", "code")) == ["category", "code"]
    for search in searches:         # one by category, one by report code (guidelines/fhir-mappings.yaml)
        assert search["query"]["_include"] == ["DiagnosticReport:result"]
        assert search["authorization"] == f"Bearer {TOKEN['access_token']}"
    reads = [r for r in fhir_server.requests if r["path"] == "/fhir/Observation/in-report"]
    assert len(reads) == (0 if include else 1)


@pytest.mark.parametrize("hook,service_id", [("order-sign", "pgx-order-sign"), ("patient-view", "pgx-patient-view")])
def test_a_result_found_both_by_search_and_through_its_report_counts_once(service, fhir_server, hook, service_id):
    """The usual IG shape: the genotype Observation (LOINC 84413-4) is both a search match and a report's
    included result; it is one result, so one card, not two and not a conflict."""
    fhir_server.add(genotype("CYP2C19", "*2/*2", oid="both"), report("rep-both", "Observation/both"),
                    medication_request("clopidogrel", mid="active-1", status="active"))
    orders = [] if hook == "patient-view" else [medication_request("clopidogrel")]
    body = hook_request(hook, *orders, fhirServer=fhir_server.url)
    cards = summaries(service.call(service_id, body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    assert fhir_server.searched("Observation") and fhir_server.searched("DiagnosticReport")


def test_patient_view_reads_a_fetched_genomics_report(service, fhir_server):
    fhir_server.add(genotype("CYP2C19", "*2/*2", oid="pv-1"), report("rep-pv", "Observation/pv-1"),
                    medication_request("clopidogrel", mid="active-1", status="active"))
    fhir_server.store[("Observation", "pv-1")]["code"] = {"text": "CYP2C19 genotype"}   # found only via the report
    body = hook_request("patient-view", fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-patient-view", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]


def test_a_refetch_that_fails_too_is_a_check_not_completed(service, fhir_server):
    fhir_server.misbehave("status", only="Observation", code=503)
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        genomics=outcome("timeout", "the EHR gave up"), fhirServer=fhir_server.url)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    errors = audited_errors(service, body)
    assert any("HTTP 503" in e for e in errors) and any("OperationOutcome" in e for e in errors)


def test_prefetched_report_results_are_read_from_the_fhir_server_by_reference(service, fhir_server):
    """A prefetched report whose results are neither in the prefetch nor contained: each is read
    (FHIR R4 http.html#read) from fhirServer with the token."""
    fhir_server.add(genotype("CYP2C19", "*2/*2", oid="r-1"))
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(), "reports": searchset(report("rep2", "Observation/r-1"))},
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    reads = [r for r in fhir_server.requests if r["path"] == "/fhir/Observation/r-1"]
    assert len(reads) == 1 and reads[0]["authorization"] == f"Bearer {TOKEN['access_token']}"


def test_report_results_that_cannot_be_had_are_a_check_not_completed(service):
    """Without fhirServer, a prefetched report's missing results make the check incomplete, said and audited."""
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(), "reports": searchset(report("rep3", "Observation/gone"))})
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert any("DiagnosticReport result" in e for e in audited_errors(service, body))


def test_the_genotype_a_prefetched_implication_is_derived_from_is_read_from_the_fhir_server(service, fhir_server):
    """A therapeutic implication that names no gene (its phenotype text alone, as genomics-operations'
    find-subject-tx-implications output writes "Normal Metabolizer"), derived from a genotype the prefetch
    does not hold: the genotype is read from fhirServer (issue 20 item 7), so the gene is known."""
    fhir_server.add(genotype("CYP2C19", "*2/*2", oid="g-1"))
    implication = {"resourceType": "Observation", "id": "imp-1", "status": "final",
                   "code": {"coding": [{"system": "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs",
                                        "code": "therapeutic-implication"}]},
                   "subject": {"reference": "Patient/p1"}, "derivedFrom": [{"reference": "Observation/g-1"}],
                   "component": [{"code": {"coding": [{"system": "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs",
                                                       "code": "predicted-therapeutic-implication"}]},
                                  "valueCodeableConcept": {"text": "Poor Metabolizer"}}]}
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(implication), "reports": searchset()},
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    assert [r["path"] for r in fhir_server.requests if r["path"].startswith("/fhir/Observation/")] == ["/fhir/Observation/g-1"]


# --- 3. paging --------------------------------------------------------------------------------------

def _pages(fhir_server) -> dict:
    """Three results, one a page; the decisive CYP2C19 result is on the last page."""
    fhir_server.page_size = 1
    fhir_server.add(genotype("CYP2D6", "*1/*1", oid="a1"), genotype("CYP3A5", "*3/*3", oid="a2"),
                    genotype("CYP2C19", "*2/*2", oid="a3"))
    first = requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=5).json()
    assert any(link["relation"] == "next" for link in first["link"]) and len(first["entry"]) == 1
    fhir_server.requests.clear()
    return first


def test_a_prefetched_page_with_a_next_link_is_followed_on_the_fhir_server(service, fhir_server):
    first = _pages(fhir_server)
    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=first,
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    pages = [r for r in fhir_server.searched("Observation") if "_page" in r["query"]]
    assert [r["query"]["_page"] for r in pages] == [["1"], ["2"]]


@pytest.mark.parametrize("relative", [False, True])
def test_a_fetched_search_is_read_to_its_last_page(service, fhir_server, relative):
    _pages(fhir_server)
    fhir_server.relative_links = relative
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]


def test_a_prefetched_page_with_a_next_link_and_no_fhir_server_is_incomplete(service, fhir_server):
    first = _pages(fhir_server)
    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=first)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert any("more pages" in e for e in audited_errors(service, body))


# --- 4. OperationOutcome instead of data ------------------------------------------------------------

def test_a_prefetched_operation_outcome_is_fetched_again_from_the_fhir_server(service, fhir_server):
    fhir_server.add(genotype("CYP2C19", "*2/*2"))
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        genomics=outcome("timeout", "the EHR gave up"), fhirServer=fhir_server.url)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    assert fhir_server.searched("Observation")
    assert any("OperationOutcome" in e and "fetched from fhirServer" in e for e in audited_errors(service, body))


@pytest.mark.parametrize("value", [outcome("timeout", "the EHR gave up"),
                                   searchset(outcome("too-costly", "search failed")),
                                   {"resourceType": "Patient", "id": "p1"}])
def test_a_prefetched_failed_retrieval_without_fhir_server_is_a_check_not_completed(service, value):
    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=value)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert any(e.startswith("genomics: ") for e in audited_errors(service, body))


@pytest.mark.parametrize("misbehaviour", ["outcome", "html", "status"])
def test_a_fhir_server_answering_an_error_is_a_check_not_completed(service, fhir_server, misbehaviour):
    fhir_server.misbehave(misbehaviour, only="Observation", code=403)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert any(e.startswith("genomics: ") for e in audited_errors(service, body))


# --- 5. a Medication only on the FHIR server -------------------------------------------------------

def test_a_medication_reference_is_resolved_from_the_fhir_server(service, fhir_server):
    code, display = PRODUCTS["clopidogrel"]
    fhir_server.add({"resourceType": "Medication", "id": "med-1",
                     "code": {"coding": [{"system": RXNORM, "code": code, "display": display}]}})
    order = medication_request("clopidogrel")
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-1"}
    body = hook_request("order-sign", order, genomics=searchset(genotype("CYP2C19", "*2/*2")),
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0] and "lopidogrel" in cards[0]
    assert [r["authorization"] for r in fhir_server.requests if r["path"] == "/fhir/Medication/med-1"] == \
        [f"Bearer {TOKEN['access_token']}"]


# --- 6. bounded ---------------------------------------------------------------------------------

def test_a_fhir_server_that_never_accepts_the_connection_is_bounded(budgeted_service):
    """A listening socket whose backlog is full: the kernel drops further SYNs, so connect() hangs (a
    black-holed host). The call is answered within the budget with the card that says so."""
    service = budgeted_service
    import socket as sockets

    blackhole = sockets.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):                      # fill the accept queue; later connects get no answer
            f = sockets.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.1)
        body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=f"http://127.0.0.1:{port}/fhir")
        started = time.monotonic()
        response = service.call("pgx-order-sign", body)
        assert time.monotonic() - started < 2.5         # the fixture's budget is 1 s
        assert summaries(response) == [CANNOT]
        errors = audited_errors(service, body)
        assert any(e.startswith("genomics: ") and ("timed out" in e or "time budget" in e) for e in errors), errors
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


# --- 7. size --------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True])
def test_a_huge_fhir_response_is_a_check_not_completed_within_the_budget(budgeted_service, fhir_server, chunked):
    """Issue 12 item 3: a 50 MB Bundle (declared, or streamed without a length) is abandoned at the limit."""
    service = budgeted_service
    fhir_server.misbehave("huge", only="Observation", size=50 * 1024 * 1024, chunked=chunked)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    started = time.monotonic()
    response = service.call("pgx-order-sign", body)
    assert time.monotonic() - started < 2.5            # the fixture's budget is 1 s
    assert summaries(response) == [CANNOT]
    assert any("byte limit" in e for e in audited_errors(service, body))


def test_a_compressed_answer_is_limited_by_its_inflated_size(budgeted_service, fhir_server):
    """A few hundred kB of gzip that inflate to 200 MB: the limit counts the bytes after decoding."""
    service = budgeted_service
    fhir_server.misbehave("gzip-bomb", only="Observation", size=200 * 1024 * 1024)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url)
    started = time.monotonic()
    response = service.call("pgx-order-sign", body)
    assert time.monotonic() - started < 2.5
    assert summaries(response) == [CANNOT]
    errors = audited_errors(service, body)
    assert any("byte limit" in e for e in errors), errors


# --- 8. the token never leaves its server ----------------------------------------------------------

def test_a_redirect_to_another_origin_is_not_followed(service, fhir_server, other_server):
    fhir_server.misbehave("redirect", only="Observation", to=other_server.url)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url,
                        fhirAuthorization=TOKEN)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert other_server.requests == []
    assert any("redirect to another origin" in e for e in audited_errors(service, body))


def test_a_redirect_within_the_fhir_server_is_followed(service, fhir_server):
    fhir_server.add(genotype("CYP2C19", "*2/*2"))
    fhir_server.misbehave("redirect", only="Observation", to=fhir_server.url, code=307, once=True)
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url,
                        fhirAuthorization=TOKEN)
    cards = summaries(service.call("pgx-order-sign", body))
    assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
    searches = fhir_server.searched("Observation")
    assert len(searches) == 2 and all(r["authorization"] == f"Bearer {TOKEN['access_token']}" for r in searches)


@pytest.mark.parametrize("where", ["prefetched", "fetched"])
def test_a_next_link_to_another_origin_is_refused(service, fhir_server, other_server, where):
    _pages(fhir_server)
    fhir_server.misbehave("next-to", to=other_server.url)
    first = requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=5).json()
    fhir_server.requests.clear()
    extra = {"genomics": first} if where == "prefetched" else {}
    body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_server.url,
                        fhirAuthorization=TOKEN, **extra)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert other_server.requests == []              # neither the token nor the query went there
    assert any("another server" in e for e in audited_errors(service, body))


def test_a_reference_to_another_origin_is_not_fetched(service, fhir_server, other_server):
    body = hook_request("order-sign", medication_request("clopidogrel"),
                        prefetch={"genomics": searchset(),
                                  "reports": searchset(report("rep4", f"{other_server.url}/Observation/foreign"))},
                        fhirServer=fhir_server.url, fhirAuthorization=TOKEN)
    assert summaries(service.call("pgx-order-sign", body)) == [CANNOT]
    assert other_server.requests == []
