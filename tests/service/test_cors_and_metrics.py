"""Issue 24 items 4 and 5 against `cds serve` in production mode, over real HTTP: CORS headers on the CDS
Hooks endpoints and nowhere else, /metrics behind CDS_METRICS_TOKEN, and every documented counter
present at 0 before the first call."""
from __future__ import annotations

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from live_service import ServeProcess, free_port

ORIGIN = "https://sandbox.cds-hooks.org"
FHIR = "https://ehr.example.org:8443/fhir"
METRICS_TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cors-metrics")
    key = ec.generate_private_key(ec.SECP384R1())
    (folder / "ehr.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (folder / "issuers.yaml").write_text(
        "issuers:\n  - iss: https://ehr.example.org\n    public_key_file: ehr.pem\n    kid: ehr-1\n"
        f"    algorithms: [ES384]\n    fhir_servers: [{FHIR}]\n")
    port = free_port()
    served = ServeProcess(folder, workers=2, port=port, env={
        "CDS_AUTH": "required", "CDS_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_TRUSTED_ISSUERS": str(folder / "issuers.yaml"), "CDS_ADMIN_TOKEN": "admin-token-0123456789",
        "CDS_METRICS_TOKEN": METRICS_TOKEN, "CDS_SMART_ISSUERS": FHIR})
    yield served
    served.stop()


@pytest.mark.parametrize("method,path,cors", [
    ("GET", "/cds-services", True),
    ("OPTIONS", "/cds-services/pgx-order-sign", True),
    ("POST", "/cds-services/pgx-order-sign", True),        # a 401 the browser client must be able to read
    ("OPTIONS", "/cds-services/pgx-order-sign/feedback", True),
    ("GET", "/metrics", False),
    ("GET", "/admin/report", False),
    ("GET", "/workbench/", False),
    ("GET", "/smart/launch", False),
    ("GET", "/healthz", False),
    ("GET", "/openapi.json", False),
])
def test_cors_headers_only_on_the_cds_hooks_endpoints(service, method, path, cors):
    response = requests.request(method, f"{service.url}{path}", timeout=10, allow_redirects=False,
                                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert ("Access-Control-Allow-Origin" in response.headers) == cors, (response.status_code, response.headers)


def test_metrics_need_their_token_and_start_at_zero(service):
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 401
    wrong = requests.get(f"{service.url}/metrics", headers={"Authorization": "Bearer admin-token-0123456789"},
                         timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    text = requests.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                        timeout=10).text
    # before any hook call: each service's unresolved orders, the trusted issuer's FHIR server's errors
    for service_id in ("pgx-order-select", "pgx-order-sign", "pgx-patient-view"):
        assert f'cds_unresolved_orders_total{{service="{service_id}"}} 0.0' in text
    assert 'cds_fhir_fetch_errors_total{origin="https://ehr.example.org:8443"} 0.0' in text
