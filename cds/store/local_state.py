"""Small security state that every worker process of one host must share: the JWT replay window
(used when no Redis is configured), workbench sessions, and failed workbench logins.

One SQLite file (default ./var/local-state.sqlite3, $CDS_LOCAL_STATE) in WAL mode: gunicorn's
workers are separate processes, so an in-process dict would give each worker its own replay window
and its own sessions. Every check is one short transaction (BEGIN IMMEDIATE, so two workers cannot
both see a jti as new). Several hosts do not share this file: replicas need CDS_REDIS_URL for
replays (docs/security.md). Rows expire and are swept as they are touched.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

STATE_ENV = "CDS_LOCAL_STATE"
DEFAULT_STATE_FILE = Path("var") / "local-state.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jti (key TEXT PRIMARY KEY, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jti_expires ON jti (expires)",
    "CREATE TABLE IF NOT EXISTS session (sid TEXT PRIMARY KEY, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS login_failure (client TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS login_failure_client ON login_failure (client, at)",
)


class LocalStateUnavailable(Exception):
    """The state file cannot be read or written (disk full, permissions, locked for too long)."""


class LocalState:
    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path or DEFAULT_STATE_FILE)          # a face passes CDS_LOCAL_STATE
        self.timeout = timeout
        self._clock = clock
        self._local = threading.local()

    def check(self) -> None:
        """Open the file now (start-up), so a path that cannot be used stops the service with a clear message."""
        with self._transaction():
            pass

    # --- connections: one per thread and process (a connection must not cross a fork) -------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            # Opened on first use: a service that never needs it (development mode) creates no file.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")   # survives a process crash; see the module docstring
            for statement in _SCHEMA:
                conn.execute(statement)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    class _Tx:
        def __init__(self, state: LocalState):
            self.state = state

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.conn = self.state._connection()
                self.conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, OSError) as err:
                raise LocalStateUnavailable(f"{self.state.path}: {err}") from None
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
            except sqlite3.Error as err:
                if exc_type is None:
                    raise LocalStateUnavailable(f"{self.state.path}: {err}") from None
            if isinstance(exc, sqlite3.Error):
                raise LocalStateUnavailable(f"{self.state.path}: {exc}") from None

    def _transaction(self) -> LocalState._Tx:
        return LocalState._Tx(self)

    # --- JWT replay window -----------------------------------------------------------------------
    def first_use(self, key: str, expires_at: float) -> bool:
        """Record `key` until `expires_at`; True the first time, False while an earlier record is live."""
        now = self._clock()
        with self._transaction() as conn:
            row = conn.execute("SELECT expires FROM jti WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            conn.execute("INSERT OR REPLACE INTO jti (key, expires) VALUES (?, ?)", (key, expires_at))
            # Sweep a few expired rows per insert: the table stays the size of the live window.
            conn.execute("DELETE FROM jti WHERE rowid IN (SELECT rowid FROM jti WHERE expires <= ? LIMIT 20)", (now,))
            return True

    # --- workbench sessions ----------------------------------------------------------------------
    def open_session(self, sid: str, lifetime: float) -> None:
        now = self._clock()
        with self._transaction() as conn:
            conn.execute("DELETE FROM session WHERE expires <= ?", (now,))
            conn.execute("INSERT INTO session (sid, expires) VALUES (?, ?)", (sid, now + lifetime))

    def session_live(self, sid: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute("SELECT expires FROM session WHERE sid = ?", (sid,)).fetchone()
        return row is not None and row[0] > self._clock()

    def close_session(self, sid: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM session WHERE sid = ?", (sid,))

    # --- login throttling ------------------------------------------------------------------------
    def login_failures(self, client: str, window: float) -> int:
        """Failed logins from `client` within the last `window` seconds."""
        now = self._clock()
        with self._transaction() as conn:
            conn.execute("DELETE FROM login_failure WHERE at <= ?", (now - window,))
            return conn.execute("SELECT count(*) FROM login_failure WHERE client = ? AND at > ?",
                                (client, now - window)).fetchone()[0]

    def record_login_failure(self, client: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO login_failure (client, at) VALUES (?, ?)", (client, self._clock()))

    def clear_login_failures(self, client: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM login_failure WHERE client = ?", (client,))
