"""CPIC 1.54 through the running service: `cds serve` (gunicorn) in a subprocess, as an operator starts
it; order-select with FHIR genotype Observations in the prefetch; the card's recommendation paragraph is
CPIC's row of ../shared/cpic/v1.54/cpic_recommendations_v1.54.tsv, read here (line breaks and the
errata of guidelines/errata/cpic.tsv applied, as CPIC means the text)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fhirdata import RXNORM, genotype, hook_request, searchset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "knowledge"))
from cpic_sources import read_release, release_recommendation_texts  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cds-serve")
    port = _port()
    env = {**os.environ, "CDS_AUTH": "off", "DATABASE_URL": f"sqlite:///{workdir / 'audit.sqlite3'}",
           "CDS_AUDIT_KEY": "k" * 32, "CDS_SPOOL_DIR": str(workdir / "spool"), "CDS_WORKERS": "1"}
    log = (workdir / "service.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(port)],
                               env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert process.poll() is None, (workdir / "service.log").read_text()
        time.sleep(0.3)
    else:
        process.kill()
        raise AssertionError("cds serve did not come up: " + (workdir / "service.log").read_text())
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    log.close()


def _cpic(drug: str, lookup: dict[str, str]) -> dict[str, str]:
    (row,) = [r for r in read_release("cpic_recommendations_v1.54.tsv") if r["drugname"] == drug
              and json.loads(r["lookupkey_json(reconstructed)"]) == lookup]
    return row


def _order(drug: str) -> dict:
    """A draft MedicationRequest coded with CPIC's RxNorm ingredient code for the drug (cpic_drugs_v1.54.tsv)."""
    (row,) = [r for r in read_release("cpic_drugs_v1.54.tsv") if r["name"] == drug]
    return {"resourceType": "MedicationRequest", "id": f"mr-{drug}", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": row["rxnormid"], "display": drug}],
                                          "text": drug}}


def _order_select(url: str, drug: str, *observations) -> list[dict]:
    body = hook_request("order-select", _order(drug), genomics=searchset(*observations))
    response = requests.post(f"{url}/cds-services/pgx-order-select", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def _recommendation_paragraph(detail: str) -> str:
    paragraphs = detail.split("\n\n")
    heading = next(i for i, p in enumerate(paragraphs) if p.startswith("**Recommendation**"))
    return paragraphs[heading + 1]


def test_mercaptopurine_nudt15_no_plus_decreased_function_gets_cpic_strong_card(served):
    """NUDT15 *3 (no function) / *5 (decreased function, release 1.54) is a Poor Metabolizer by CPIC's result
    definition: the card carries CPIC's Strong recommendation, word for word."""
    cards = _order_select(served, "mercaptopurine", genotype("NUDT15", "*3/*5"), genotype("TPMT", "*1/*1"))
    row = _cpic("mercaptopurine", {"NUDT15": "Poor Metabolizer", "TPMT": "Normal Metabolizer"})
    assert row["classification"] == "Strong"
    (card,) = cards
    assert _recommendation_paragraph(card["detail"]) == release_recommendation_texts()[row["id"]]
    assert "classification: Strong" in card["detail"] and "NUDT15" in card["summary"]
    assert card["indicator"] in ("warning", "critical")
    assert f"cpic-{row['id']}" in card["detail"]


def test_a_drug_only_release_1_54_has_reaches_the_card(served):
    """Hydralazine (NAT2, new in release 1.54, no PMID in the release data): NAT2 *5/*6 is two decreased
    function alleles, a Poor Metabolizer; the card cites the guideline by its CPIC URL."""
    cards = _order_select(served, "hydralazine", genotype("NAT2", "*5/*6"))
    row = _cpic("hydralazine", {"NAT2": "Poor Metabolizer"})
    (card,) = cards
    assert _recommendation_paragraph(card["detail"]) == release_recommendation_texts()[row["id"]]
    assert card["source"]["url"] == "https://cpicpgx.org/guidelines/cpic-guideline-for-hydralazine-and-nat2/"
    assert "no PMID in the source release" in card["detail"]
