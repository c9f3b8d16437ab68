"""Issue 24 item 6: the SMART summary page under the service's Content-Security-Policy, in real headless
Chromium. Its styles apply (they were inline, and the CSP blocked them: the page showed unstyled); an EHR
page on a trusted origin may show it in a frame, any other origin may not; and the launch asks for the
scopes the EHR's .well-known/smart-configuration offers (v1 `.read` where v2 is not offered)."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest
import requests

from browser_paths import chromium_driver, require_selenium, wait_for
from live_service import LiveServer, free_port

require_selenium()
from selenium.webdriver.common.by import By  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cards"))
from smart_ehr import SmartEhr  # noqa: E402

TRUSTED_PORT = free_port()
TRUSTED_EHR = f"http://127.0.0.1:{TRUSTED_PORT}"   # its FHIR base is a SMART issuer: its origin may frame the page


class EhrPage:
    """An EHR's web page on loopback that shows `src` in an iframe, as EHRs open SMART apps."""

    def __init__(self, src: str, port: int = 0):
        page = (f'<!doctype html><title>EHR</title><h1>EHR</h1>'
                f'<iframe id="app" src="{src}" width="1000" height="800"></iframe>').encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def service():
    from cds.service.app import create_app
    from cds.service.config import Settings

    live = LiveServer(create_app(Settings(auth_mode="off", audit=False, smart_issuers=[f"{TRUSTED_EHR}/fhir"])))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    yield from chromium_driver()


def summary_link(service) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
    from fhirdata import genotype, hook_request, medication_request, searchset

    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=searchset(genotype("CYP2C19", "*2/*2")))
    (card,) = service.call("pgx-order-sign", body).json()["cards"]
    (link,) = [link for link in card["links"] if link["type"] == "smart"]
    return f"{link['url']}?appContext={quote(link['appContext'])}"


def test_the_page_is_styled_under_the_csp(service, browser):
    browser.get(summary_link(service))
    wait_for(browser, "table#results")
    body = browser.execute_script("const s = getComputedStyle(document.body); return [s.maxWidth, s.fontFamily];")
    assert body[0] == "1120px" and "system-ui" in body[1]          # 70rem, from the stylesheet
    badge = browser.find_element(By.CSS_SELECTOR, "section.drug[data-drug=clopidogrel] .badge")
    assert badge.value_of_css_property("background-color") == "rgba(198, 40, 40, 1)"   # --critical
    violations = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert not violations, violations
    page = requests.get(summary_link(service), timeout=10)
    assert "X-Frame-Options" not in page.headers and "'unsafe-inline'" not in page.headers["Content-Security-Policy"]


def test_a_trusted_ehr_may_frame_the_page_and_another_origin_may_not(service, browser):
    link = summary_link(service)
    trusted, other = EhrPage(link, TRUSTED_PORT), EhrPage(link)
    try:
        browser.get(trusted.url)
        browser.switch_to.frame(wait_for(browser, "iframe#app"))
        assert "Poor Metabolizer" in wait_for(browser, "table#results").text
        browser.switch_to.default_content()

        browser.get(other.url)
        browser.switch_to.frame(wait_for(browser, "iframe#app"))
        assert not browser.find_elements(By.CSS_SELECTOR, "table#results")   # Chromium refused to show it
        browser.switch_to.default_content()
        blocked = [e["message"] for e in browser.get_log("browser") if "frame-ancestors" in e.get("message", "")]
        assert blocked, "Chromium did not report the refused frame"
    finally:
        browser.switch_to.default_content()
        trusted.stop()
        other.stop()
    # the workbench and every other page still refuse any frame
    workbench = requests.get(f"{service.url}/workbench/", timeout=10)
    assert workbench.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in \
        workbench.headers["Content-Security-Policy"]


@pytest.mark.parametrize("capabilities,scope", [
    (("launch-ehr", "permission-v2", "permission-v1"), "patient/Observation.rs"),
    (("launch-ehr", "permission-v1"), "patient/Observation.read"),
    (("launch-ehr",), "patient/Observation.read"),
])
def test_the_launch_asks_for_the_scopes_the_ehr_offers(service, capabilities, scope):
    ehr = SmartEhr(capabilities=capabilities)
    try:
        answer = requests.get(f"{service.url}/smart/launch", params={"launch": ehr.launch, "iss": ehr.fhir_base},
                              allow_redirects=False, timeout=10)
        assert answer.status_code == 302
        asked = parse_qs(urlparse(answer.headers["Location"]).query)["scope"][0].split()
        assert scope in asked and {"launch", "openid", "fhirUser"} <= set(asked)
    finally:
        ehr.stop()


def test_the_frame_ancestors_name_the_trusted_origins():
    from cds.smartapp.views import frame_ancestors, page_policy

    assert frame_ancestors(["https://EHR.example.org:8443/fhir/r4", "not a url"], None) == \
        ["https://ehr.example.org:8443"]
    assert page_policy([]).endswith("frame-ancestors 'self'")
    assert json.dumps(page_policy(["https://ehr.example.org"])).count("frame-ancestors 'self' https://ehr.example.org")
