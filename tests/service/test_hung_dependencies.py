"""Issue 24 item 2 against `cds serve` over real sockets: a database or replay store that accepts and
never answers (a TCP proxy on loopback that stops forwarding) holds nothing for long. /readyz says
"not ready" within its bound instead of blocking for as long as the peer hangs (28 s) and then saying
"ready"; hook calls are answered meanwhile; /readyz checks the Redis replay store too."""
from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, make_url, text

from live_service import ServeProcess, free_port
from tcp_proxy import TcpProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from fhirdata import genotype, hook_request, medication_request, searchset  # noqa: E402

POSTGRES = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = ("127.0.0.1", 6379)
READY_BOUND = 2.0 + 1.5            # cds.service.app.READY_SECONDS and a margin for a loaded machine


def sign_body() -> dict:
    return hook_request("order-sign", medication_request("clopidogrel"), genomics=searchset(genotype("CYP2C19", "*2/*2")))


def readiness(service) -> tuple[int, dict, float]:
    started = time.monotonic()
    answer = requests.get(f"{service.url}/readyz", timeout=30)
    return answer.status_code, answer.json()["checks"], time.monotonic() - started


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture()
def postgres_schema():
    """A schema of our own on the shared server, dropped afterwards; (server URL, search_path option)."""
    server = make_url(POSTGRES).set(drivername="postgresql+psycopg")
    schema = f"pgxcds_hang_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:  # noqa: BLE001 - no server here: say so
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES} ({type(err).__name__}); CI starts it")
    yield server, schema
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def test_a_hung_postgresql_is_not_ready_within_the_bound_and_holds_no_call(tmp_path, postgres_schema):
    server, schema = postgres_schema
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
    url = server.set(host="127.0.0.1", port=proxy.port, query={"options": f"-csearch_path={schema}"})
    service = ServeProcess(tmp_path, workers=2, env={"DATABASE_URL": url.render_as_string(hide_password=False)})
    try:
        assert service.post("/cds-services/pgx-order-sign", sign_body()).status_code == 200
        status, checks, _ = readiness(service)
        assert status == 200 and checks["database"] == "up"

        proxy.stop_forwarding()         # pooled connections and new ones alike: accepted, never answered
        for _ in range(2):
            status, checks, took = readiness(service)
            assert status == 503 and checks["database"] != "up" and took < READY_BOUND, (checks, took)
        for _ in range(4):
            started = time.monotonic()
            call = service.post("/cds-services/pgx-order-sign", sign_body())
            assert call.status_code == 200 and call.json()["cards"], call.text
            assert time.monotonic() - started < READY_BOUND
        assert requests.get(f"{service.url}/healthz", timeout=READY_BOUND).status_code == 200

        proxy.resume()
        assert wait_until(lambda: readiness(service)[0] == 200, timeout=30)
        direct = create_engine(server.set(query={"options": f"-csearch_path={schema}"}))
        try:   # the calls answered during the hang reach the database once it answers again
            assert wait_until(lambda: _calls(direct) >= 5, timeout=60)
        finally:
            direct.dispose()
    finally:
        service.stop()
        proxy.close()


def _calls(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from cds_call")).scalar()


def test_readyz_checks_the_redis_replay_store(tmp_path):
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379; CI starts it")
    proxy = TcpProxy(*REDIS)
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "ehr.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "issuers.yaml").write_text("issuers:\n  - iss: https://ehr.example.org\n    public_key_file: ehr.pem\n"
                                           "    kid: ehr-1\n    algorithms: [ES384]\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = ServeProcess(tmp_path, workers=2, port=port, env={
        "CDS_AUTH": "required", "CDS_BASE_URL": base, "CDS_TRUSTED_ISSUERS": str(tmp_path / "issuers.yaml"),
        "CDS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"})

    def call() -> requests.Response:
        now = int(time.time())
        claims = {"iss": "https://ehr.example.org", "aud": f"{base}/cds-services/pgx-order-sign", "iat": now,
                  "exp": now + 300, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "ehr-1", "typ": "JWT"})
        return service.post("/cds-services/pgx-order-sign", sign_body(), headers={"Authorization": f"Bearer {token}"})

    try:
        assert call().status_code == 200
        status, checks, _ = readiness(service)
        assert status == 200 and checks["replay store"] == "up (redis)"
        proxy.stop_forwarding()
        status, checks, took = readiness(service)
        assert status == 503 and checks["replay store"] != "up (redis)" and took < READY_BOUND, checks
        assert checks["database"] == "up"                      # the one that fails is named
        assert call().status_code == 503                       # what readiness now says: calls cannot pass
        proxy.resume()
        assert wait_until(lambda: readiness(service)[0] == 200, timeout=30)
        assert call().status_code == 200
    finally:
        service.stop()
        proxy.close()
