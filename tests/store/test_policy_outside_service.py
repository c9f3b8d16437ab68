"""Faces that decide or report outside the service follow the policy the service serves: under
governance (the default) that is the database's active version, not the rules/ files on disk. A
screening run recorded in a database decides with its active version, and `cds report` lists "rules
that never fired" from it (issue 22: the committee's change is what every face applies). On SQLite and
PostgreSQL, as tests/store runs in CI."""
from __future__ import annotations

import csv
import json

from policy_support import NEW_WORDING, OLD_WORDING, add_people, antiplatelets, cds
from store_fixtures import backend, db  # noqa: F401 - pytest fixtures

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _cohort(folder):
    """One patient: CYP2C19 *2/*2 on file and clopidogrel active (the antiplatelets rule's card)."""
    folder.mkdir()
    resources = {
        "Patient": [{"resourceType": "Patient", "id": "p1", "birthDate": "1960-05-01"}],
        "Observation": [{
            "resourceType": "Observation", "id": "geno-1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01",
            "valueCodeableConcept": {"text": "CYP2C19 *2/*2"},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                "code": "HGNC:2621", "display": "CYP2C19"}]}}]}],
        "MedicationRequest": [{
            "resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "32968", "display": "clopidogrel"}]}}],
    }
    for kind, items in resources.items():
        (folder / f"{kind}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in items))
    return folder


def _summaries(out):
    with open(out / "actionable.csv", newline="") as f:
        return [row["summary"] for row in csv.DictReader(f) if row["drug"] == "clopidogrel"]


def test_screening_and_the_report_follow_the_active_policy_version(backend, db, tmp_path):
    url = backend.direct_url
    cohort = _cohort(tmp_path / "export")

    before = cds(url, "screen", str(cohort), "--out", str(tmp_path / "before"), "--workers", "1")
    assert before.returncode == 0, before.stderr
    assert [OLD_WORDING in s for s in _summaries(tmp_path / "before")] == [True]
    assert json.loads((tmp_path / "before" / "summary.json").read_text())["policy_version"] is None  # no version yet

    add_people(url, ("alice", "bob"))
    edited = antiplatelets(tmp_path / "edit", expect="prefer prasugrel")
    proposed = cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "wording", "--json")
    assert proposed.returncode == 0, proposed.stderr
    number = json.loads(proposed.stdout)["id"]
    assert cds(url, "policy", "approve", str(number), "--approver", "bob").returncode == 0

    after = cds(url, "screen", str(cohort), "--out", str(tmp_path / "after"), "--workers", "1")
    assert after.returncode == 0, after.stderr
    assert [NEW_WORDING in s for s in _summaries(tmp_path / "after")] == [True]
    assert json.loads((tmp_path / "after" / "summary.json").read_text())["policy_version"] == number

    # the rules/ files still say the old wording: a run that is not recorded decides with them, as before
    unrecorded = cds(url, "screen", str(cohort), "--out", str(tmp_path / "files"), "--workers", "1", "--no-record")
    assert unrecorded.returncode == 0, unrecorded.stderr
    assert [OLD_WORDING in s for s in _summaries(tmp_path / "files")] == [True]


def test_the_report_lists_never_fired_rules_of_the_active_version(backend, db, tmp_path):
    """The committee renames the clopidogrel rule: the report's never-fired list names the new id and
    not the old one, which the service no longer has."""
    url = backend.direct_url
    add_people(url, ("alice", "bob"))
    renamed = antiplatelets(tmp_path / "edit", old="id: clopidogrel-cyp2c19", new="id: clopidogrel-cyp2c19-pt-2026")
    proposed = cds(url, "policy", "propose", str(renamed), "--author", "alice", "--reason", "rule renamed", "--json")
    assert proposed.returncode == 0, proposed.stderr
    number = json.loads(proposed.stdout)["id"]
    assert cds(url, "policy", "approve", str(number), "--approver", "bob").returncode == 0
    report = cds(url, "report", "--format", "json")
    assert report.returncode == 0, report.stderr
    never = json.loads(report.stdout)["never_fired"]
    assert "clopidogrel-cyp2c19-pt-2026" in never and "clopidogrel-cyp2c19" not in never
