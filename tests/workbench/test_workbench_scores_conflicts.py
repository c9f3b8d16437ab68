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
