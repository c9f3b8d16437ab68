"""The storage layer's one entry point for the service and the CLI.

    store = Store.open()                 # migrate, replay the spool, start the writer
    store.record_call(CallRecord(...))   # per CDS call: never raises, never waits on the database
    store.record_feedback(service_id, body["feedback"])   # UnknownCard → 404, InvalidFeedback → 400,
                                                          # StoreUnavailable → 503
    store.report(since, all_rule_ids)    # dict for the committee; format_report() renders it
    store.close()                        # flush the queue (to the database or the spool)

Open one Store per process, after any fork (gunicorn: in the worker, not the master with
--preload): the writer thread and file locks do not cross a fork. A Store used in a forked child
notices and starts its own writer.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select

from cds.store import migrate
from cds.store.audit import insert_entries
from cds.store.boundary import database_errors
from cds.store.engine import database_url, make_engine
from cds.store.errors import StoreUnavailable, UnknownCard
from cds.store.feedback import feedback_entries
from cds.store.journal import Journal
from cds.store.pseudonym import PatientHasher, load_audit_key
from cds.store.records import CallRecord, audit_entry
from cds.store.report import build_report
from cds.store.schema import card_table
from cds.store.spool import Spool, SpoolBacklog, spool_backlog
from cds.store.writer import AuditWriter

log = logging.getLogger(__name__)

SPOOL_ENV = "CDS_SPOOL_DIR"
DEFAULT_SPOOL_DIR = Path("var") / "spool"
_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def spool_directory(directory: str | os.PathLike | None = None) -> Path:
    """The spool's folder: `directory` (a face passes CDS_SPOOL_DIR), else ./var/spool."""
    return Path(directory or DEFAULT_SPOOL_DIR)


