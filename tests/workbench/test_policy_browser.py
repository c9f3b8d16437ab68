"""The whole governance flow in real headless Chromium against `cds serve` with 2 workers (issue 22):
the author signs in, edits a summary, sees the validator refuse it with file and line, fixes it, sees
its impact on the patients of the most recent screening run, proposes; the approver signs in and
approves; a hook call to the running service then shows the new wording, without a restart; a rollback
restores the old one. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from browser_paths import require_selenium, wait_for
from live_service import ServeProcess
from pgx_paths import REPO
from workbench_live import ARTIFACTS

require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402

EXAMPLE = json.loads((REPO / "cds/workbench/examples/order-select-clopidogrel-cyp2c19.json").read_text())
OLD = "avoid; use prasugrel or ticagrelor if no contraindication"
TOO_LONG = OLD + " — and page the cardiology pharmacist on extension 4411 before the first dose is given"
NEW = "avoid; prefer prasugrel (or ticagrelor) unless contraindicated"
PASSWORDS = {"alice": "alice-password-0001", "bob": "bob-password-00002"}


def _cds(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cds.cli", *args], input=stdin, capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def _screening_input(folder) -> None:
    """One patient as Bulk Data NDJSON: the example's CYP2C19 *2/*2 result and an active clopidogrel order."""
    folder.mkdir()
    observation = EXAMPLE["prefetch"]["genomics"]["entry"][0]["resource"]
    order = {**EXAMPLE["context"]["draftOrders"]["entry"][0]["resource"], "status": "active"}
    patient = {"resourceType": "Patient", "id": "CGPatientExample01", "birthDate": "1960-05-01"}
    for name, resource in (("Patient", patient), ("Observation", observation), ("MedicationRequest", order)):
        (folder / f"{name}.ndjson").write_text(json.dumps(resource) + "\n")


def _summary(service) -> str:
    cards = service.post("/cds-services/pgx-order-select", EXAMPLE).json()["cards"]
    return next(c["summary"] for c in cards if c["summary"].startswith("Clopidogrel"))


def _until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def _shows(browser, css: str, text: str) -> bool:
    """Whether the page comes to show `text` in `css` (the page before a click may still be there)."""
    from selenium.common.exceptions import WebDriverException

    def now() -> bool:
        try:
            return any(e.text == text for e in browser.find_elements(By.CSS_SELECTOR, css))
        except WebDriverException:      # the old page went away under us
            return False
    return _until(now)


def _sign_in(browser, url: str, name: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/workbench/login?next=/workbench/policy")
    browser.find_element(By.NAME, "username").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(PASSWORDS[name])
    browser.find_element(By.CSS_SELECTOR, "#password-login button").click()
    assert name in wait_for(browser, "#signed-in").text


def _set_text(browser, text: str) -> None:
    box = browser.find_element(By.ID, "policy-text")
    browser.execute_script("arguments[0].value = arguments[1];", box, text)


def test_author_proposes_approver_approves_service_follows_rollback_restores(browser, tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'audit.sqlite3'}"}
    for name, role in (("alice", "author"), ("bob", "approver")):
        _cds(env, "user", "add", name, "--role", role, stdin=PASSWORDS[name] + "\n")
    _screening_input(tmp_path / "cohort")
    _cds(env, "screen", str(tmp_path / "cohort"), "--out", str(tmp_path / "screened"), "--workers", "1")
    service = ServeProcess(tmp_path, env={"CDS_POLICY_POLL": "1"}, workers=2)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        assert OLD in _summary(service)
        # --- the author -------------------------------------------------------------------------
        _sign_in(browser, service.url, "alice")
        browser.find_element(By.ID, "propose-link").click()
        original = wait_for(browser, "#policy-text").get_attribute("value")
        assert OLD in original
        _set_text(browser, original.replace(OLD, TOO_LONG))
        browser.find_element(By.ID, "check").click()
        problems = wait_for(browser, "#problems").text
        assert "rules/antiplatelets.yaml:24" in problems and "at most 139" in problems
        browser.save_screenshot(str(ARTIFACTS / "policy-validation-error.png"))

        fixed = original.replace(OLD, NEW).replace(
            "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prasugrel or ticagrelor]",
            "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prefer prasugrel]")
        _set_text(browser, fixed)
        browser.find_element(By.ID, "see-impact").click()
        assert "Every file is valid" in wait_for(browser, "#checked").text
        total = browser.find_element(By.ID, "impact-total").text
        assert total == "Cards added 0, removed 0, changed 1."
        impact = browser.find_element(By.ID, "impact-table").text
        assert "clopidogrel" in impact and "clopidogrel-cyp2c19" in impact and NEW in impact
        assert "most recent screening run" in browser.find_element(By.ID, "impact").text
        browser.save_screenshot(str(ARTIFACTS / "policy-impact.png"))

        browser.find_element(By.NAME, "reason").send_keys("Shorter wording the cardiologists asked for")
        browser.find_element(By.ID, "propose").click()
        assert _shows(browser, "#version-status", "proposed")
        number = int(browser.current_url.rsplit("/", 1)[1])
        assert not browser.find_elements(By.ID, "approve-form")        # the author cannot sign it off
        assert OLD in _summary(service)

        # --- the approver -------------------------------------------------------------------------
        _sign_in(browser, service.url, "bob")
        browser.get(f"{service.url}/workbench/policy/versions/{number}")
        assert NEW in wait_for(browser, "#diff").text
        browser.find_element(By.NAME, "comment").send_keys("Agreed at the P&T meeting")
        browser.find_element(By.ID, "approve").click()
        assert _shows(browser, "#version-status", "approved, active")
        browser.save_screenshot(str(ARTIFACTS / "policy-approved.png"))

        # --- the running service, no restart ------------------------------------------------------
        master = service.process.pid
        assert _until(lambda: all(NEW in _summary(service) for _ in range(6))), service.log[-3000:]
        assert service.process.pid == master and service.process.poll() is None

        # --- rollback ----------------------------------------------------------------------------
        browser.get(f"{service.url}/workbench/policy")
        browser.find_element(By.CSS_SELECTOR, "#rollback-form input[name=reason]").send_keys("Prescribers missed the old text")
        browser.find_element(By.CSS_SELECTOR, "#rollback-form button").click()
        assert _until(lambda: browser.current_url.endswith("/workbench/policy/versions/1"))
        assert "version 1" in wait_for(browser, "h1").text
        assert _until(lambda: all(OLD in _summary(service) for _ in range(6))), service.log[-3000:]
        browser.get(f"{service.url}/workbench/policy")
        assert "version 1" in wait_for(browser, "#active-version").text
    finally:
        log = service.stop()
    assert "Traceback" not in log
