"""The SMART summary page from a card's link, in real headless Chromium: development mode's direct
URL with the card's appContext, and a full SMART App Launch (EHR launch, authorization code with PKCE)
against a loopback EHR, with the appContext in the token response and without it (then the page reads
the patient's Observations from the EHR's FHIR server with the access token)."""
from __future__ import annotations

from urllib.parse import quote

from browser_paths import ARTIFACTS, require_selenium, wait_for
from cards_fhir import genotype, order, order_sign

require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402


def clopidogrel_card(service) -> tuple[dict, dict]:
    results = [genotype("CYP2C19", "*2/*2", oid="cyp2c19-1", lab="Example Genomics Laboratory", date="2024-03-01"),
               genotype("SLCO1B1", "*5/*5", oid="slco1b1-1", lab="Example Genomics Laboratory", date="2024-02-15")]
    (card,) = service.call("pgx-order-sign", order_sign(order("clopidogrel"), genomics=results)).json()["cards"]
    (link,) = [l for l in card["links"] if l["type"] == "smart"]
    return card, link, results


def check_summary_page(browser):
    table = wait_for(browser, "table#results")
    cyp2c19 = table.find_element(By.CSS_SELECTOR, "tr[data-gene=CYP2C19]")
    assert "*2/*2" in cyp2c19.text and "Poor Metabolizer" in cyp2c19.text
    assert "2024-03-01" in cyp2c19.text and "Example Genomics Laboratory" in cyp2c19.text
    assert "Observation/cyp2c19-1" in cyp2c19.text
    slco1b1 = table.find_element(By.CSS_SELECTOR, "tr[data-gene=SLCO1B1]")
    assert "Poor Function" in slco1b1.text
    drugs = browser.find_elements(By.CSS_SELECTOR, "section.drug")
    names = [d.get_attribute("data-drug") for d in drugs]
    # every drug these results affect, not only the card's: CYP2C19 and SLCO1B1 drugs
    assert {"clopidogrel", "citalopram", "voriconazole", "simvastatin", "atorvastatin"} <= set(names), names
    clopidogrel = browser.find_element(By.CSS_SELECTOR, "section.drug[data-drug=clopidogrel]")
    assert clopidogrel.get_attribute("data-indicator") == "critical"
    assert "Avoid clopidogrel if possible." in clopidogrel.text
    assert "Implications" in clopidogrel.text          # the long form the card's detail leaves out
    return names


def test_development_mode_link_with_app_context(browser, service):
    card, link, _ = clopidogrel_card(service)
    assert link["label"] == "Open pharmacogenomic summary" and link["url"] == f"{service.url}/smart/launch"
    browser.get(f"{link['url']}?appContext={quote(link['appContext'])}")
    names = check_summary_page(browser)
    assert names[0] == "clopidogrel", "the card's drug comes first"
    assert browser.find_element(By.ID, "development-mode").is_displayed()
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "smart-summary.png"))


def test_smart_launch_with_app_context_in_the_token_response(browser, service, smart_ehr):
    _, link, _ = clopidogrel_card(service)
    smart_ehr.app_context = link["appContext"]
    browser.get(f"{link['url']}?launch={smart_ehr.launch}&iss={quote(smart_ehr.fhir_base)}")
    check_summary_page(browser)
    assert browser.find_element(By.ID, "launched-from").text == smart_ehr.fhir_base
    paths = [p for _, p in smart_ehr.requests]
    assert any(p.startswith("/auth/authorize") for p in paths) and ("POST", "/auth/token") in smart_ehr.requests
    assert not any(p.startswith("/fhir/Observation") for p in paths), "appContext carried the results"


def test_smart_launch_reads_the_observations_without_app_context(browser, service, smart_ehr):
    _, link, results = clopidogrel_card(service)
    smart_ehr.observations = results
    browser.get(f"{link['url']}?launch={smart_ehr.launch}&iss={quote(smart_ehr.fhir_base)}")
    check_summary_page(browser)
    assert any(p.startswith("/fhir/Observation?patient=p1") for _, p in smart_ehr.requests)


def test_a_launch_that_did_not_start_here_is_refused(browser, service):
    browser.get(f"{service.url}/smart/callback?code=abc&state=forged")
    assert "start again from the card" in wait_for(browser, "#message").text
    browser.get(f"{service.url}/smart/launch")
    assert "needs the 'launch' and 'iss' parameters" in wait_for(browser, "#message").text
