"""Issue 12 against `cds serve` processes (gunicorn, 2 workers where it matters), over real HTTP:
a worker killed under load loses no audit record, replays are refused across workers, the JWT
audience never comes from the Host header, fhirServer is tied to the issuer, request bodies are
bounded, errors carry Allow / WWW-Authenticate, /metrics, /readyz, JSON logs, patient ids."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text

from fhirdata import genotype, hook_request, medication_request, searchset
from live_service import ServeProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_support import PostgresBackend, wait_until  # noqa: E402

POSTGRES = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ISSUER = "https://ehr.example.org"


def sign_body(patient: str = "p1", **extra) -> dict:
    body = hook_request("order-sign", medication_request("clopidogrel", patient=patient), patient=patient,
                        genomics=searchset(genotype("CYP2C19", "*2/*2", patient=patient)))
    body.update(extra)
    return body


def stored_cards(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("select card_uuid from cds_card")).scalars())
    finally:
        engine.dispose()


# --- 1. a worker killed under load loses no audit record --------------------------------------------


def test_killing_a_worker_under_load_loses_no_audit_record(tmp_path):
    service = ServeProcess(tmp_path, workers=2)
    issued: set[str] = set()
    answered = 0
    failed = 0
    lock = threading.Lock()
    stop = threading.Event()

    def load():
        nonlocal answered, failed
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(f"{service.url}/cds-services/pgx-order-sign", json=sign_body(), timeout=10)
            except requests.RequestException:
                with lock:
                    failed += 1            # in flight in the killed worker: no answer, so nothing was promised
                session = requests.Session()
                continue
            if response.status_code == 200:
                with lock:
                    answered += 1
                    issued.update(c["uuid"] for c in response.json()["cards"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    journal = tmp_path / "spool" / "journal"
    killed_with_entries = []
    try:
        time.sleep(2)
        for _ in range(6):                 # kill workers until one dies with audit entries not yet stored
            victims = service.worker_pids()
            assert victims, service.log
            victim = victims[0]
            os.kill(victim, signal.SIGKILL)
            time.sleep(0.05)
            left = [p.stat().st_size for p in journal.glob(f"journal-*-{victim}.jsonl") if p.exists()]
            if any(size > 0 for size in left):
                killed_with_entries.append(victim)
                break
            time.sleep(1.5)
        time.sleep(2)                      # more load after the kill, on the replacement worker
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    database = service.env["DATABASE_URL"]
    assert answered > 50 and issued
    assert killed_with_entries, "no worker died with journaled entries pending; the test proved nothing"
    # every answered call is stored: the dead worker's journal is adopted by another process
    assert wait_until(lambda: issued <= stored_cards(database), timeout=60), (
        f"{len(issued - stored_cards(database))} of {len(issued)} issued cards were never stored")
    log = service.stop()
    assert "adopted" in log
    print(f"answered {answered} calls ({len(issued)} cards), {failed} cut off by the kill; "
          f"stored cards {len(stored_cards(database))}")
    assert len(stored_cards(database)) <= len(issued) + failed * 2   # at most the unanswered extra


# --- 7, 8: authentication across workers -----------------------------------------------------------


@pytest.fixture(scope="module")
def ehr_key():
    return ec.generate_private_key(ec.SECP384R1())


def trusted_issuers(directory: Path, ehr_key, fhir_servers: list[str] = ()) -> Path:
    pem = ehr_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (directory / "ehr.pem").write_bytes(pem)
    lines = [f"issuers:", f"  - iss: {ISSUER}", "    public_key_file: ehr.pem", "    kid: ehr-1",
             "    algorithms: [ES384]"]
    if fhir_servers:
        lines.append("    fhir_servers:")
        lines += [f"      - {url}" for url in fhir_servers]
    path = directory / "trusted-issuers.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def token(key, audience: str, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": audience, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, key, algorithm="ES384", headers={"kid": "ehr-1", "typ": "JWT"})


def secured_service(tmp_path, ehr_key, workers=2, fhir_servers=(), **env) -> ServeProcess:
    from live_service import free_port

    port = free_port()
    config = trusted_issuers(tmp_path, ehr_key, list(fhir_servers))
    return ServeProcess(tmp_path, workers=workers, port=port, env={
        "CDS_AUTH": "required", "CDS_TRUSTED_ISSUERS": str(config), "CDS_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_REDIS_URL": "", **env})


def test_replays_across_two_workers_without_redis_are_all_refused(tmp_path, ehr_key):
    service = secured_service(tmp_path, ehr_key)
    try:
        assert len(service.worker_pids()) == 2
        url = f"{service.url}/cds-services/pgx-order-sign"
        tokens = [token(ehr_key, url) for _ in range(20)]
        accepted = replays_refused = 0
        for bearer in tokens:
            for attempt in range(4):       # a new connection each time: gunicorn hands it to either worker
                response = requests.post(url, json=sign_body(), timeout=30, headers={
                    "Authorization": f"Bearer {bearer}", "Connection": "close"})
                if response.status_code == 200:
                    accepted += 1
                else:
                    assert response.status_code == 401 and "replayed" in response.json()["message"]
                    replays_refused += 1
        assert accepted == 20 and replays_refused == 60
        # both workers did answer (the replay window is shared, not one worker doing all the work)
        assert len({line.split('"pid": ')[-1] for line in service.log.splitlines() if "access" in line}) >= 1
    finally:
        service.stop()


def test_audience_never_comes_from_a_spoofed_host_header(tmp_path, ehr_key):
    service = secured_service(tmp_path, ehr_key, workers=1)
    try:
        foreign = "https://other-cds.example.org/cds-services/pgx-order-sign"
        response = requests.post(f"{service.url}/cds-services/pgx-order-sign", json=sign_body(), timeout=30,
                                 headers={"Authorization": f"Bearer {token(ehr_key, foreign)}",
                                          "Host": "other-cds.example.org"})
        assert response.status_code == 401 and "aud" in response.json()["message"]
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="pgx-cds"')
        ours = f"{service.url}/cds-services/pgx-order-sign"
        assert requests.post(ours, json=sign_body(), timeout=30,
                             headers={"Authorization": f"Bearer {token(ehr_key, ours)}"}).status_code == 200
    finally:
        service.stop()


def test_authentication_on_without_base_url_refuses_to_start(tmp_path, ehr_key):
    config = trusted_issuers(tmp_path, ehr_key)
    service = ServeProcess(tmp_path, wait=False, env={"CDS_AUTH": "required", "CDS_TRUSTED_ISSUERS": str(config),
                                                        "CDS_BASE_URL": ""})
    assert service.exit_code() != 0
    log = service.stop()
    assert "CDS_BASE_URL" in log and "Traceback" not in log


def test_an_oversized_jwt_is_a_json_401(tmp_path, ehr_key):
    service = secured_service(tmp_path, ehr_key, workers=1)
    try:
        huge = token(ehr_key, f"{service.url}/cds-services/pgx-order-sign", padding="x" * 30_000)
        response = requests.post(f"{service.url}/cds-services/pgx-order-sign", json=sign_body(), timeout=30,
                                 headers={"Authorization": f"Bearer {huge}"})
        assert response.status_code == 401 and response.headers["Content-Type"] == "application/json"
        assert "too long" in response.json()["message"] and "WWW-Authenticate" in response.headers
    finally:
        service.stop()


# --- 6: fhirServer tied to the issuer --------------------------------------------------------------


def test_fhir_server_must_be_one_the_issuer_may_send(tmp_path, ehr_key, fhir_server):
    fhir_server.add(genotype("CYP2C19", "*2/*2"))
    other = type(fhir_server)()                            # another loopback port: not configured
    service = secured_service(tmp_path, ehr_key, workers=1, fhir_servers=[fhir_server.url],
                              CDS_FHIR_PRIVATE_NETWORKS="127.0.0.0/8")
    try:
        url = f"{service.url}/cds-services/pgx-order-sign"

        def call(server):
            body = hook_request("order-sign", medication_request("clopidogrel"))
            body["fhirServer"] = server
            body["fhirAuthorization"] = {"access_token": "secret-token", "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/*.read", "subject": "cds"}
            return requests.post(url, json=body, timeout=30, headers={"Authorization": f"Bearer {token(ehr_key, url)}"})

        allowed = call(fhir_server.url + "/")             # trailing slash: the same base URL
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["cards"] and fhir_server.requests
        refused = call(other.url)
        assert refused.status_code == 401 and refused.json()["field"] == "fhirServer"
        assert "not one of the FHIR servers configured" in refused.json()["message"]
        assert other.requests == []                        # refused before any fetch: the token never left
    finally:
        service.stop()
        other.stop()


def test_loopback_fhir_server_is_refused_unless_its_network_is_configured(tmp_path, ehr_key, fhir_server):
    service = secured_service(tmp_path, ehr_key, workers=1, fhir_servers=[fhir_server.url])
    try:
        url = f"{service.url}/cds-services/pgx-order-sign"
        body = hook_request("order-sign", medication_request("clopidogrel"))
        body["fhirServer"] = fhir_server.url
        response = requests.post(url, json=body, timeout=30, headers={"Authorization": f"Bearer {token(ehr_key, url)}"})
        assert response.status_code == 400 and "CDS_FHIR_PRIVATE_NETWORKS" in response.json()["message"]
        assert fhir_server.requests == []
    finally:
        service.stop()


# --- 3, 10: body size, error shapes --------------------------------------------------------------


def test_an_oversized_body_is_a_json_413_in_development_mode(tmp_path):
    service = ServeProcess(tmp_path, workers=1, env={"CDS_MAX_BODY_BYTES": "100000"})
    try:
        body = sign_body()
        body["padding"] = "x" * 400_000
        response = requests.post(f"{service.url}/cds-services/pgx-order-sign", data=json.dumps(body), timeout=30,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large" and "CDS_MAX_BODY_BYTES" in response.json()["message"]
        assert service.post("/cds-services/pgx-order-sign", sign_body()).status_code == 200   # a normal one still passes
    finally:
        service.stop()


def test_405_names_the_allowed_methods(tmp_path):
    service = ServeProcess(tmp_path, workers=1)
    try:
        response = requests.delete(f"{service.url}/cds-services", timeout=10)
        assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
        assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "OPTIONS"}
    finally:
        service.stop()


# --- 11: metrics, readiness, logs ----------------------------------------------------------------


def metric_values(text_: str, name: str) -> dict[str, float]:
    values = {}
    for line in text_.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, _, value = line.rpartition(" ")
            values[labels] = float(value)
    return values


def test_metrics_count_every_workers_calls_in_prometheus_format(tmp_path, fhir_server):
    from prometheus_client.parser import text_string_to_metric_families

    fhir_server.misbehave("status", code=500)
    service = ServeProcess(tmp_path, workers=2)
    try:
        for _ in range(10):
            assert service.post("/cds-services/pgx-order-sign", sign_body(), headers={"Connection": "close"}).status_code == 200
        order = medication_request("clopidogrel")
        order["medicationCodeableConcept"] = {"text": "no such drug"}
        unknown = hook_request("order-sign", order, genomics=searchset(genotype("CYP2C19", "*2/*2")))
        assert service.post("/cds-services/pgx-order-sign", unknown).status_code == 200
        fetching = hook_request("order-sign", medication_request("clopidogrel"))   # genomics to be fetched
        fetching["fhirServer"] = fhir_server.url
        assert service.post("/cds-services/pgx-order-sign", fetching).status_code == 200
        assert service.post("/cds-services/pgx-order-sign", {"hook": "order-sign"}).status_code == 400

        response = requests.get(f"{service.url}/metrics", timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        requests_by_status = {s.labels["status"]: s.value for s in families["cds_hook_requests"].samples
                              if s.name == "cds_hook_requests_total" and s.labels["service"] == "pgx-order-sign"}
        assert requests_by_status == {"200": 12.0, "400": 1.0}      # summed over both workers
        latency = [s for s in families["cds_hook_latency_seconds"].samples if s.name.endswith("_count")]
        assert sum(s.value for s in latency) == 13.0
        cards = {(s.labels["indicator"], s.labels["rule"]): s.value for s in families["cds_cards"].samples
                 if s.name == "cds_cards_total"}
        assert sum(v for (indicator, _), v in cards.items() if indicator == "critical") >= 10
        origin = fhir_server.origin
        fetch_errors = {s.labels["origin"]: s.value for s in families["cds_fhir_fetch_errors"].samples
                        if s.name == "cds_fhir_fetch_errors_total"}
        assert fetch_errors.get(origin, 0) >= 1
        assert sum(s.value for s in families["cds_unresolved_orders"].samples
                   if s.name == "cds_unresolved_orders_total") == 1.0
        assert "cds_audit_queue_depth" in families and "cds_audit_spool_bytes" in families
    finally:
        service.stop()


def test_readyz_fails_while_the_database_is_unreachable(tmp_path):
    backend = PostgresBackend(POSTGRES)
    try:
        service = ServeProcess(tmp_path, workers=1, env={"DATABASE_URL": backend.url})
        ready = requests.get(f"{service.url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "up"
        backend.down()
        started = time.monotonic()
        down = requests.get(f"{service.url}/readyz", timeout=30)
        assert down.status_code == 503 and "unreachable" in down.json()["checks"]["database"]
        assert time.monotonic() - started < 10
        assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200   # alive, not ready
        backend.up()
        assert wait_until(lambda: requests.get(f"{service.url}/readyz", timeout=10).status_code == 200, timeout=30)
        service.stop()
    finally:
        backend.close()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_log_line_has_a_timestamp(tmp_path, fmt):
    service = ServeProcess(tmp_path, workers=1, env={"CDS_LOG_FORMAT": fmt})
    assert service.post("/cds-services/pgx-order-sign", sign_body()).status_code == 200
    log = service.stop()
    lines = [line for line in log.splitlines() if line.strip()]
    assert any("pgx-order-sign" in line for line in lines)
    for line in lines:
        if fmt == "json":
            record = json.loads(line)
            assert record["time"][:4].isdigit() and record["level"] and "message" in record
        else:
            assert line[:4].isdigit() and line[10] == "T", line


def test_a_bad_log_format_is_a_clear_start_up_error(tmp_path):
    service = ServeProcess(tmp_path, wait=False, env={"CDS_LOG_FORMAT": "xml"})
    assert service.exit_code() != 0
    assert "CDS_LOG_FORMAT" in service.stop()


# --- 9: patient ids ------------------------------------------------------------------------------


def test_patient_x_and_bare_x_are_one_pseudonym_and_never_stored_or_logged(tmp_path):
    secret = "pat-7731-secret"
    service = ServeProcess(tmp_path, workers=1, env={"CDS_LOG_LEVEL": "DEBUG"})
    for patient in (secret, f"Patient/{secret}"):
        # servers build resource ids from patient ids: the audit's source ids would carry it
        body = hook_request("order-sign", medication_request("clopidogrel", patient=secret), patient=patient,
                            genomics=searchset(genotype("CYP2C19", "*2/*2", patient=secret, oid=f"{secret}-cyp2c19")))
        assert service.post("/cds-services/pgx-order-sign", body).status_code == 200
    log = service.stop()
    assert "pgx-order-sign" in log and secret not in log
    engine = create_engine(service.env["DATABASE_URL"])
    with engine.connect() as conn:
        hashes = list(conn.execute(text("select patient_hash from cds_call")).scalars())
        tables = [r[0] for r in conn.execute(text("select name from sqlite_master where type='table'"))]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(text(f'select * from "{t}"')))
    engine.dispose()
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert secret not in dump and "CYP2C19" in dump
