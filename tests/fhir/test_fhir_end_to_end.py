"""One patient (CYP2C19 poor metabolizer) sent to the running CDS Hooks service in three shapes of
pharmacogenomic result; a clopidogrel order gets the same card each time.

1. IG genotype: IG STU3 Observation-Pgx-geno-1001 (ClinVar display "CYP2C19*2/*2").
2. IG therapeutic implication: IG STU3 Observation-TxImp01 (LA9657-3 "Poor metabolizer"), with the
   genotype it is derived from coded only by its ClinVar id (no display): that genotype names the gene
   but its diplotype cannot be read, so the implication alone decides.
3. Lab-style text: tests/fixtures/fhir/built/lab-cyp2c19-genotype-text.json ("CYP2C19 *2/*2").

The service runs for real on loopback (werkzeug, the app built by create_app as gunicorn builds it),
with a SQLite audit store in a temporary directory.
"""
from __future__ import annotations

import threading
import uuid

import pytest
import requests
from fhir_fixtures import load
from werkzeug.serving import make_server


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("fhir-e2e")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off", fhir_timeout=2.0, fhir_budget=4.0), store=store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    store.close()


def for_patient(resource: dict, patient: str = "example") -> dict:
    """The IG examples are about Patient/CGPatientExample01; only the context patient's results count."""
    resource["subject"] = {"reference": f"Patient/{patient}"}
    return resource


def ig_genotype() -> list[dict]:
    return [for_patient(load("shared/ig-stu3/Observation-Pgx-geno-1001.json"))]


def ig_therapeutic_implication() -> list[dict]:
    geno = for_patient(load("shared/ig-stu3/Observation-Pgx-geno-1001.json"))
    del geno["valueCodeableConcept"]["coding"][0]["display"]        # ClinVar 638797 only
    return [for_patient(load("shared/ig-stu3/Observation-TxImp01.json")), geno]


def test_the_ig_example_for_another_patient_gives_no_card_and_says_why(service_url):
    """Observation-Pgx-geno-1001 as published is about Patient/CGPatientExample01, not the context
    patient 'example': it is not used (the audit record says why)."""
    assert sign_clopidogrel(service_url, [load("shared/ig-stu3/Observation-Pgx-geno-1001.json")]) == []


def lab_text() -> list[dict]:
    return [load("built/lab-cyp2c19-genotype-text.json")]


def sign_clopidogrel(url: str, observations: list[dict]) -> list[dict]:
    clopidogrel = load("shared/sandbox/order-select_context_clopidogrel_309362.json")["draftOrders"]
    for entry in clopidogrel["entry"]:          # the sandbox's order is for Patient/smart-1288992
        for_patient(entry["resource"])
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "example", "draftOrders": clopidogrel},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "example"},
                         "genomics": {"resourceType": "Bundle", "type": "searchset",
                                      "entry": [{"resource": o} for o in observations]}}}
    response = requests.post(f"{url}/cds-services/pgx-order-sign", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def essentials(card: dict) -> tuple:
    return (card["summary"], card["indicator"], card["source"]["url"],
            tuple(s["label"] for s in card.get("suggestions", [])))


def test_three_shapes_give_the_same_card(service_url):
    cards = {name: sign_clopidogrel(service_url, shape())
             for name, shape in [("ig-genotype", ig_genotype), ("ig-implication", ig_therapeutic_implication),
                                 ("lab-text", lab_text)]}
    for name, got in cards.items():
        assert len(got) == 1, (name, got)
    first = essentials(cards["ig-genotype"][0])
    assert first[0].startswith("Clopidogrel: CYP2C19 Poor Metabolizer")
    assert first[1] == "critical"
    assert first[2] == "https://cpicpgx.org/guidelines/guideline-for-clopidogrel-and-cyp2c19/"
    assert essentials(cards["ig-implication"][0]) == first
    assert essentials(cards["lab-text"][0]) == first
    # the genotype shapes show the diplotype; the implication could only state the phenotype
    # (the detail is Markdown: the stars are escaped, "\*2/\*2", so CommonMark shows them as written)
    assert r"\*2/\*2" in cards["ig-genotype"][0]["detail"] and r"\*2/\*2" in cards["lab-text"][0]["detail"]


def test_a_normal_metabolizer_in_lab_text_gets_no_card(service_url):
    normal = load("built/lab-cyp2c19-genotype-text.json")
    normal["valueString"] = "CYP2C19 *1/*1"
    assert sign_clopidogrel(service_url, [normal]) == []
