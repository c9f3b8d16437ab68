"""A real pgx-cds service on loopback (werkzeug's HTTP server on a thread, the app built by
create_app exactly as gunicorn builds it) and a real FHIR server on loopback for the fetch path."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from live_service import LiveServer


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """The service in development mode (no JWT) with a SQLite audit store in a temp dir."""
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("service")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off", fhir_timeout=0.5, fhir_budget=1.0), store=store)
    live = LiveServer(app)
    yield live
    live.stop()
    store.close()


class FhirServer:
    """Serves FHIR searches from a dict of resources per patient; records every request it gets."""

    def __init__(self):
        self.resources: dict[str, list[dict]] = {}   # patient id → resources
        self.requests: list[dict] = []
        self.delay = 0.0
        self.fail_with: int | None = None
        fhir = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parsed = urlparse(self.path)
                fhir.requests.append({"path": parsed.path, "query": parse_qs(parsed.query),
                                      "authorization": self.headers.get("Authorization")})
                if fhir.delay:
                    time.sleep(fhir.delay)
                if fhir.fail_with:
                    self.send_response(fhir.fail_with)
                    self.end_headers()
                    return
                relative = parsed.path.removeprefix("/fhir").strip("/")
                kind = relative.split("/")[0]
                query = parse_qs(parsed.query)
                patient = (query.get("patient") or query.get("subject") or [""])[0]
                if "/" in relative:                     # a read: Patient/123
                    kind, rid = relative.split("/")[:2]
                    body = {"resourceType": kind, "id": rid, "birthDate": "1970-01-01"}
                else:
                    matches = [r for r in fhir.resources.get(patient, []) if r["resourceType"] == kind]
                    body = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                            "entry": [{"resource": r} for r in matches]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the service hung up on a deliberately slow answer: expected in the timeout tests

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture()
def fhir_server():
    server = FhirServer()
    yield server
    server.stop()
