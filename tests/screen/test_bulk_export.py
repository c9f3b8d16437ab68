"""`cds screen --fhir` against a Bulk Data server on loopback: kick-off (202 + Content-Location),
polling that honours Retry-After, the manifest, NDJSON downloads with the bearer token, export
errors listed as unreadable, and failures that say what went wrong."""
from __future__ import annotations

import csv
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


TOKEN = "bulk-token-123"


class BulkServer:
    """A minimal Bulk Data export server over a folder of NDJSON files."""

    def __init__(self, folder, polls_before_done: int = 2, retry_after: str = "1", fail_status: int | None = None):
        self.folder = folder
        self.polls_before_done = polls_before_done
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.requests: list[tuple[float, str, str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, kind="application/fhir+json"):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _outcome(self, status, text):
                body = json.dumps({"resourceType": "OperationOutcome",
                                   "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]})
                self._send(status, body.encode())

            def do_DELETE(self):
                server.requests.append((time.monotonic(), "DELETE", self.path, dict(self.headers)))
                self._send(202)

            def do_GET(self):
                server.requests.append((time.monotonic(), "GET", self.path, dict(self.headers)))
                authorised = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                if self.path.startswith("/fhir/$export"):
                    if not authorised:
                        return self._outcome(401, "a valid bearer token is required")
                    if self.headers.get("Prefer") != "respond-async":
                        return self._outcome(400, "Prefer: respond-async is required")
                    return self._send(202, headers={"Content-Location": "/status/job1"})
                if self.path == "/status/job1":
                    polls = sum(1 for r in server.requests if r[2] == "/status/job1")
                    if polls <= server.polls_before_done:
                        return self._send(202, headers={"Retry-After": server.retry_after, "X-Progress": f"{polls * 40}%"})
                    if server.fail_status:
                        return self._outcome(server.fail_status, "export job failed: disk full")
                    files = sorted(p.name for p in server.folder.glob("*.ndjson"))
                    manifest = {"transactionTime": "2026-12-01T00:00:00Z", "request": "/fhir/$export",
                                "requiresAccessToken": True,
                                "output": [{"type": n.split(".")[0], "url": f"/files/{n}"} for n in files],
                                "error": [{"type": "OperationOutcome", "url": "/files/errors.ndjson"}]}
                    return self._send(200, json.dumps(manifest).encode(), kind="application/json")
                if self.path.startswith("/files/"):
                    if not authorised:
                        return self._outcome(401, "token required for downloads")
                    if self.path == "/files/errors.ndjson":
                        line = {"resourceType": "OperationOutcome", "issue": [
                            {"severity": "error", "code": "exception", "diagnostics": "Observation/obs-9 could not be serialised"}]}
                        return self._send(200, (json.dumps(line) + "\n").encode(), kind="application/fhir+ndjson")
                    path = server.folder / self.path.removeprefix("/files/")
                    return self._send(200, path.read_bytes(), kind="application/fhir+ndjson")
                self._outcome(404, "not found")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/fhir"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


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
