"""Acceptance: for 200 synthetic patients, every patient's screening rows are the cards the running
service returns for the same patient's data sent as hook calls (one order-sign per active order).

The hook calls are built here from the NDJSON read with plain json (ndjson_data), the way an EHR
would send them: the order as a draft MedicationRequest, the Patient, the patient's Observations and
DiagnosticReports as the genomics prefetch, their active Consents."""
from __future__ import annotations

import csv
import re
import uuid
from collections import defaultdict

import pytest

from ndjson_data import resources_by_patient

RECOMMENDATION = re.compile(r"Recommendations? `([^`]+)`")   # the first, as screening records it


def hook_call(patient: list[dict], order: dict) -> dict:
    pid = next(r["id"] for r in patient if r["resourceType"] == "Patient")
    draft = {"resourceType": "MedicationRequest", "id": order["id"], "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{pid}"}, "medicationCodeableConcept": order["medicationCodeableConcept"]}
    genomics = [r for r in patient if r["resourceType"] in ("Observation", "DiagnosticReport")]
    consents = [r for r in patient if r["resourceType"] == "Consent" and r.get("status") == "active"]
    return {
        "hook": "order-sign", "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/screening-test", "patientId": pid,
                    "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}},
        "prefetch": {
            "patient": next(r for r in patient if r["resourceType"] == "Patient"),
            "genomics": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in genomics]},
            "consent": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in consents]},
        },
    }


def classify(card: dict) -> tuple[str, tuple]:
    rule = card["source"].get("topic", {}).get("code")
    found = RECOMMENDATION.search(card["detail"])
    if found:   # a recommendation card, even one that also offers a test (a partner gene with no result)
        return "actionable", (rule, found.group(1), card["indicator"], card["summary"])
    actions = [a for s in card.get("suggestions") or [] for a in s["actions"]]
    if any(a.get("resource", {}).get("resourceType") == "ServiceRequest" for a in actions):
        return "testing", (rule, card["indicator"], card["summary"])
    return "notice", (rule, card["summary"])


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def screened(cohort, tmp_path_factory):
    from cds.screen.run import ScreenOptions, screen

    out = tmp_path_factory.mktemp("screened")
    result = screen(ScreenOptions(input_dir=cohort, out=out, workers=2, raw_ids=True, audit_key=b"s" * 40,
                                  progress=False))
    return out, result.summary


def test_every_patients_rows_are_the_services_cards(cohort, screened, service):
    out, summary = screened
    patients = resources_by_patient(cohort)
    assert summary["counts"]["patients"] == len(patients) == 200

    rows: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in read_rows(out / "actionable.csv"):
        rows[r["patient"]]["actionable"].add((r["rule"], r["recommendation_id"], r["indicator"], r["summary"]))
    for r in read_rows(out / "testing.csv"):
        rows[r["patient"]]["testing"].add((r["rule"], r["indicator"], r["summary"]))
    for r in read_rows(out / "unreadable.csv"):
        if r["kind"] == "card":
            rows[r["patient"]]["notice"].add((r["where"], r["reason"]))
    withheld = {r["patient"] for r in read_rows(out / "withheld.csv")}

    calls = 0
    seen = defaultdict(int)
    for pid, resources in sorted(patients.items()):
        cards: dict[str, set] = defaultdict(set)
        for order in resources:
            if order["resourceType"] in ("MedicationRequest", "MedicationStatement") and order["status"] == "active":
                response = service.call("pgx-order-sign", hook_call(resources, order))
                assert response.status_code == 200, response.text
                calls += 1
                for card in response.json()["cards"]:
                    kind, key = classify(card)
                    cards[kind].add(key)
                    seen[kind] += 1
        for kind in ("actionable", "testing", "notice"):
            assert rows[pid][kind] == cards[kind], f"{pid} {kind}: screening {rows[pid][kind]} vs service {cards[kind]}"
        denies = any(r["resourceType"] == "Consent" for r in resources)
        assert (pid in withheld) == denies, pid
    # The comparison means something only if the cohort exercises every kind of row.
    assert calls > 150 and seen["actionable"] > 5 and seen["testing"] > 5
    assert summary["counts"]["patients_consent_withheld"] == len(withheld) > 0


def test_screening_does_not_depend_on_line_order_or_worker_count(cohort, screened, tmp_path):
    """The same export with every file's lines reversed, on one worker, gives the same files."""
    from cds.screen.run import ScreenOptions, screen

    out, _ = screened
    shuffled = tmp_path / "reversed"
    shuffled.mkdir()
    for path in cohort.glob("*.ndjson"):
        (shuffled / path.name).write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    for path in cohort.glob("*.txt"):       # listed in unreadable.csv as not read, like any other file
        (shuffled / path.name).write_text(path.read_text())
    again = tmp_path / "out"
    screen(ScreenOptions(input_dir=shuffled, out=again, workers=1, raw_ids=True, audit_key=b"s" * 40, progress=False))
    for name in ("actionable.csv", "testing.csv", "carriers.csv", "unreadable.csv", "withheld.csv", "no_card.csv"):
        assert (again / name).read_text() == (out / name).read_text(), name
