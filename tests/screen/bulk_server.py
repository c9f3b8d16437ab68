"""A Bulk Data export server on loopback for the `cds screen --fhir` tests, with an optional SMART
Backend Services authorisation server in front of it (the EHR's side of the flow, verified with
PyJWT the way an EHR verifies a client assertion), and an optional second origin serving the files."""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt

TOKEN = "bulk-token-123"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class SmartAuthority:
    """One registered backend client (id, public key, kid). Checks every client assertion as SMART
    Backend Services asks (signature with the registered key, kid, iss = sub = client id, aud = this
    token endpoint, exp at most five minutes ahead, jti never seen before) and issues tokens that
    expire after `lifetime` seconds or, to expire one mid-export without timing anything, after
    `uses_per_token` authorised requests."""

    def __init__(self, client_id: str, public_key, kid: str, *, lifetime: int = 300,
                 uses_per_token: int | None = None, scopes_supported: list[str] | None = None):
        self.client_id, self.public_key, self.kid = client_id, public_key, kid
        self.lifetime = lifetime
        self.uses_per_token = uses_per_token
        self.scopes_supported = scopes_supported
        self.token_url = ""                                   # set by the server it sits in
        self.jtis: set[str] = set()
        self.tokens: dict[str, dict] = {}                     # token → {"expires": t, "uses": n}
        self.token_requests: list[dict] = []                  # what each token request carried and got
        self.lock = threading.Lock()

    def token_request(self, form: dict[str, str]) -> tuple[int, dict]:
        record = {"form": form}
        self.token_requests.append(record)
        status, body = self._decide(form, record)
        record["status"] = status
        return status, body

    def _decide(self, form: dict[str, str], record: dict) -> tuple[int, dict]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            return 400, {"error": "invalid_request", "error_description": "a jwt-bearer client_assertion is required"}
        if not form.get("scope"):
            return 400, {"error": "invalid_scope", "error_description": "scope is required"}
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            record["header"] = header
            if header.get("kid") != self.kid:
                return 401, {"error": "invalid_client", "error_description": f"no registered key with kid {header.get('kid')!r}"}
            if header.get("typ") != "JWT":
                return 401, {"error": "invalid_client", "error_description": "typ must be JWT"}
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS384", "ES384"], audience=self.token_url,
                                issuer=self.client_id, options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.InvalidTokenError as err:
            return 401, {"error": "invalid_client", "error_description": f"client assertion rejected: {err}"}
        record["claims"] = claims
        if claims["sub"] != self.client_id:
            return 401, {"error": "invalid_client", "error_description": "sub must be the client id"}
        if claims["exp"] > time.time() + 300:
            return 401, {"error": "invalid_client", "error_description": "exp is more than five minutes ahead"}
        with self.lock:
            if claims["jti"] in self.jtis:
                return 401, {"error": "invalid_client", "error_description": "jti already used (replay)"}
            self.jtis.add(claims["jti"])
            token = secrets.token_urlsafe(24)
            self.tokens[token] = {"expires": time.time() + self.lifetime, "uses": self.uses_per_token}
        record["token"] = token
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime, "scope": form["scope"]}

    def accepts(self, authorization: str | None) -> str | None:
        """None when the request carries a live token; else why not (for WWW-Authenticate)."""
        if not authorization or not authorization.startswith("Bearer "):
            return "a bearer token is required"
        with self.lock:
            grant = self.tokens.get(authorization[7:])
            if grant is None:
                return "unknown access token"
            if time.time() >= grant["expires"] or grant["uses"] == 0:
                return "the access token expired"
            if grant["uses"] is not None:
                grant["uses"] -= 1
        return None


