"""Real outages for the store tests: a TCP proxy in front of PostgreSQL, a write lock on SQLite.

The store under test connects through these, so "the database is down" is a refused or hung
connection (PostgreSQL) or a database another process holds locked (SQLite), never a mock.
"""
from __future__ import annotations

import os
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cds.store import CallRecord, CardRecord, FactRecord

AUDIT_KEY = "test-audit-key-0123456789abcdef0123456789abcdef"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. down(): refuse; hang(): accept and never answer; up()."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._mode = "down"
        self.accepted_while_hanging = 0

    def up(self) -> None:
        self._stop_listening()
        self._close_connections()
        self._mode = "up"
        self._listen()

    def hang(self) -> None:
        """Keep accepting, forward nothing: clients wait until their own timeouts (or up())."""
        self._close_connections()
        self._mode = "hang"
        if self._listener is None:
            self._listen()

    def down(self) -> None:
        self._stop_listening()
        self._close_connections()
        self._mode = "down"

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def _close_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.add(client)
            if self._mode == "hang":
                self.accepted_while_hanging += 1
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass


class PostgresBackend:
    """A fresh schema per test on the shared server; the store reaches it through a TcpProxy."""

    name = "postgresql"

    def __init__(self, server_url: str):
        self.server_url = make_url(server_url).set(drivername="postgresql+psycopg")
        self.schema = f"pgxcds_test_{uuid.uuid4().hex[:12]}"
        self._admin = create_engine(self.server_url)
        with self._admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.proxy = TcpProxy(self.server_url.host or "127.0.0.1", self.server_url.port or 5432)
        self.proxy.up()
        options = {"options": f"-csearch_path={self.schema}"}
        self.url = self.server_url.set(host="127.0.0.1", port=self.proxy.port, query=options) \
            .render_as_string(hide_password=False)
        self.direct_url = self.server_url.set(query=options).render_as_string(hide_password=False)

    def down(self) -> None:
        self.proxy.down()

    def hang(self) -> None:
        self.proxy.hang()

    def up(self) -> None:
        self.proxy.up()

    def close(self) -> None:
        self.proxy.down()
        with self._admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self._admin.dispose()


class SqliteBackend:
    """A file per test; an outage is another connection holding the write lock."""

    name = "sqlite"

    def __init__(self, directory: str):
        self.path = os.path.join(directory, "audit.sqlite3")
        self.url = self.direct_url = f"sqlite:///{self.path}"
        self._locker: sqlite3.Connection | None = None

    def down(self) -> None:
        self.hang()

    def hang(self) -> None:
        """Hold the write lock: writers wait their busy timeout, then fail with 'database is locked'."""
        if self._locker is None:
            locker = sqlite3.connect(self.path, isolation_level=None, timeout=0, check_same_thread=False)
            locker.execute("PRAGMA journal_mode=WAL")
            locker.execute("BEGIN EXCLUSIVE")
            self._locker = locker

    def up(self) -> None:
        if self._locker is not None:
            self._locker.execute("ROLLBACK")
            self._locker.close()
            self._locker = None

    def close(self) -> None:
        self.up()


def call_record(patient_id: str = "pat-4711", *, rule_id: str = "cpic-clopidogrel", cards: int = 1,
                service_id: str = "pgx-order-select", time: datetime | None = None, consent: str | None = None,
                unresolved: list[str] | None = None, fhir_errors: list[str] | None = None,
                policy_version: int | None = None) -> CallRecord:
    return CallRecord(
        service_id=service_id, hook="order-select", hook_instance=str(uuid.uuid4()), patient_id=patient_id,
        kb_version="kb-0123abcd",
        cards=[CardRecord(str(uuid.uuid4()), rule_id, "cpic-cyp2c19-clopidogrel", "2022-01", "warning",
                          "CYP2C19 poor metabolizer: avoid clopidogrel", None, policy_version) for _ in range(cards)],
        facts=[FactRecord("CYP2C19", "Poor Metabolizer", "Poor Metabolizer", ["Observation/cyp2c19-obs"])],
        unresolved_drugs=unresolved or [], fhir_errors=fhir_errors or [], consent=consent, latency_ms=12.5,
        **({"time": time} if time else {}),
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll until `condition()` holds; False if it never did within `timeout` (a deadlock guard)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
