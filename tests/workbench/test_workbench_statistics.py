"""The statistics page over a real SQLite audit store: hook calls made through the service, feedback
from the "EHR", then the chart and table of the committee report (cds/store/report.py)."""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone

import pytest

from pgx_paths import REPO

EXAMPLE = REPO / "cds/workbench/examples/order-select-clopidogrel-cyp2c19.json"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("audit")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off"), store=store)
    yield app
    store.close()


def _call(client) -> dict:
    body = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    response = client.post("/cds-services/pgx-order-select", json=body)
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    return card


def test_chart_counts_alerts_and_outcomes(audited):
    client = audited.test_client()
    empty = client.get("/workbench/statistics")
    assert empty.status_code == 200 and 'id="no-cards"' in empty.get_data(as_text=True)

    overridden, accepted, unanswered = _call(client), _call(client), _call(client)
    now = datetime.now(timezone.utc).isoformat()
    feedback = {"feedback": [
        {"card": overridden["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
         "overrideReason": {"reason": overridden["overrideReasons"][1]}},
        {"card": accepted["uuid"], "outcome": "accepted", "outcomeTimestamp": now,
         "acceptedSuggestions": [{"id": accepted["suggestions"][0]["uuid"]}]},
    ]}
    assert client.post("/cds-services/pgx-order-select/feedback", json=feedback).status_code == 200
    assert unanswered["uuid"]

    response = client.get("/workbench/statistics")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    bar = re.search(r'<g class="bar" data-rule="clopidogrel-cyp2c19" data-alerts="(\d+)">(.*?)</g>', page, re.S)
    assert bar and bar.group(1) == "3"
    segments = dict(re.findall(r'<rect class="seg-(\w+)"[^>]*width="([\d.]+)"', bar.group(2)))
    assert set(segments) == {"accepted", "overridden", "no_feedback"}
    assert float(segments["accepted"]) == float(segments["overridden"]) == pytest.approx(float(segments["no_feedback"]))
    text = html.unescape(page)
    assert "Will monitor response or drug levels — 1" in text          # the top override reason
    assert "<strong>3</strong> calls, <strong>3</strong> cards" in text
    row = re.search(r'<tr><td><a href="/workbench/rules/clopidogrel-cyp2c19">.*?</tr>', page, re.S).group(0)
    assert re.findall(r'class="num">([^<]*)<', row) == ["3", "1", "1", "1", "33.3", "33.3"]
    assert "abacavir-hla-b" in text.split("Rules that never fired")[1]


def test_since_filters_and_bad_dates_are_a_message(audited):
    client = audited.test_client()
    later = client.get("/workbench/statistics", query_string={"since": "2999-01-01"})
    assert later.status_code == 200 and 'id="no-cards"' in later.get_data(as_text=True)
    bad = client.get("/workbench/statistics", query_string={"since": "last tuesday"})
    assert bad.status_code == 400 and "is not a date" in html.unescape(bad.get_data(as_text=True))


def test_without_a_store_the_page_says_so(client):
    response = client.get("/workbench/statistics")
    assert response.status_code == 200 and "No audit store on this instance" in response.get_data(as_text=True)
