"""One slow FHIR server cannot starve the others (issue 12 item 2), against `cds serve` (gunicorn) as an
operator runs it: a loopback FHIR server that trickles its answers one byte at a time, or its headers,
and a healthy one on another port.

CDS Hooks 2.0, "FHIR Resource Access": the service fetches what the prefetch lacks from `fhirServer`;
it still has to answer its caller in time, so every fetch is bounded (connect, read, and a total
deadline that a trickle cannot stretch) and the fetches to one origin are capped.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fhir_server import FhirTestServer
from fhirdata import genotype, hook_request, medication_request

CANNOT = "Clopidogrel: pharmacogenomic check could not be completed"
BUDGET = 1.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`cds serve` in a subprocess: one gunicorn worker with 8 threads, audit off."""

    def __init__(self, workdir: Path, **env: str):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        environment = {**os.environ, "CDS_AUTH": "off", "CDS_AUDIT": "false", "CDS_WORKERS": "1", "CDS_THREADS": "8",
                       "CDS_FHIR_BUDGET": str(BUDGET), "CDS_FHIR_TIMEOUT": "0.5", "CDS_FHIR_MAX_PER_ORIGIN": "2", **env}
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(self.port)],
                                        env=environment, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(self.log_path.read_text())

    def sign(self, fhir_url: str) -> tuple[list[str], float]:
        body = hook_request("order-sign", medication_request("clopidogrel"), fhirServer=fhir_url)
        started = time.monotonic()
        response = requests.post(f"{self.url}/cds-services/pgx-order-sign", json=body, timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        return [c["summary"] for c in response.json()["cards"]], elapsed

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    service = Served(tmp_path_factory.mktemp("bounded"))
    yield service
    service.stop()


@pytest.fixture()
def healthy():
    server = FhirTestServer()
    server.add({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}, genotype("CYP2C19", "*2/*2"))
    yield server
    server.stop()


@pytest.mark.parametrize("trickle", ["trickle", "trickle-headers"])
def test_a_trickling_fhir_server_does_not_starve_a_healthy_one(served, healthy, trickle):
    slow = FhirTestServer()
    slow.add({"resourceType": "Patient", "id": "p1"}, genotype("CYP2C19", "*2/*2"))
    slow.misbehave(trickle, interval=0.05)         # a byte every 50 ms: every read succeeds, the answer never ends
    try:
        # ten calls one after the other: each answered within its budget, with the card that says so
        for _ in range(10):
            cards, elapsed = served.sign(slow.url)
            assert cards == [CANNOT] and elapsed < BUDGET + 1.0
        # each call wants 5 keys (patient, genomics, reports, reports-by-code, consent) but the cap lets 2
        # reach the slow server; the other 3 wait for a slot until the deadline and are given up without a request
        assert len(slow.requests) == 20
        # no fetch outlived its call: the trickling server has no connection left open
        assert slow.wait_until_idle(timeout=0.5), f"{slow.open_connections} connections still open"
        cards, elapsed = served.sign(healthy.url)
        assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]

        # five at once, each with 5 fetches (more than the per-origin cap of 2): the healthy server's calls
        # meanwhile are answered normally
        with ThreadPoolExecutor(max_workers=8) as pool:
            stuck = [pool.submit(served.sign, slow.url) for _ in range(5)]
            time.sleep(0.1)
            good = [pool.submit(served.sign, healthy.url) for _ in range(3)]
            for future in good:
                cards, elapsed = future.result()
                assert len(cards) == 1 and "CYP2C19 Poor Metabolizer" in cards[0]
            for future in stuck:
                cards, elapsed = future.result()
                assert cards == [CANNOT] and elapsed < BUDGET + 1.5
        assert slow.wait_until_idle(timeout=0.5), f"{slow.open_connections} connections still open"
    finally:
        slow.stop()
