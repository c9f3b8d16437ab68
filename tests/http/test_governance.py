"""Governance at the level of the running service (gunicorn processes started by `cds serve`):
restarts lose nothing, two replicas share one PostgreSQL audit trail, a database outage does not stop
the answers and loses no record, and no raw patient id reaches the audit tables or the log."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from fhirdata import genotype, hook_request, medication_request, searchset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_support import AUDIT_KEY, PostgresBackend, SqliteBackend, wait_until  # noqa: E402

POSTGRES = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PATIENT = "pat-0042-secret"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`cds serve` in a subprocess, as an operator runs it."""

    def __init__(self, database_url: str, workdir: Path, log_level: str = "INFO"):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"service-{self.port}.log"
        env = {**os.environ, "CDS_AUTH": "off", "DATABASE_URL": database_url, "CDS_AUDIT_KEY": AUDIT_KEY,
               "CDS_SPOOL_DIR": str(workdir / f"spool-{self.port}"), "CDS_LOG_LEVEL": log_level, "CDS_WORKERS": "1"}
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(self.port)],
                                        env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_until(self._ready, timeout=60), self.log_path.read_text()

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def sign(self, patient: str = PATIENT) -> list[dict]:
        body = hook_request("order-sign", medication_request("clopidogrel", patient=patient), patient=patient,
                            genomics=searchset(genotype("CYP2C19", "*2/*2", patient=patient)))
        response = requests.post(f"{self.url}/cds-services/pgx-order-sign", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["cards"]

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()
        return self.log_path.read_text()


def _card_uuids(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        uuids = set(conn.execute(text("select card_uuid from cds_card")).scalars())
    engine.dispose()
    return uuids


def test_restarting_the_service_loses_nothing(tmp_path):
    backend = SqliteBackend(str(tmp_path))
    issued = set()
    first = Service(backend.url, tmp_path)
    issued |= {c["uuid"] for _ in range(3) for c in first.sign()}
    first.stop()
    second = Service(backend.url, tmp_path)
    issued |= {c["uuid"] for _ in range(2) for c in second.sign()}
    # feedback on a card issued before the restart is accepted: the new process knows it
    response = requests.post(f"{second.url}/cds-services/pgx-order-sign/feedback", timeout=30, json={
        "feedback": [{"card": sorted(issued)[0], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]})
    assert response.status_code == 200, response.text
    second.stop()
    assert len(issued) == 5 and _card_uuids(backend.direct_url) == issued


def test_two_service_processes_write_one_postgresql_audit_trail(tmp_path):
    backend = PostgresBackend(POSTGRES)
    try:
        a, b = Service(backend.direct_url, tmp_path), Service(backend.direct_url, tmp_path)
        issued_a = {c["uuid"] for _ in range(4) for c in a.sign()}
        issued_b = {c["uuid"] for _ in range(4) for c in b.sign()}
        a.stop(), b.stop()
        stored = _card_uuids(backend.direct_url)
        assert issued_a <= stored and issued_b <= stored and len(stored) == 8
    finally:
        backend.close()


def test_a_database_outage_does_not_stop_the_answers_and_loses_no_record(tmp_path):
    backend = PostgresBackend(POSTGRES)
    try:
        service = Service(backend.url, tmp_path)             # through the proxy the test can cut
        before = {c["uuid"] for c in service.sign()}
        backend.down()
        during = set()
        for _ in range(5):
            started = time.monotonic()
            cards = service.sign()                           # answers keep coming
            assert time.monotonic() - started < 2.0
            during |= {c["uuid"] for c in cards}
        # the outage is noticed and logged, and the records wait in the spool on disk
        assert wait_until(lambda: "spool" in service.log_path.read_text().lower(), timeout=30)
        backend.up()
        assert wait_until(lambda: (before | during) <= _card_uuids(backend.direct_url), timeout=60)
        service.stop()
        engine = create_engine(backend.direct_url)
        with engine.connect() as conn:
            per_card = conn.execute(text("select card_uuid, count(*) from cds_card group by card_uuid")).all()
        engine.dispose()
        assert all(n == 1 for _, n in per_card) and len(per_card) == 6
    finally:
        backend.close()


def test_no_raw_patient_id_in_the_audit_tables_or_the_service_log(tmp_path):
    backend = SqliteBackend(str(tmp_path))
    service = Service(backend.url, tmp_path, log_level="DEBUG")
    cards = service.sign(PATIENT)
    assert cards
    log = service.stop()
    assert "pgx-order-sign" in log                           # the log did record the call
    assert PATIENT not in log
    engine = create_engine(backend.direct_url)
    with engine.connect() as conn:
        tables = [r[0] for r in conn.execute(text("select name from sqlite_master where type='table'"))]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(text(f'select * from "{t}"')))
    engine.dispose()
    assert "clopidogrel" in dump.lower() or "CYP2C19" in dump
    assert PATIENT not in dump
