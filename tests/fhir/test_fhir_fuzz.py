"""Bounded fuzzing (hypothesis) of the FHIR readers and of the hook endpoint: real resources (IG examples,
the CDS Hooks specification's and the sandbox's draft orders) with one to three fields replaced by JSON of
the wrong type. Readers must neither raise nor fall back to their internal-error path, and the service
must answer every such request without a 5xx (issue 12, item 4: a MedicationRequest.status that is an
object or an array gave HTTP 500).

The example counts are fixed (`max_examples`) and the database of failing examples is off, so the suite
stays fast and reproducible (derandomized)."""
from __future__ import annotations

import copy
import json
import logging
import uuid

import pytest
import requests
from fhir_fixtures import FIXTURES, load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.fhir import read_genomic_results

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

GENOMIC_SEEDS = ["shared/ig-stu3/Bundle-bundle-pgxexample.json", "shared/ig-stu1/Bundle-diagnosticreport-pgxexample.json",
                 "built/diagnosticreport-contained-cyp2c19.json", "built/lab-hla-b-5701-concept.json",
                 "shared/ig-stu3/Observation-genotype-hla-a-glstring-r4.json", "built/conflicting-bundle.json"]
ORDER_SEEDS = ["built/draft-orders-bundle.json", "shared/cds-hooks_docs/order-sign__Example_R4.json"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "final", "*1/*2", "Patient/x", "http://loinc.org"]))
wrong_json = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=6)


def _paths(node, path=()):
    """Every (container, key) in a JSON document, so any field or list item can be replaced."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield node, k
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield node, i
            yield from _paths(v, path + (i,))


@st.composite
def mutated(draw, seeds):
    doc = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(doc))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        container[key] = draw(wrong_json)
    return doc


def _seeds(names):
    return [load(n) for n in names]


@FUZZ
@given(doc=mutated(_seeds(GENOMIC_SEEDS)))
def test_genomic_reader_survives_wrong_json_types(doc, caplog):
    caplog.set_level(logging.ERROR, logger="cds.fhir")
    reading = read_genomic_results([doc], patient_ref="Patient/example")
    assert not any("internal error" in s for s in reading.skipped), reading.skipped
    assert "failed" not in caplog.text


@FUZZ
@given(doc=mutated(_seeds(ORDER_SEEDS)))
def test_medication_reader_survives_wrong_json_types(resolver, doc):
    draft = doc.get("context", {}).get("draftOrders", doc) if isinstance(doc.get("context"), dict) else doc
    for order in resolver.read_orders(draft, patient_ref="Patient/1288992"):
        assert order.resolution != "internal-error", order


@pytest.mark.parametrize("status", [{"coding": []}, ["draft"], 7, None, True])
def test_medication_request_status_of_the_wrong_type_is_read(resolver, status):
    """Issue 12 item 4: a status object or array was a 500 (unhashable in the skip-status check)."""
    draft = load("built/draft-orders-bundle.json")
    for entry in draft["entry"]:
        if entry["resource"]["resourceType"] == "MedicationRequest":
            entry["resource"]["status"] = status
    orders = resolver.read_orders(draft)
    assert orders and all(o.resolution != "internal-error" for o in orders)


# --- the service ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from live_service import LiveServer

    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("fuzz")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    server = LiveServer(create_app(Settings(auth_mode="off", fhir_timeout=2.0, fhir_budget=4.0), store=store))
    yield server
    server.stop()
    store.close()


def _hook_body() -> dict:
    draft = load("built/draft-orders-bundle.json")
    genomics = load("built/conflicting-bundle.json")
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "example", "draftOrders": draft},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "example", "birthDate": "1970-01-01"},
                         "genomics": genomics}}


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=mutated([_hook_body()]))
def test_hook_endpoint_never_answers_5xx(live, body):
    response = requests.post(f"{live.url}/cds-services/pgx-order-sign", data=json.dumps(body),
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "message" in response.json()       # a clear reason, not a stack trace


def test_fixtures_exist():
    assert all((FIXTURES / n).exists() for n in GENOMIC_SEEDS + ORDER_SEEDS)
