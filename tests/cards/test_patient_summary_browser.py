"""The SMART page's downloads, in real headless Chromium: the patient's own summary (a printable page with a
wallet card of the ID-1 size whose QR code, decoded with zxing-cpp from the screenshot, is the results
shown), its PDF (rendered with pdfium, the QR decoded again), and the interpretation as a FHIR Bundle."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import requests

from browser_paths import ARTIFACTS, require_selenium, wait_for
from test_smart_browser import clopidogrel_card

require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402

zxingcpp = pytest.importorskip("zxingcpp")
pypdfium2 = pytest.importorskip("pypdfium2")
from PIL import Image  # noqa: E402  (Pillow comes with fpdf2)


def _decode(image: Image.Image) -> str:
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, "one QR code"
    return found[0].text


def _signed_results(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, "form#downloads input[name=results]").get_attribute("value")


def test_patient_summary_page_and_its_qr_code(browser, service):
    _, link, _ = clopidogrel_card(service)
    browser.get(f"{link['url']}?appContext={quote(link['appContext'])}")
    wait_for(browser, "table#results")
    pages = set(browser.window_handles)
    browser.find_element(By.ID, "patient-summary").click()
    browser.switch_to.window(next(iter(set(browser.window_handles) - pages)))
    table = wait_for(browser, "table#patient-results")
    cyp2c19 = table.find_element(By.CSS_SELECTOR, "tr[data-gene=CYP2C19]")
    assert "*2/*2" in cyp2c19.text and "Poor Metabolizer" in cyp2c19.text and "clopidogrel" in cyp2c19.text
    assert "Show this to whoever prescribes for you" in browser.find_element(By.ID, "show-prescriber").text
    assert "Tested 2024-03-01, Example Genomics Laboratory" in browser.page_source
    assert "Avoid clopidogrel if possible." in browser.page_source          # CPIC's own words, for the prescriber
    card = browser.find_element(By.CSS_SELECTOR, ".card.front")
    px_per_mm = 96 / 25.4                                                    # CSS pixels
    assert abs(card.size["width"] - 85.6 * px_per_mm) < 2 and abs(card.size["height"] - 53.98 * px_per_mm) < 2
    shown = [li.text for li in card.find_elements(By.CSS_SELECTOR, ".card-results li")]
    assert "CYP2C19: Poor Metabolizer" in shown and "SLCO1B1: Poor Function" in shown
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById('wallet-card').scrollIntoView()")
    shot = ARTIFACTS / "patient-summary.png"
    browser.save_screenshot(str(shot))
    text = _decode(Image.open(shot))
    assert text.splitlines()[1:1 + len(shown)] == shown                      # the results shown, as text
    assert "Show this to whoever prescribes for you." in text and "http" not in text   # no link


def test_patient_summary_pdf_and_fhir_download(browser, service):
    _, link, _ = clopidogrel_card(service)
    browser.get(f"{link['url']}?appContext={quote(link['appContext'])}")
    wait_for(browser, "table#results")
    signed = _signed_results(browser)
    pdf = requests.post(f"{service.url}/smart/patient-summary.pdf", data={"results": signed}, timeout=30)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    document = pypdfium2.PdfDocument(pdf.content)
    page_text = document[0].get_textpage().get_text_range()
    assert "Show this to whoever prescribes for you" in page_text and "Poor Metabolizer" in page_text
    qr = _decode(document[len(document) - 1].render(scale=6).to_pil())
    assert "CYP2C19: Poor Metabolizer" in qr.splitlines() and "Tested 2024-03-01, Example Genomics Laboratory" in qr

    bundle = requests.post(f"{service.url}/smart/fhir", data={"results": signed}, timeout=30)
    assert bundle.headers["Content-Type"].startswith("application/fhir+json")
    assert "attachment" in bundle.headers["Content-Disposition"]
    from fhir.resources.R4B.bundle import Bundle

    body = bundle.json()
    Bundle.model_validate(body)
    profiles = {e["resource"]["meta"]["profile"][0].rsplit("/", 1)[1] for e in body["entry"]}
    assert {"genotype", "therapeutic-implication", "medication-recommendation", "genomic-report"} <= profiles
    genotype = next(e["resource"] for e in body["entry"] if e["resource"]["meta"]["profile"][0].endswith("/genotype")
                    and e["resource"]["valueCodeableConcept"]["text"] == "*2/*2")
    assert genotype["performer"] == [{"display": "Example Genomics Laboratory"}]
    assert genotype["effectiveDateTime"].startswith("2024-03-01")


def test_downloads_refuse_results_not_signed_by_a_summary_page(service):
    forged = json.dumps({"context": {"results": [{"gene": "CYP2C19", "value": "*2/*2"}]}})
    for path in ("/smart/fhir", "/smart/patient-summary", "/smart/patient-summary.pdf"):
        answer = requests.post(f"{service.url}{path}", data={"results": forged}, timeout=30)
        assert answer.status_code == 400 and "not from a summary page of this service" in answer.text
