"""Issue 24 item 3: another patient's id is written nowhere. A request whose prefetch and draft orders
hold another patient's resources (a misbehaving EHR, a search that was not filtered) is answered for
its own patient; the other patient's results and orders are not used and the audit says so, naming
each resource without that patient's id, in the log and in every audit table, after a real call."""
from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from live_service import ServeProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from fhirdata import genotype, hook_request, medication_request, searchset  # noqa: E402

OWN = "pat-own-5150"
OTHER = "pat-other-8642"           # distinctive: any leak is found by a plain substring search


def database_text(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in inspect(conn).get_table_names()
                             for row in conn.execute(text(f'SELECT * FROM "{table}"')))
    finally:
        engine.dispose()


def mixed_request() -> dict:
    """Our patient's CYP2C19 result and clopidogrel order, beside the other patient's result (by
    relative and by absolute reference), a report about them, and two orders for them."""
    theirs = genotype("CYP2C19", "*1/*1", patient=OTHER, oid=f"{OTHER}-cyp2c19")
    absolute = genotype("CYP2D6", "*4/*4", patient=OTHER, oid=f"obs-{OTHER}")
    absolute["subject"] = {"reference": f"https://ehr.example.org/fhir/Patient/{OTHER}/_history/3"}
    report = {"resourceType": "DiagnosticReport", "id": f"{OTHER}-pgx-report", "status": "final",
              "code": {"text": "Pharmacogenomic panel"}, "subject": {"reference": f"Patient/{OTHER}"},
              "result": [{"reference": f"Observation/{OTHER}-cyp2c19"}]}
    their_order = medication_request("simvastatin", mid=f"{OTHER}-rx", patient=OTHER)
    their_completed = medication_request("codeine", mid=f"{OTHER}-old-rx", patient=OTHER, status="completed")
    body = hook_request("order-sign", medication_request("clopidogrel", mid="own-rx", patient=OWN),
                        their_order, their_completed, patient=OWN,
                        genomics=searchset(genotype("CYP2C19", "*2/*2", patient=OWN), theirs, absolute, report))
    return body


def test_another_patients_id_is_in_no_log_line_and_no_audit_row(tmp_path):
    service = ServeProcess(tmp_path, workers=1, env={"CDS_LOG_LEVEL": "DEBUG"})
    try:
        answer = service.post("/cds-services/pgx-order-sign", mixed_request())
        assert answer.status_code == 200
        cards = answer.json()["cards"]
        assert [c for c in cards if "Clopidogrel" in c["summary"] or "clopidogrel" in c["summary"]]
        assert OTHER not in answer.text
        assert service.post("/cds-services/pgx-order-sign", mixed_request()).status_code == 200
    finally:
        log = service.stop()
    stored = database_text(service.env["DATABASE_URL"])
    assert "its subject is not the patient of this request" in stored      # the audit says what was left out,
    assert "[other patient]" in stored                                     # naming each without the id
    assert OTHER not in stored
    assert "pgx-order-sign" in log and OTHER not in log
