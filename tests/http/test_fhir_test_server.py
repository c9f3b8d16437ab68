"""The loopback FHIR server the fetch tests rely on (tests/fhir_server.py) behaves as FHIR R4 says:
search by patient and token (search.html#token), paging with `next` links (http.html#paging),
`_include` (search.html#include), reads and a 404 OperationOutcome (http.html#read)."""
from __future__ import annotations

import requests

from fhirdata import genotype


def test_search_pages_includes_and_reads(fhir_server):
    fhir_server.page_size = 2
    results = [genotype("CYP2C19", "*1/*2", oid=f"g{i}") for i in range(5)]
    other = genotype("CYP2C19", "*2/*2", patient="p2", oid="g-other")
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "subject": {"reference": "Patient/p1"},
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]},
              "result": [{"reference": "Observation/g0"}]}
    fhir_server.add(*results, other, report)
    url = f"{fhir_server.url}/Observation?patient=p1&code=http://loinc.org|84413-4"
    seen = []
    while url:
        page = requests.get(url, timeout=5).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == ["g0", "g1", "g2", "g3", "g4"]
    assert requests.get(f"{fhir_server.url}/Observation?patient=p1&code=http://loinc.org|1-8", timeout=5).json()["total"] == 0
    bundle = requests.get(f"{fhir_server.url}/DiagnosticReport?patient=Patient/p1&category=GE"
                          "&_include=DiagnosticReport:result", timeout=5).json()
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]] == [("r1", "match"), ("g0", "include")]
    assert requests.get(f"{fhir_server.url}/Observation/g-other", timeout=5).json()["subject"] == {"reference": "Patient/p2"}
    missing = requests.get(f"{fhir_server.url}/Medication/nope", timeout=5)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"


def test_misbehaviours(fhir_server):
    fhir_server.misbehave("status", only="Observation", code=503)
    fhir_server.misbehave("redirect", only="Patient", to="http://127.0.0.1:9/fhir")
    assert requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=5).status_code == 503
    moved = requests.get(f"{fhir_server.url}/Patient/p1", timeout=5, allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"] == "http://127.0.0.1:9/fhir/Patient/p1"
    fhir_server.behave()
    fhir_server.add(genotype("CYP2C19", "*1/*2", oid="mine"), genotype("CYP2C19", "*2/*2", patient="p2", oid="theirs"))
    fhir_server.misbehave("ignore-patient", only="Observation")
    assert [e["resource"]["id"] for e in requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=5)
            .json()["entry"]] == ["mine", "theirs"]
    fhir_server.behave()
    assert [e["resource"]["id"] for e in requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=5)
            .json()["entry"]] == ["mine"]
    fhir_server.misbehave("huge", size=3_000_000, chunked=True)
    assert len(requests.get(f"{fhir_server.url}/Observation?patient=p1", timeout=10).content) >= 3_000_000
