"""Issue 24 item 1: idle and slow clients never hold `cds serve` (gunicorn, 2 workers), over real sockets.

Before: with sync workers two idle TCP connections held both workers for their 30-s timeout, and with
gthread a client that sent half a request line held a thread for as long as it liked. Now the
worker's event loop reads each request whole before a thread takes it (cds.service.worker)."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from live_service import ServeProcess

CLIENT_TIMEOUT = 3          # CDS_CLIENT_TIMEOUT for these services, seconds
SIGN = "/cds-services/pgx-order-sign"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    served = ServeProcess(tmp_path_factory.mktemp("slow-clients"), workers=2,
                          env={"CDS_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT), "CDS_MAX_BODY_BYTES": "200000"})
    yield served
    served.stop()


def connect(service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=10)


def still_open(sock: socket.socket) -> bool:
    """Open, with nothing to read: the service neither answered nor closed it."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def answer(sock: socket.socket) -> bytes:
    """Everything the service sends until it closes the connection."""
    sock.settimeout(CLIENT_TIMEOUT + 5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Slowloris:
    """Connections that send a request head one header line at a time, never finishing it."""

    def __init__(self, service, count: int, every: float = 0.25):
        self.sockets = [connect(service) for _ in range(count)]
        for sock in self.sockets:
            sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, args=(every,), daemon=True)
        self.thread.start()

    def _trickle(self, every: float) -> None:
        n = 0
        while not self.stop.wait(every):
            n += 1
            for sock in self.sockets:
                try:
                    sock.send(f"X-Slow-{n}: 1\r\n".encode())
                except OSError:
                    pass           # closed by the service

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def test_idle_and_trickling_clients_do_not_hold_the_service(service, sign_body):
    idle = [connect(service) for _ in range(40)]
    slow = Slowloris(service, 40)
    try:
        time.sleep(0.5)               # every worker has accepted (and would, before, be held by) them
        started = time.monotonic()
        assert requests.get(f"{service.url}/healthz", timeout=CLIENT_TIMEOUT).status_code == 200
        call = service.post(SIGN, sign_body, timeout=CLIENT_TIMEOUT)
        assert call.status_code == 200 and call.json()["cards"]
        answered_within = time.monotonic() - started
        # answered while every slow and idle client was still being waited for, not after they were dropped
        assert all(still_open(s) for s in idle + slow.sockets), f"answered only after {answered_within:.1f} s"
        assert answered_within < CLIENT_TIMEOUT
        # then each is bounded: the trickling ones get a 408 and are closed, the idle ones are closed
        replies = [answer(s) for s in slow.sockets]
        assert all(r.startswith(b"HTTP/1.1 408 ") and b"CDS_CLIENT_TIMEOUT" in r for r in replies), replies[0]
        assert all(answer(s) == b"" for s in idle)
    finally:
        slow.close()
        for sock in idle:
            sock.close()
    assert "408: the request did not arrive within 3 s (CDS_CLIENT_TIMEOUT)" in service.log


def test_a_request_body_that_arrives_slowly_but_in_time_is_answered(service, sign_body):
    import json

    body = json.dumps(sign_body).encode()
    sock = connect(service)
    try:
        sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for start in range(0, len(body), len(body) // 4 + 1):
            time.sleep(0.2)
            assert requests.get(f"{service.url}/healthz", timeout=CLIENT_TIMEOUT).status_code == 200
            sock.sendall(body[start:start + len(body) // 4 + 1])
        reply = answer(sock)
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"cards"' in reply


def test_expect_100_continue_and_chunked_bodies_are_read_before_a_thread_takes_them(service, sign_body):
    import json

    body = json.dumps(sign_body).encode()
    sock = connect(service)
    try:
        sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"       # once, from the event loop
        sock.sendall(body)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100], body[100:])) + b"0\r\n\r\n"
        sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode() + chunked)
        replies = answer(sock)
    finally:
        sock.close()
    assert replies.count(b"HTTP/1.1 200 OK") == 2 and b"100 Continue" not in replies
    assert replies.count(b'"cards"') == 2


def test_an_announced_oversized_body_is_refused_before_it_is_read(service):
    sock = connect(service)
    try:
        sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: 5000000\r\n\r\n{".encode())
        reply = answer(sock)                   # no need to send the 5 MB: the answer comes now
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 413 ") and b"CDS_MAX_BODY_BYTES" in reply


def test_a_client_that_does_not_read_its_answers_holds_no_thread(service):
    """Pipelined requests whose answers fill the socket buffers: the threads hand their answers to the
    event loop and go on; the client is cut off after CDS_CLIENT_TIMEOUT."""
    sock = connect(service)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:     # until the service stops reading our requests
            try:
                sent += sock.send(request * 50)
            except BlockingIOError:
                break
        assert sent > 100 * len(request)
        time.sleep(0.5)
        for _ in range(4):                     # whichever worker took the connection
            assert requests.get(f"{service.url}/healthz", timeout=CLIENT_TIMEOUT).status_code == 200
        assert still_open(sock)
        deadline = time.monotonic() + CLIENT_TIMEOUT + 5
        while "did not take its answer" not in service.log and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sock.close()
    assert f"did not take its answer within {CLIENT_TIMEOUT} s (CDS_CLIENT_TIMEOUT); closed" in service.log


@pytest.fixture(scope="module")
def sign_body():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
    from fhirdata import genotype, hook_request, medication_request, searchset

    return hook_request("order-sign", medication_request("clopidogrel"),
                        genomics=searchset(genotype("CYP2C19", "*2/*2")))
