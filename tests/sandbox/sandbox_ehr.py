"""The EHR side the CDS Hooks sandbox needs, on loopback: a FHIR R4 server it reads the patient from and
runs our prefetch searches against, the HSPC-style launch endpoint it asks for a SMART `launch` id
(`POST {fhir}/_services/smart/Launch`, src/retrieve-data-helpers/launch-context-retrieval.js in its
sources) and the SMART App Launch endpoints our summary page then uses (.well-known/smart-configuration,
authorize, token; the token response carries the card's appContext). CORS on every answer: the sandbox
is a page of another origin. Real HTTP; every request is recorded."""
from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse


class SandboxEhr:
    def __init__(self, patient: dict, resources: list[dict]):
        self.patient = patient
        self.resources = resources
        self.launches: dict[str, dict] = {}          # launch id → the parameters the sandbox posted
        self.codes: dict[str, str] = {}              # authorization code → launch id
        self.requests: list[tuple[str, str]] = []
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body=None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                if body is not None:
                    self.send_header("Content-Type", "application/fhir+json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self):
                self._send(204)

            def do_GET(self):
                ehr.requests.append(("GET", self.path))
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._send(*ehr._get(url.path, query))

            def do_POST(self):
                ehr.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length", 0))
                self._send(*ehr._post(urlparse(self.path).path, self.rfile.read(length).decode(),
                                      self.headers.get("Content-Type", "")))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.fhir_base = f"{self.url}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    # --- FHIR ----------------------------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, str]):
        if path == "/fhir/metadata":
            return 200, {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                         "fhirVersion": "4.0.1", "format": ["json"]}
        if path == "/fhir/.well-known/smart-configuration":
            return 200, {"authorization_endpoint": f"{self.url}/auth/authorize", "token_endpoint": f"{self.url}/auth/token",
                         "code_challenge_methods_supported": ["S256"],
                         "capabilities": ["launch-ehr", "context-ehr-patient", "permission-v2"]}
        if path == "/auth/authorize":
            return self._authorize(query)
        parts = path.removeprefix("/fhir/").split("/")
        if len(parts) == 2:
            return self._read(*parts)
        return 200, self._search(parts[0], query)

    def _read(self, rtype: str, rid: str):
        for resource in [self.patient, *self.resources]:
            if resource["resourceType"] == rtype and resource["id"] == rid:
                return 200, resource
        return 404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}

    def _search(self, rtype: str, query: dict[str, str]) -> dict:
        """A searchset of the patient's resources of that type (the other parameters — codes, status — are
        not applied: every resource here is one the search should find)."""
        if rtype == "Patient":
            found = [self.patient]
        else:
            wanted = query.get("patient") or query.get("subject")
            found = [r for r in self.resources if r["resourceType"] == rtype
                     and (wanted is None or r.get("subject", {}).get("reference") in (wanted, f"Patient/{wanted}"))]
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                "entry": [{"fullUrl": f"{self.fhir_base}/{r['resourceType']}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in found]}

    # --- the launch ------------------------------------------------------------------------------------

    def _post(self, path: str, body: str, content_type: str):
        if path == "/fhir/_services/smart/Launch":
            launch_id = secrets.token_urlsafe(8)
            self.launches[launch_id] = json.loads(body)
            return 200, {"launch_id": launch_id}
        if path == "/auth/token":
            form = {k: v[0] for k, v in parse_qs(body).items()}
            launch_id = self.codes.pop(form.get("code", ""), None)
            if launch_id is None or form.get("grant_type") != "authorization_code":
                return 400, {"error": "invalid_grant"}
            parameters = self.launches[launch_id].get("parameters", {})
            answer = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                      "scope": "launch patient/Observation.rs", "patient": parameters.get("patient")}
            if parameters.get("appContext"):
                answer["appContext"] = parameters["appContext"]
            return 200, answer
        return 404, {"error": "not found"}

    def _authorize(self, query: dict[str, str]):
        if query.get("launch") not in self.launches or query.get("code_challenge_method") != "S256":
            return 400, {"error": "invalid_request"}
        code = secrets.token_urlsafe(12)
        self.codes[code] = query["launch"]
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, None, {"Location": target}