class Store:
    def __init__(self, engine: Engine, spool: Spool, hasher: PatientHasher, *, queue_size: int,
                 retry_interval: float, flush_timeout: float):
        self.engine = engine
        self.spool = spool
        self._hash = hasher
        self._queue_size = queue_size
        self._retry_interval = retry_interval
        self._flush_timeout = flush_timeout
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        # Cards enqueued or spooled by this process and not yet known to be in the database:
        # feedback for them is accepted (and spooled) even before their audit row lands.
        self._unconfirmed: dict[str, str] = {}
        self._unconfirmed_lock = threading.Lock()
        self._closed = False
        self._start_writer()

    @classmethod
    def open(cls, url: str | None = None, spool_dir: str | os.PathLike | None = None,
             audit_key: bytes | str | None = None, *, audit_key_file: Path | None = None, queue_size: int = 10_000,
             retry_interval: float = 5.0, db_timeout: float = 3.0, flush_timeout: float = 5.0) -> Store:
        """Connect, migrate and replay the spool. If the database is down the store still opens:
        audit entries are spooled and the schema is brought up when the database returns.
        Configuration errors (bad URL, short audit key) raise CdsError."""
        hasher = PatientHasher(load_audit_key(audit_key, audit_key_file))
        engine = make_engine(url, db_timeout)
        spool = Spool(spool_directory(spool_dir))
        store = cls(engine, spool, hasher, queue_size=queue_size, retry_interval=retry_interval,
                    flush_timeout=flush_timeout)
        try:
            store.ensure_schema()
        except StoreUnavailable as err:
            log.error("audit database %s unavailable at start-up (%s); audit entries will be spooled to %s",
                      engine.url.render_as_string(hide_password=True), err.cause, spool.directory)
        else:
            store._writer.replay_now(flush_timeout)  # what earlier processes left in the spool
        _open_stores.add(store)
        return store

    # --- per CDS call -----------------------------------------------------------------------------
    def record_call(self, record: CallRecord) -> None:
        """Queue the audit of one CDS call. Never raises; the database write happens elsewhere."""
        try:
            self._check_process()
            entry = audit_entry(record, self._hash)
            with self._unconfirmed_lock:
                for card in entry["cards"]:
                    self._unconfirmed[card["uuid"]] = entry["call_id"]
        except Exception:
            log.exception("audit of call %s could not be prepared", getattr(record, "call_id", "?"))
            return
        generation = None
        try:
            generation = self._journal.append(entry)   # before the response leaves: a dying worker loses nothing
        except Exception:
            log.exception("audit journal write failed for call %s", entry["call_id"])
        self._writer.submit(entry, generation)

    def patient_hash(self, patient_id: str) -> str:
        """The pseudonym under which the patient appears in the audit (for the service's own logs)."""
        return self._hash(patient_id)

    # --- feedback ---------------------------------------------------------------------------------
    def record_feedback(self, service_id: str, feedback_items: list[dict]) -> None:
        """Store CDS Hooks feedback durably (all items or none).

        Raises InvalidFeedback (400) for malformed feedback, UnknownCard (404) when a card uuid was
        never issued, StoreUnavailable (503) when the database is down and the cards are not ones
        this process issued and still holds."""
        entries = feedback_entries(service_id, feedback_items)
        cards = {e["card_uuid"] for e in entries}
        self._check_process()
        self._writer.flush(self._flush_timeout)  # cards this process issued just now reach the database
        try:
            with database_errors("the audit database is unavailable; retry the feedback later"):
                self.ensure_schema()
                with self.engine.begin() as conn:
                    known = set(conn.scalars(select(card_table.c.card_uuid).where(card_table.c.card_uuid.in_(cards))))
                    missing = cards - known
                    with self._unconfirmed_lock:
                        pending_here = {c for c in missing if c in self._unconfirmed}
                    if missing - pending_here:
                        raise UnknownCard(sorted(missing - pending_here))
                    insert_entries(conn, [e for e in entries if e["card_uuid"] in known])
        except StoreUnavailable:
            with self._unconfirmed_lock:
                all_pending_here = all(c in self._unconfirmed for c in cards)
            if not all_pending_here:
                raise
            self._queue_durably(entries)
            return
        if pending_here:
            # The card's audit is still queued or spooled here: its feedback follows it the same way.
            self._queue_durably([e for e in entries if e["card_uuid"] in pending_here])

    def _queue_durably(self, entries: list[dict]) -> None:
        for entry in entries:
            self._writer.submit(entry)
        if not self._writer.flush(self._flush_timeout):
            raise StoreUnavailable("the audit writer is behind; retry the feedback later")

    # --- reports ----------------------------------------------------------------------------------
    def report(self, since: datetime | None = None, all_rule_ids: Iterable[str] = ()) -> dict:
        """The committee report over calls made at or after `since` (all calls when None), with what still
        waits on this host's disk for the database (those calls are not counted yet)."""
        self._writer.flush(self._flush_timeout)
        with database_errors():
            self.ensure_schema()
            with self.engine.connect() as conn:
                report = build_report(conn, since, all_rule_ids)
        report["backlog"] = self.backlog().as_dict()    # what the counts leave out
        return report

    # --- lifecycle --------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call recorded so far is in the database or the spool."""
        return self._writer.flush(self._flush_timeout if timeout is None else timeout)

    def replay_now(self, timeout: float | None = None) -> bool:
        """Ask the writer to retry the database and replay the spool now; True if the spool is empty after."""
        finished = self._writer.replay_now(self._flush_timeout if timeout is None else timeout)
        return finished and self._writer.database_up and not self.spool.pending()

    @property
    def database_up(self) -> bool:
        return self._writer.database_up

    @property
    def queue_depth(self) -> int:
        """Audit entries this process has queued and not yet written (for /metrics)."""
        return self._writer.queue_depth

    def backlog(self) -> SpoolBacklog:
        """What waits on this host's disk for the database (every process's spool and journals)."""
        return spool_backlog(self.spool.directory)

    def ensure_schema(self) -> None:
        """Run migrations once per Store; StoreUnavailable while the database is down."""
        if self._schema_ready:
            return
        with self._schema_lock, database_errors():
            if not self._schema_ready:
                migrate.upgrade(self.engine)
                self._schema_ready = True

    def close(self) -> None:
        """Write or spool everything queued, release the spool file and the connections."""
        if self._closed:
            return
        self._closed = True
        if self._pid == os.getpid():
            self._writer.stop(timeout=max(self._flush_timeout, 30.0))
            self._journal.close()
        self.spool.close()
        self.engine.dispose()
        _open_stores.discard(self)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    def _start_writer(self) -> None:
        self._pid = os.getpid()
        self._journal = Journal(self.spool.directory / "journal")
        self._writer = AuditWriter(self.engine, self.spool, ensure_schema=self.ensure_schema,
                                   on_stored=self._confirmed, queue_size=self._queue_size,
                                   retry_interval=self._retry_interval, journal=self._journal)

    def after_fork(self) -> None:
        """Call in a child process (a gunicorn worker) before use: it gets its own writer thread,
        connections and spool file."""
        self._check_process(expected=True)

    def _check_process(self, expected: bool = False) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread, connections and spool file are not ours
            (log.info if expected else log.warning)(
                "Store used in a forked process; starting a writer for process %d", os.getpid())
            self.engine.dispose(close=False)
            self.spool = Spool(self.spool.directory)
            self._schema_lock = threading.Lock()      # locks held by other threads at fork stay held
            self._unconfirmed_lock = threading.Lock()
            self._unconfirmed = {}
            self._start_writer()

    def _confirmed(self, entries: list[dict]) -> None:
        with self._unconfirmed_lock:
            for entry in entries:
                for card in entry.get("cards") or ():
                    self._unconfirmed.pop(card["uuid"], None)


def database_description(url: str | None = None) -> str:
    """The database URL in use, password hidden (for `cds version` and logs)."""
    from sqlalchemy.engine import make_url
    return make_url(database_url(url)).render_as_string(hide_password=True)


@atexit.register
def _close_open_stores() -> None:
    # A service that forgets close() still gets its queued audit entries written or spooled.
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:
            log.exception("closing the audit store at exit failed")
