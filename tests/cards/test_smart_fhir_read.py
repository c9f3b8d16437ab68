"""The SMART summary page without an appContext reads the patient's results from the EHR as the hooks do
(issue 20 item 9): searched by the genomic codes the reader maps (the hooks' `genomics` template,
`{{pgx.genomicCodes}}`), every page followed (FHIR R4 http.html#paging), and a plain statement on the page
whenever the results could not all be read, so "no drug affected" never reassures wrongly. Over real HTTP:
the service on loopback, the loopback EHR of tests/cards/smart_ehr.py (SMART App Launch, PKCE)."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlparse

import requests

from cards_fhir import genotype


def vitals(n: int) -> dict:
    """Observations a patient has by the thousand that are not pharmacogenomic (a heart rate)."""
    return {"resourceType": "Observation", "id": f"hr-{n}", "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 60 + n % 30, "unit": "/min"}}


def launch(service, smart_ehr) -> str:
    """Run the EHR launch with a browser's session (cookies, redirects) and return the summary page."""
    session = requests.Session()
    page = session.get(f"{service.url}/smart/launch?launch={smart_ehr.launch}&iss={quote(smart_ehr.fhir_base)}",
                       timeout=60)
    assert page.status_code == 200, page.text
    return page.text


def drugs_heading(html: str) -> int:
    return int(re.search(r"Drugs these results affect \((\d+)\)", html).group(1))


def test_a_result_beyond_ten_pages_of_observations_is_read(service, smart_ehr):
    smart_ehr.page_size = 200
    smart_ehr.observations = [vitals(n) for n in range(2_400)] + [genotype("CYP2C19", "*2/*2", oid="cyp2c19-late")]
    html = launch(service, smart_ehr)
    assert 'data-gene="CYP2C19"' in html and "Poor Metabolizer" in html
    assert drugs_heading(html) > 0 and 'data-drug="clopidogrel"' in html
    searches = [p for _, p in smart_ehr.requests if p.startswith("/fhir/Observation")]
    codes = parse_qs(urlparse(searches[0]).query)["code"][0]
    assert "http://loinc.org|84413-4" in codes          # the genotype code the hooks search by
    assert len(searches) == 1                            # by code: the heart rates are not even fetched
    assert 'id="incomplete"' not in html


def test_results_on_more_pages_than_are_read_are_said_not_hidden(service, smart_ehr, monkeypatch):
    from cds.smartapp import views

    monkeypatch.setattr(views, "MAX_PAGES", 2)
    smart_ehr.page_size = 1
    smart_ehr.observations = [genotype("SLCO1B1", "*1/*1", oid="slco1b1"), genotype("CYP2D6", "*1/*1", oid="cyp2d6"),
                              genotype("CYP2C19", "*2/*2", oid="cyp2c19-last")]
    html = launch(service, smart_ehr)
    assert 'id="incomplete"' in html and "more than 2 pages" in html
    assert 'data-gene="CYP2C19"' not in html
    assert "not necessarily all the patient" in html or drugs_heading(html) > 0
