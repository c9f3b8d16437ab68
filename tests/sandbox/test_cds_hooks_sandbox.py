"""Issue 24 item 10: a real CDS Hooks client, the CDS Hooks sandbox (github.com/cds-hooks/sandbox) built from
its own sources, driven in headless Chromium against this service on loopback: our clopidogrel card
renders, the card's SMART link opens the summary page through a SMART launch, and its suggestion is
applied (the next call carries prasugrel) with the feedback reaching our audit store.

The sandbox is not on the npm registry, and this project commits no script or recipe that builds fetched
code, so the test drives a build made outside the repository: CDS_SANDBOX_DIST names the folder of its
built static files (index.html, app.bundle.js). Without it the test is skipped, saying so; CI does not
build the sandbox."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from browser_paths import ARTIFACTS, chromium_driver, require_selenium, wait_for
from live_service import LiveServer

DIST = os.environ.get("CDS_SANDBOX_DIST", "")
if not DIST or not (Path(DIST) / "index.html").is_file() or not (Path(DIST) / "app.bundle.js").is_file():
    pytest.skip("CDS_SANDBOX_DIST names no built CDS Hooks sandbox (index.html, app.bundle.js); it is built "
                "outside the repository from its own sources (see this module's docstring)", allow_module_level=True)
require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from fhirdata import genotype  # noqa: E402
from sandbox_ehr import SandboxEhr  # noqa: E402

PATIENT = {"resourceType": "Patient", "id": "pgx-sandbox-1", "gender": "female", "birthDate": "1961-04-02",
           "name": [{"given": ["Ada"], "family": "Example"}]}


class Recorder:
    """WSGI middleware that keeps every hook call and feedback post the service receives, and the cards
    it answered."""

    def __init__(self, app):
        self.app, self.calls, self.feedback, self.cards = app, [], [], []

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith("/cds-services/"):
            return self.app(environ, start_response)
        import io

        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        if path.endswith("/feedback"):
            self.feedback.append(json.loads(body))
            return self.app(environ, start_response)
        self.calls.append(json.loads(body))
        answer = b"".join(self.app(environ, start_response))
        self.cards += json.loads(answer).get("cards", []) if answer.startswith(b"{") else []
        return [answer]


@pytest.fixture()
def sandbox():
    handler = partial(SimpleHTTPRequestHandler, directory=DIST)
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture()
def service(tmp_path):
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'audit.sqlite3'}", spool_dir=tmp_path / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off"), store=store)
    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder
    live = LiveServer(app)
    live.recorder = recorder
    yield live
    live.stop()
    store.close()


@pytest.fixture()
def browser():
    yield from chromium_driver()


def ordered_drugs(call: dict) -> list[str]:
    entries = call["context"]["draftOrders"].get("entry", [])
    return [json.dumps(e["resource"].get("medicationCodeableConcept", {})).lower() for e in entries]


def test_the_sandbox_shows_our_card_applies_its_suggestion_sends_feedback_and_opens_the_smart_page(
        sandbox, service, browser):
    ehr = SandboxEhr(PATIENT, [genotype("CYP2C19", "*2/*2", patient=PATIENT["id"], oid="cyp2c19-sandbox")])
    try:
        query = urlencode({"fhirServiceUrl": ehr.fhir_base, "patientId": PATIENT["id"], "hook": "order-select",
                           "screen": "rx-view", "serviceDiscoveryURL": f"{service.url}/cds-services"})
        browser.get(f"{sandbox}/?{query}")
        try:
            medication = wait_for(browser, "input[name=medication-input]", timeout=60)
            for key in "clopidogrel 75":      # a key at a time: the field is debounced and drops fast input
                medication.send_keys(key)
                time.sleep(0.15)
            choice = wait_for_xpath(browser, "//*[@role='button' or self::div][normalize-space()='clopidogrel 75 MG Oral Tablet']")
            choice.click()

            # the card, as the sandbox renders it
            wait_for_xpath(browser, "//*[contains(., 'Clopidogrel') and contains(., 'Poor Metabolizer')]", timeout=60)
            calls = service.recorder.calls
            assert calls and calls[-1]["hook"] == "order-select" and any("clopidogrel" in d for d in ordered_drugs(calls[-1]))
            card = next(c for c in service.recorder.cards if "Clopidogrel" in c["summary"])
            suggestion = next(s for s in card["suggestions"] if "prasugrel" in s["label"].lower())

            # the SMART link: the sandbox asks the EHR for a launch, opens our page, which completes the launch
            first_window = browser.current_window_handle
            wait_for_xpath(browser, "//button[normalize-space()='Open pharmacogenomic summary']").click()
            assert until(lambda: len(browser.window_handles) > 1)
            browser.switch_to.window(next(h for h in browser.window_handles if h != first_window))
            table = wait_for(browser, "table#results", timeout=30)
            assert "CYP2C19" in table.text and "Poor Metabolizer" in table.text
            assert browser.find_element(By.ID, "launched-from").text == ehr.fhir_base
            assert ehr.launches and ("POST", "/auth/token") in ehr.requests
            browser.close()
            browser.switch_to.window(first_window)

            # the suggestion, applied: feedback reaches us, and the next call carries prasugrel
            before = len(calls)
            wait_for_xpath(browser, f"//button[normalize-space()={xpath_text(suggestion['label'])}]").click()
            assert until(lambda: service.recorder.feedback)
            (feedback,) = service.recorder.feedback[0]["feedback"]
            assert feedback["card"] == card["uuid"] and feedback["outcome"] == "accepted"
            assert feedback["acceptedSuggestions"] == [{"id": suggestion["uuid"]}]
            assert until(lambda: len(calls) > before and any("prasugrel" in d for d in ordered_drugs(calls[-1])))
            assert until(lambda: stored_feedback(service) == 1)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "sandbox-failure.png"))
            (ARTIFACTS / "sandbox-failure.html").write_text(browser.page_source)
            raise
    finally:
        ehr.stop()


def stored_feedback(service) -> int:
    store = service.runtime.store
    store.flush()
    with store.engine.connect() as conn:
        return conn.execute(text("select count(*) from cds_feedback")).scalar()


def xpath_text(value: str) -> str:
    """A string literal for XPath 1.0, whatever quotes it holds."""
    if "'" not in value:
        return f"'{value}'"
    return "concat('" + "', \"'\", '".join(value.split("'")) + "')"


def wait_for_xpath(browser, xpath: str, timeout: float = 30):
    return WebDriverWait(browser, timeout).until(lambda b: (b.find_elements(By.XPATH, xpath) or [None])[-1])


def until(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False
