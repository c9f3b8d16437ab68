"""The workbench's "try a patient" with typed results (issue 9): contradicting lines for one gene are
a conflict with a card saying so, as the service does for FHIR results; a phenotype reported without
its activity score shows CPIC's advice for each score, labelled, and says the score decides."""
from __future__ import annotations

import html
import re


def test_try_a_patient_shows_the_conflict_and_a_card_saying_so(client):
    response = client.get("/workbench/try", query_string={"genotypes": "CYP2C19=*1/*1\nCYP2C19=*2/*2",
                                                          "drugs": "clopidogrel", "hook": "order-select"})
    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    summaries = [html.unescape(s) for s in re.findall(r'class="card-summary">([^<]*)<', response.get_data(as_text=True))]
    assert summaries == ["Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]
    conflicts = re.search(r'id="conflicts">(.*?)</p>', page, re.S).group(1)
    assert "CYP2C19" in conflicts and "*1/*1 (Normal Metabolizer)" in conflicts and "*2/*2 (Poor Metabolizer)" in conflicts
    assert "Normal Metabolizer</strong>" not in page.split('id="conflicts"')[1]   # not in the phenotype table


def test_try_a_patient_labels_the_scores_of_a_phenotype_only_result(client):
    response = client.get("/workbench/try", query_string={"genotypes": "DPYD=Poor Metabolizer",
                                                          "drugs": "fluorouracil", "hook": "order-select"})
    page = html.unescape(response.get_data(as_text=True))
    assert "The activity score decides which one applies" in page
    assert "(if DPYD activity score is 0.0)" in page and "(if DPYD activity score is 0.5)" in page
    assert re.findall(r'class="card-summary"', page)     # a card, not silence


def test_try_a_patient_conflict_in_the_browser(browser, live):
    """What the pharmacist sees in Chromium: the conflict stated in red, the conflict card, no
    Normal Metabolizer settled silently."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live.url}/workbench/try")
    browser.find_element(By.ID, "genotypes").send_keys("CYP2C19=*1/*1\nCYP2C19=*2/*2")
    browser.find_element(By.ID, "drugs").send_keys("clopidogrel")
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 20).until(ready.presence_of_element_located((By.CSS_SELECTOR, "#cards article.cds-card")))
    summaries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cards .card-summary")]
    assert summaries == ["Clopidogrel: conflicting CYP2C19 results on file — pharmacogenomic check not possible"]
    conflict = browser.find_element(By.ID, "conflicts")
    assert conflict.is_displayed() and "*1/*1 (Normal Metabolizer)" in conflict.text and "*2/*2" in conflict.text
    assert not browser.find_elements(By.ID, "phenotypes")
