"""`cds screen --fhir` against a Bulk Data server on loopback: kick-off (202 + Content-Location),
polling that honours Retry-After, the manifest, NDJSON downloads with the bearer token, export
errors listed as unreadable, and failures that say what went wrong."""
from __future__ import annotations

import csv
import json
import re
import time

from bulk_server import TOKEN, BulkServer


def run_cli(argv):
    from cds.cli import main
    return main(argv)


def test_screen_fhir_runs_the_export_and_records_the_run(small_cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CDS_AUDIT_KEY", "a" * 40)
    server = BulkServer(small_cohort)
    db = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    try:
        status = run_cli(["screen", "--fhir", server.url, "--token", TOKEN, "--out", str(tmp_path / "out"),
                          "--workers", "1", "--database-url", db])
    finally:
        server.stop()
    assert status == 0, capsys.readouterr().err
    polls = [t for t, method, path, _ in server.requests if path == "/status/job1" and method == "GET"]
    assert len(polls) == 3 and all(b - a >= 0.9 for a, b in zip(polls, polls[1:]))   # Retry-After: 1 honoured
    kickoff = next(h for _, _, p, h in server.requests if p.startswith("/fhir/$export"))
    assert kickoff["Prefer"] == "respond-async" and kickoff["Authorization"] == f"Bearer {TOKEN}"
    assert "_type=Patient" in next(p for _, _, p, _ in server.requests if p.startswith("/fhir/$export")).replace("%2C", ",")
    assert any(m == "DELETE" for _, m, _, _ in server.requests)

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["patients"] == 40 and summary["input"]["source"] == server.url
    with open(tmp_path / "out" / "unreadable.csv", newline="") as f:
        export_rows = [r for r in csv.DictReader(f) if r["kind"] == "export"]
    assert export_rows and "Observation/obs-9 could not be serialised" in export_rows[0]["reason"]

    # the run is in the audit store and in `cds report`
    assert run_cli(["report", "--database-url", db]) == 0
    report = capsys.readouterr().out
    assert "screening runs (1 most recent)" in report
    line = next(l for l in report.splitlines() if "embedded×1" in l)
    assert " 40 " in line and summary["input"]["digest"][:19] in line

    # … and on the workbench's statistics page
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    store = Store.open(db, spool_dir=tmp_path / "spool", audit_key="a" * 40)
    try:
        page = create_app(Settings(auth_mode="off"), store=store).test_client().get("/workbench/statistics")
    finally:
        store.close()
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="screening-runs"' in text
    row = re.search(r'<table class="screening-runs">.*?<tbody>\s*<tr>(.*?)</tr>', text, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[2] == "40" and cells[3] == str(summary["counts"]["patients_actionable"])
    assert "embedded × 1" in row


def test_export_errors_say_what_the_server_said(small_cohort, tmp_path, capsys):
    server = BulkServer(small_cohort, polls_before_done=1, retry_after="0", fail_status=500)
    try:
        assert run_cli(["screen", "--fhir", server.url, "--token", TOKEN, "--out", str(tmp_path / "a"),
                        "--no-record"]) == 1
        assert "export job failed: disk full" in capsys.readouterr().err
        assert run_cli(["screen", "--fhir", server.url, "--out", str(tmp_path / "b"), "--no-record"]) == 1
        err = capsys.readouterr().err
        assert "kick-off" in err and "401" in err and "a valid bearer token is required" in err
    finally:
        server.stop()
    assert run_cli(["screen", "--fhir", "http://127.0.0.1:9/fhir", "--out", str(tmp_path / "c"), "--no-record"]) == 1
    assert "Bulk Data kick-off failed" in capsys.readouterr().err


def test_retry_after_as_an_http_date():
    from email.utils import formatdate

    from cds.screen.bulk import retry_after

    now = time.time()
    assert 9 <= retry_after(formatdate(now + 10, usegmt=True), now) <= 10
    assert retry_after("3") == 3 and retry_after(None) == 1.0 and retry_after("soon") == 1.0