class FileHost:
    """Another origin (another port) serving the export's files, recording each request's headers."""

    def __init__(self, folder):
        self.folder = folder
        self.requests: list[tuple[str, dict]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                host.requests.append((self.path, dict(self.headers)))
                body = (host.folder / self.path.removeprefix("/files/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"     # another port: another origin
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


class BulkServer:
    """A minimal Bulk Data export server over a folder of NDJSON files."""

    def __init__(self, folder, polls_before_done: int = 2, retry_after: str = "1", fail_status: int | None = None,
                 smart: SmartAuthority | None = None, files_at: str | None = None, requires_token: bool = True):
        self.folder = folder
        self.polls_before_done = polls_before_done
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.smart = smart
        self.files_at = files_at            # another origin's base URL for the manifest's file URLs
        self.requires_token = requires_token
        self.requests: list[tuple[float, str, str, dict]] = []
        self.refused: list[tuple[str, str]] = []              # (path, why) of every 401
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

            def _outcome(self, status, text, headers=None):
                body = json.dumps({"resourceType": "OperationOutcome",
                                   "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]})
                self._send(status, body.encode(), headers)

            def _refuse(self, why):
                server.refused.append((self.path, why))
                self._outcome(401, why, {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{why}"'})

            def _why_not_authorised(self):
                if server.smart is not None:
                    return server.smart.accepts(self.headers.get("Authorization"))
                ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                return None if ok else "a valid bearer token is required"

            def do_DELETE(self):
                server.requests.append((time.monotonic(), "DELETE", self.path, dict(self.headers)))
                self._send(202)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                server.requests.append((time.monotonic(), "POST", self.path, dict(self.headers)))
                if self.path != "/auth/token" or server.smart is None:
                    return self._outcome(404, "not found")
                if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
                    return self._send(400, b'{"error": "invalid_request"}', kind="application/json")
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = server.smart.token_request(form)
                self._send(status, json.dumps(body).encode(), {"Cache-Control": "no-store"}, kind="application/json")

            def do_GET(self):
                server.requests.append((time.monotonic(), "GET", self.path, dict(self.headers)))
                if self.path == "/fhir/.well-known/smart-configuration" and server.smart is not None:
                    config = {"token_endpoint": server.smart.token_url, "grant_types_supported": ["client_credentials"],
                              "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                              "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                              "capabilities": ["client-confidential-asymmetric", "permission-v2"]}
                    if server.smart.scopes_supported:
                        config["scopes_supported"] = server.smart.scopes_supported
                    return self._send(200, json.dumps(config).encode(), kind="application/json")
                if self.path.startswith("/fhir/$export"):
                    why = self._why_not_authorised()
                    if why:
                        return self._refuse(why)
                    if self.headers.get("Prefer") != "respond-async":
                        return self._outcome(400, "Prefer: respond-async is required")
                    return self._send(202, headers={"Content-Location": "/status/job1"})
                if self.path == "/status/job1":
                    if server.smart is not None and (why := self._why_not_authorised()):
                        return self._refuse(why)
                    polls = sum(1 for r in server.requests if r[2] == "/status/job1" and r[1] == "GET")
                    if polls <= server.polls_before_done:
                        return self._send(202, headers={"Retry-After": server.retry_after, "X-Progress": f"{polls * 40}%"})
                    if server.fail_status:
                        return self._outcome(server.fail_status, "export job failed: disk full")
                    files = sorted(p.name for p in server.folder.glob("*.ndjson"))
                    prefix = server.files_at or ""
                    manifest = {"transactionTime": "2026-12-01T00:00:00Z", "request": "/fhir/$export",
                                "requiresAccessToken": server.requires_token,
                                "output": [{"type": n.split(".")[0], "url": f"{prefix}/files/{n}"} for n in files]}
                    if not server.files_at:
                        manifest["error"] = [{"type": "OperationOutcome", "url": "/files/errors.ndjson"}]
                    return self._send(200, json.dumps(manifest).encode(), kind="application/json")
                if self.path.startswith("/files/"):
                    if server.requires_token and (why := self._why_not_authorised()):
                        return self._refuse(why)
                    if self.path == "/files/errors.ndjson":
                        line = {"resourceType": "OperationOutcome", "issue": [
                            {"severity": "error", "code": "exception", "diagnostics": "Observation/obs-9 could not be serialised"}]}
                        return self._send(200, (json.dumps(line) + "\n").encode(), kind="application/fhir+ndjson")
                    path = server.folder / self.path.removeprefix("/files/")
                    return self._send(200, path.read_bytes(), kind="application/fhir+ndjson")
                self._outcome(404, "not found")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_port}"
        self.url = f"{self.origin}/fhir"
        if smart is not None:
            smart.token_url = f"{self.origin}/auth/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
