"""A bounded HTTP client for the EHR's FHIR server: every GET ends by its deadline, however the server behaves.

- connect and read timeouts per socket operation, and a total deadline that a watchdog enforces by
  shutting the connection's socket when it passes: a server that trickles its headers or its body one
  byte at a time cannot hold a thread past the hook call it serves;
- at most `per_origin` requests in flight to one origin (scheme, host, port) per process, so one slow
  FHIR server cannot occupy the fetches every other call needs;
- responses larger than `max_bytes` (after decompression) are abandoned while streaming;
- redirects are followed only within the same origin, and never to another one: the bearer token
  stays with the server it was issued for (CDS Hooks 2.0, "FHIR Resource Access": the token is for
  `fhirServer`);
- errors say what happened, never the URL (it holds the patient id) or the token.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchError(Exception):
    """A FHIR request that gave no usable answer; the message is safe to log, audit and show."""


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL, default ports filled in; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


# --- the deadline watchdog --------------------------------------------------------------------------

class _Watchdog:
    """One thread for the process: shuts down each registered socket when its deadline passes, which
    wakes a thread blocked reading it (the read fails at once)."""

    def __init__(self):
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._done: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        with self._cond:
            self._start()
            token = next(self._ids)
            heapq.heappush(self._heap, (deadline, token, sock))
            self._cond.notify()
            return token

    def forget(self, token: int) -> None:
        with self._cond:
            self._done.add(token)

    def _start(self) -> None:
        import os

        # after a fork (gunicorn workers) the parent's thread is gone: start one in this process
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._heap, self._done = [], set()
            self._thread = threading.Thread(target=self._run, name="fhir-deadline", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, token, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if token in self._done:
                    heapq.heappop(self._heap)
                    self._done.discard(token)
                    continue
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()
_current = threading.local()      # .deadline and .tokens of the fetch running on this thread


def _register(sock: socket.socket) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        _current.tokens.append(_watchdog.watch(sock, deadline))


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)            # the plain socket: shutting it also ends a TLS handshake on it
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# --- the client -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 2.0       # seconds to open a connection
    read_timeout: float = 2.0          # seconds a socket read may wait
    max_bytes: int = 8 * 1024 * 1024   # largest response body accepted (decompressed)
    per_origin: int = 4                # requests in flight to one origin, per process


class FhirClient:
    """Shared by every call of a process; thread-safe. `session(deadline)` gives one fetch its connections."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._slots: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _slot(self, origin: tuple[str, str, int]) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._slots.get(origin)
            if slot is None:
                slot = self._slots[origin] = threading.BoundedSemaphore(self.limits.per_origin)
            return slot

    def session(self, deadline: float) -> FetchSession:
        return FetchSession(self, deadline)


class FetchSession:
    """The connections of one fetch (one prefetch key, with its pages and references), on one thread,
    all ending by `deadline`. Use as a context manager."""

    def __init__(self, client: FhirClient, deadline: float):
        self.client = client
        self.deadline = deadline
        self._http = requests.Session()
        self._http.trust_env = False         # no .netrc credentials or environment proxies for patient data
        adapter = _WatchedAdapter(max_retries=0)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)

    def __enter__(self) -> FetchSession:
        _current.deadline = self.deadline
        _current.tokens = []
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()
        for token in getattr(_current, "tokens", []):
            _watchdog.forget(token)
        _current.deadline = None
        _current.tokens = []

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def get_json(self, url: str, token: str | None) -> Any:
        """GET `url` and parse its JSON body. Redirects within the URL's origin are followed (with the
        token); a redirect to another origin is refused. Raises FetchError."""
        limits = self.client.limits
        origin = origin_of(url)
        if origin is None:
            raise FetchError("not an http(s) URL")
        slot = self.client._slot(origin)
        if not slot.acquire(timeout=max(0.0, self.remaining())):
            raise FetchError(f"{limits.per_origin} requests to this FHIR server were already in flight and none "
                             "finished within the time budget")
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                status, location, body = self._get_once(url, token)
                if location is None:
                    break
                target = urljoin(url, location)
                if origin_of(target) != origin:
                    raise FetchError(f"FHIR server answered HTTP {status}, a redirect to another origin; not followed "
                                     "(the access token is only for its own server)")
                url = target
            else:
                raise FetchError(f"more than {_MAX_REDIRECTS} redirects")
        finally:
            slot.release()
        if status != 200:
            raise FetchError(f"FHIR server answered HTTP {status}{_outcome_text(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError("FHIR server answered with something that is not JSON") from None

    def _get_once(self, url: str, token: str | None) -> tuple[int, str | None, bytes]:
        limits = self.client.limits
        remaining = self.remaining()
        if remaining <= 0:
            raise self._late()
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._http.get(url, headers=headers, stream=True, allow_redirects=False,
                                      timeout=(min(limits.connect_timeout, remaining),
                                               min(limits.read_timeout, remaining)))
        except requests.Timeout:
            late = self.remaining() <= 0
            raise self._late() if late else FetchError("timed out waiting for the FHIR server") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            if self.remaining() <= 0:
                raise self._late() from None
            raise FetchError(f"connection failed ({type(err).__name__})") from None
        with response:
            if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                return response.status_code, response.headers["Location"], b""
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise self._too_big()
            body = bytearray()
            try:
                while True:
                    # one socket read at a time, so the deadline is checked as the bytes arrive
                    chunk = response.raw.read1(_CHUNK, decode_content=True)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limits.max_bytes:
                        raise self._too_big()
                    if self.remaining() <= 0:
                        raise self._late()
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as err:
                if self.remaining() <= 0:
                    raise self._late() from None
                raise FetchError(f"the FHIR server's answer broke off ({type(err).__name__})") from None
            return response.status_code, None, bytes(body)

    def _late(self) -> FetchError:
        return FetchError("no complete answer within the time budget")

    def _too_big(self) -> FetchError:
        return FetchError(f"the FHIR server's answer is larger than the {self.client.limits.max_bytes:,} byte limit "
                          "(CDS_FHIR_MAX_BYTES)")


def _outcome_text(body: bytes) -> str:
    """An OperationOutcome's first issue code, for the reason (never its free text: it may echo the query)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        issues = [i for i in doc.get("issue") or [] if isinstance(i, dict)]
        code = issues[0].get("code") if issues else None
        return f" (OperationOutcome: {code})" if isinstance(code, str) else " (OperationOutcome)"
    return ""
