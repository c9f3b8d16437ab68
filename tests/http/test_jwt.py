"""JWT bearer authentication of hook calls over real HTTP (CDS Hooks 2.0, "Trusting CDS Clients"):
the EHR's key set is served by a JWKS server on loopback, tokens are signed with real keys."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from live_service import LiveServer, free_port
from fhirdata import genotype, hook_request, medication_request, searchset

ISSUER = "https://ehr.example.org"


@pytest.fixture(scope="module")
def ehr_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def jwks_server(ehr_key):
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ehr_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "ehr-1", "use": "sig", "alg": "ES384"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


@pytest.fixture(scope="module")
def secured(tmp_path_factory, jwks_server):
    """The service with authentication required and one trusted EHR."""
    from cds.service.app import create_app
    from cds.service.config import Settings

    root = tmp_path_factory.mktemp("auth")
    config = root / "trusted-issuers.yaml"
    config.write_text(f"issuers:\n  - iss: {ISSUER}\n    jwks_url: {jwks_server}\n    algorithms: [ES384]\n")
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDS_AUTH", "required")
        mp.setenv("CDS_TRUSTED_ISSUERS", str(config))
        mp.delenv("CDS_REDIS_URL", raising=False)
        app = create_app(Settings(auth_mode="required", audit=False, base_url=f"http://127.0.0.1:{port}",
                                  local_state=str(root / "local-state.sqlite3")))
    live = LiveServer(app, port)
    yield live
    live.stop()


def token(key, audience, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "ehr-client", "aud": audience, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "ehr-1", "typ": "JWT"})


def call(live, bearer: str | None, service_id="pgx-order-sign"):
    body = hook_request("order-sign", medication_request("clopidogrel"), genomics=searchset(genotype("CYP2C19", "*2/*2")))
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return requests.post(f"{live.url}/cds-services/{service_id}", json=body, headers=headers, timeout=30)


def aud(live, service_id="pgx-order-sign"):
    return f"{live.url}/cds-services/{service_id}"


def test_a_valid_token_is_accepted(secured, ehr_key):
    response = call(secured, token(ehr_key, aud(secured)))
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["indicator"] == "critical"


def test_discovery_needs_no_token(secured):
    assert requests.get(f"{secured.url}/cds-services", timeout=10).status_code == 200


@pytest.mark.parametrize("case,make,reason", [
    ("missing", lambda key, a: None, "Authorization"),
    ("expired", lambda key, a: token(key, a, exp=int(time.time()) - 3600, iat=int(time.time()) - 3900), "expired"),
    ("wrong audience", lambda key, a: token(key, "https://other.example.org/cds-services/pgx-order-sign"), "aud"),
    ("other service's audience", lambda key, a: token(key, a.replace("pgx-order-sign", "pgx-order-select")), "aud"),
    ("unknown issuer", lambda key, a: token(key, a, iss="https://evil.example.org"), "not trusted"),
    ("no jti", lambda key, a: token(key, a, jti=None), "jti"),
    ("foreign key", lambda key, a: token(ec.generate_private_key(ec.SECP384R1()), a), "signature"),
])
def test_bad_tokens_are_refused_with_401(secured, ehr_key, case, make, reason):
    response = call(secured, make(ehr_key, aud(secured)))
    assert response.status_code == 401, case
    assert reason.lower() in response.json()["message"].lower(), response.json()


def test_a_replayed_jti_is_refused(secured, ehr_key):
    bearer = token(ehr_key, aud(secured))
    assert call(secured, bearer).status_code == 200
    second = call(secured, bearer)
    assert second.status_code == 401 and "replayed" in second.json()["message"]


def test_alg_none_is_refused(secured):
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64(
        {"iss": ISSUER, "aud": aud(secured), "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}) + "."
    response = call(secured, unsigned)
    assert response.status_code == 401
    assert "none" in response.json()["message"].lower() or "algorithm" in response.json()["message"].lower()


def test_feedback_needs_a_token_for_its_own_endpoint(secured, ehr_key):
    url = f"{secured.url}/cds-services/pgx-order-sign/feedback"
    body = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    bearer = token(ehr_key, url)
    response = requests.post(url, json=body, headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
    assert response.status_code == 503      # authenticated; this instance keeps no audit store (CDS_AUDIT=false)


def test_admin_report_needs_the_admin_token(secured):
    response = requests.get(f"{secured.url}/admin/report", timeout=10)
    assert response.status_code == 401 and "CDS_ADMIN_TOKEN" in response.json()["message"]
