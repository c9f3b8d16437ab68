"""The workbench in real headless Chromium: the matrix, "try a patient" for clopidogrel with CYP2C19
*2/*2 (the rendered card as an EHR shows it), a pasted CDS Hooks request, and a knowledge error on
the validation page. The card view is kept as a screenshot in test-artifacts/."""
from __future__ import annotations

from browser_paths import require_selenium, wait_for
from workbench_live import ARTIFACTS

require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

RED = ("rgb(198, 40, 40)", "rgba(198, 40, 40, 1)")   # --critical in workbench.css


def test_matrix_loads_with_guidelines_and_rules(browser, live):
    browser.get(f"{live.url}/workbench/")
    table = wait_for(browser, "table#matrix")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) >= 80, "one row per drug of the knowledge base"
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th.gene")]
    assert "CYP2C19" in headers and "HLA-B" in headers
    clopidogrel = table.find_element(By.CSS_SELECTOR, "tr[data-drug=clopidogrel]")
    cell = clopidogrel.find_element(By.CSS_SELECTOR, "td[data-gene=CYP2C19] a")
    assert cell.get_attribute("href").endswith("/workbench/guidelines/cpic-clopidogrel-cyp2c19")
    assert "clopidogrel-cyp2c19" in clopidogrel.find_element(By.CSS_SELECTOR, "td.rule").text
    tropisetron = table.find_element(By.CSS_SELECTOR, "tr[data-drug=tropisetron]")
    assert "switched off by tropisetron-off" in tropisetron.text

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "workbench-matrix.png"))

    # the filter (the page's own JavaScript) narrows the rows
    browser.find_element(By.CSS_SELECTOR, "input[data-filter='#matrix']").send_keys("clopidogrel")
    visible = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert [r.get_attribute("data-drug") for r in visible] == ["clopidogrel"]

    cell.click()
    assert wait_for(browser, "h1").text == "CPIC Guideline for clopidogrel and CYP2C19"
    assert browser.find_element(By.ID, "cpic-7589083").is_displayed()   # the Poor Metabolizer recommendation


def test_try_a_patient_clopidogrel_poor_metabolizer(browser, live):
    browser.get(f"{live.url}/workbench/try")
    browser.find_element(By.ID, "genotypes").send_keys("CYP2C19=*2/*2")
    browser.find_element(By.ID, "drugs").send_keys("clopidogrel")
    Select(browser.find_element(By.ID, "hook")).select_by_value("order-sign")
    browser.find_element(By.ID, "run").click()

    card = wait_for(browser, "#cards article.cds-card")
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards article.cds-card")
    assert len(cards) == 1
    assert card.get_attribute("data-indicator") == "critical"
    assert card.find_element(By.CSS_SELECTOR, ".indicator-badge").text.lower() == "critical"
    assert card.value_of_css_property("border-left-color") in RED
    summary = card.find_element(By.CSS_SELECTOR, ".card-summary").text
    assert "Clopidogrel" in summary and "CYP2C19 Poor Metabolizer" in summary
    # the Markdown detail is rendered, not shown as asterisks
    detail = card.find_element(By.CSS_SELECTOR, ".card-detail")
    assert "Poor Metabolizer" in [e.text for e in detail.find_elements(By.TAG_NAME, "strong")]
    assert "**" not in detail.text
    buttons = card.find_elements(By.CSS_SELECTOR, "button.suggestion-button")
    labels = [b.text for b in buttons]
    # typed results have no draft order to replace: the click adds one
    assert labels == ["Order prasugrel instead of clopidogrel", "Order ticagrelor instead of clopidogrel"]
    links = [a.text for a in card.find_elements(By.CSS_SELECTOR, ".card-links a")]
    assert "CPIC guideline: clopidogrel and CYP2C19" in links
    # the card's SMART link opens this instance's summary page with the card's results
    smart = card.find_element(By.CSS_SELECTOR, ".card-links a.smart-link")
    assert smart.text == "Open pharmacogenomic summary"
    href = smart.get_attribute("href")
    assert href.startswith(f"{live.url}/smart/launch?appContext=")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "workbench-card-clopidogrel-cyp2c19.png"
    card.screenshot(str(shot))
    browser.save_screenshot(str(ARTIFACTS / "workbench-try-a-patient-page.png"))
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a suggestion button shows what accepting it does
    actions = card.find_element(By.ID, buttons[0].get_attribute("data-toggle"))
    assert not actions.is_displayed()
    buttons[0].click()
    assert actions.is_displayed() and "Create a draft order for prasugrel" in actions.text
    assert buttons[0].get_attribute("aria-pressed") == "true"

    # the facts and rule behind the card
    why = card.find_element(By.CSS_SELECTOR, ".card-why")
    assert "clopidogrel-cyp2c19" in why.text and "*2/*2" in why.text
    assert "Poor Metabolizer" in browser.find_element(By.ID, "phenotypes").text

    # and the SMART link opens the summary page with this patient's result and the drugs it affects
    browser.get(href)
    row = wait_for(browser, "table#results tr[data-gene=CYP2C19]")
    assert "*2/*2" in row.text and "Poor Metabolizer" in row.text
    assert browser.find_element(By.CSS_SELECTOR, "section.drug[data-drug=clopidogrel]").get_attribute("data-indicator") == "critical"


def test_try_a_patient_bad_genotype_shows_a_message(browser, live):
    browser.get(f"{live.url}/workbench/try")
    browser.find_element(By.ID, "genotypes").send_keys("CYP2C19=banana")
    browser.find_element(By.ID, "drugs").send_keys("clopidogrel")
    browser.find_element(By.ID, "run").click()
    error = wait_for(browser, "#try-error").text
    assert "CYP2C19" in error and "banana" in error
    assert not browser.find_elements(By.CSS_SELECTOR, "article.cds-card")


def test_pasted_request_example(browser, live):
    browser.get(f"{live.url}/workbench/try/request")
    browser.find_element(By.ID, "load-example").click()
    assert '"hook": "order-select"' in browser.find_element(By.ID, "request").get_attribute("value")
    browser.find_element(By.ID, "run-request").click()
    card = wait_for(browser, "#cards article.cds-card")
    assert card.get_attribute("data-indicator") == "critical"
    assert "CYP2C19 Poor Metabolizer" in card.find_element(By.CSS_SELECTOR, ".card-summary").text
    assert "clopidogrel 75 MG Oral Tablet" in browser.find_element(By.ID, "result").text   # the order read


def test_knowledge_error_shows_on_the_validation_page(browser, broken_knowledge):
    server, root = broken_knowledge
    browser.get(f"{server.url}/workbench/validation")
    assert "No problems" in wait_for(browser, "#validation-ok").text

    rules = root / "rules" / "antiplatelets.yaml"
    lines = rules.read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "indicator: critical")
    lines[line - 1] = lines[line - 1].replace("critical", "crimson")
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")

    browser.get(f"{server.url}/workbench/validation")
    assert "1 problem" in wait_for(browser, "#validation-summary").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#diagnostics tbody tr")
    assert len(rows) == 1
    assert rows[0].find_element(By.CSS_SELECTOR, ".where").text == f"rules/antiplatelets.yaml:{line}"
    message = rows[0].find_element(By.CSS_SELECTOR, ".message").text
    assert "indicator" in message and "critical" in message
    assert "crimson" in rows[0].find_element(By.CSS_SELECTOR, "pre.line").text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "workbench-validation-error.png"))

    # the running service still answers with the knowledge it loaded
    browser.get(f"{server.url}/workbench/rules/clopidogrel-cyp2c19")
    assert "4 of 4 pass" in wait_for(browser, ".summary-line").text
