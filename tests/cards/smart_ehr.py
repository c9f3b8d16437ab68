"""An EHR's side of a SMART App Launch on loopback, for the SMART page tests: the FHIR server's
.well-known/smart-configuration, an authorization endpoint that approves the launch it was given (and
checks PKCE S256, client id, redirect), a token endpoint that returns the patient and, when set, the
card's appContext (SMART App Launch 2.x, "launch context"), and an Observation search that needs the
access token. Real HTTP; it records every request."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse


def _code_matches(resource: dict, tokens: str | None) -> bool:
    """FHIR token search on Observation.code (search.html#token): any of the comma-separated system|code."""
    if tokens is None:
        return True
    wanted = {tuple(t.split("|", 1)) if "|" in t else ("", t) for t in tokens.split(",")}
    codings = (resource.get("code") or {}).get("coding") or []
    return any((c.get("system"), c.get("code")) in wanted or ("", c.get("code")) in wanted for c in codings)


class SmartEhr:
    def __init__(self, launch: str = "launch-123", patient: str = "p1",
                 capabilities: tuple[str, ...] = ("launch-ehr", "context-ehr-patient")):
        self.launch, self.patient = launch, patient
        self.capabilities = list(capabilities)      # add "permission-v2" for a SMART v2 server
        self.app_context: str | None = None
        self.observations: list[dict] = []
        self.page_size: int | None = None     # None: one page; else FHIR R4 paging with `next` links
        self.requests: list[tuple[str, str]] = []
        self.codes: dict[str, dict] = {}
        self.token = secrets.token_urlsafe(16)
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body=None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                ehr.requests.append(("GET", self.path))
                if url.path == "/fhir/.well-known/smart-configuration":
                    return self._send(200, {"authorization_endpoint": f"{ehr.url}/auth/authorize",
                                            "token_endpoint": f"{ehr.url}/auth/token",
                                            "code_challenge_methods_supported": ["S256"],
                                            "capabilities": ehr.capabilities})
                if url.path == "/auth/authorize":
                    problems = [k for k, want in (("response_type", "code"), ("launch", ehr.launch),
                                                  ("code_challenge_method", "S256"), ("aud", f"{ehr.url}/fhir"))
                                if query.get(k) != want]
                    if problems or not query.get("code_challenge") or not query.get("redirect_uri"):
                        return self._send(400, {"error": "invalid_request", "wrong": problems})
                    code = secrets.token_urlsafe(12)
                    ehr.codes[code] = query
                    target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
                    return self._send(302, headers={"Location": target})
                if url.path == "/fhir/Observation":
                    if self.headers.get("Authorization") != f"Bearer {ehr.token}":
                        return self._send(401, {"resourceType": "OperationOutcome"})
                    if query.get("patient") != ehr.patient:
                        return self._send(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
                    found = [o for o in ehr.observations if _code_matches(o, query.get("code"))]
                    size = ehr.page_size or max(len(found), 1)
                    page = int(query.get("_page", "0"))
                    bundle = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": o} for o in found[page * size:(page + 1) * size]]}
                    if (page + 1) * size < len(found):
                        more = {k: v for k, v in query.items() if k != "_page"}
                        bundle["link"] = [{"relation": "next", "url": f"{ehr.fhir_base}/Observation?"
                                                                       f"{urlencode({**more, '_page': page + 1})}"}]
                    return self._send(200, bundle)
                return self._send(404, {"error": "not found"})

            def do_POST(self):
                ehr.requests.append(("POST", self.path))
                if urlparse(self.path).path != "/auth/token":
                    return self._send(404, {"error": "not found"})
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()).items()}
                granted = ehr.codes.pop(form.get("code", ""), None)
                if granted is None or form.get("grant_type") != "authorization_code" or \
                        form.get("redirect_uri") != granted["redirect_uri"] or form.get("client_id") != granted["client_id"]:
                    return self._send(400, {"error": "invalid_grant"})
                challenge = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest()).rstrip(b"=").decode()
                if challenge != granted["code_challenge"]:
                    return self._send(400, {"error": "invalid_grant", "error_description": "PKCE"})
                body = {"access_token": ehr.token, "token_type": "Bearer", "expires_in": 300,
                        "scope": granted.get("scope"), "patient": ehr.patient}
                if ehr.app_context is not None:
                    body["appContext"] = ehr.app_context
                return self._send(200, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.fhir_base = f"{self.url}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
