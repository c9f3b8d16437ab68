"""The background writer: takes audit entries off a bounded queue and commits them in batches.

The request thread only hashes, builds a dict and enqueues it (microseconds). This thread does the
database work with short timeouts. When a write fails for a reason worth retrying, the batch goes to
the spool and the writer stops trying the database for each entry ("down"): new entries go straight
to the spool until a replay, tried every `retry_interval` seconds, gets the whole spool in. A full
queue (database slower than traffic) also spills to the spool, from the request thread. So a CDS
response never waits on the database, and every entry ends in the database or, until it can, on disk.

Before an entry is queued the store appends it to this process's journal (cds.store.journal), so a
process that dies with entries still queued loses none: this writer fsyncs the journal once per
batch, tells it which entries are settled, and adopts the journals of dead processes.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from cds.store.audit import insert_entries, insert_entry
from cds.store.boundary import DatabaseRefused, database_errors, describe
from cds.store.errors import StoreUnavailable
from cds.store.journal import Journal
from cds.store.spool import Spool

log = logging.getLogger(__name__)

BATCH = 100
# After the first entry of a batch, wait this long for more: under load one commit (and its fsync)
# then carries dozens of calls instead of one, which is most of the writer's cost. A flush or stop
# request ends the wait at once.
LINGER = 0.05
_STOP = object()


class _ReplayRequest(threading.Event):
    """Queued by replay_now(): replay the spool now, then set."""


@dataclass
class _Gathered:
    """One turn of the writer: the entries to write, who waits for them, whether to stop."""

    batch: list[dict] = field(default_factory=list)
    journaled: dict[int, int] = field(default_factory=dict)    # journal generation → entries of it in batch
    waiters: list[threading.Event] = field(default_factory=list)
    replay_waiters: list[_ReplayRequest] = field(default_factory=list)
    stopping: bool = False


class AuditWriter:
    def __init__(self, engine: Engine, spool: Spool, *, ensure_schema: Callable[[], None],
                 on_stored: Callable[[list[dict]], None], queue_size: int = 10_000,
                 retry_interval: float = 5.0, journal: Journal | None = None):
        self._engine = engine
        self._spool = spool
        self._journal = journal
        self._ensure_schema = ensure_schema
        self._on_stored = on_stored          # told which entries are in the database (directly or replayed)
        self._retry_interval = retry_interval
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        # Set to cut a batch's linger short: a flush, replay or stop request, or a full batch waiting.
        # Without it the writer woke for every entry submitted while it lingered (measured: a sixth of
        # the writer's CPU per call under load).
        self._hurry = threading.Event()
        self._down_since: float | None = None  # set while the database is failing
        self._next_replay = 0.0
        self._spill_lock = threading.Lock()
        self._spills = 0                     # entries spilled to the spool from request threads
        self._spills_drained = 0             # spill count the last successful replay covered
        self._thread = threading.Thread(target=self._run, name="cds-audit-writer", daemon=True)
        self._thread.start()

    @property
    def database_up(self) -> bool:
        return self._down_since is None

    def _spooling(self) -> bool:
        """Whether new entries must go behind spooled ones (database down, or spilled entries pending)."""
        return not self.database_up or self._spills != self._spills_drained

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- called from request threads ------------------------------------------------------------
    def submit(self, entry: dict, generation: int | None = None) -> None:
        """Enqueue an entry (`generation`: the journal file the caller appended it to first); if the
        queue is full, spool it here. Never raises, never waits on the database."""
        try:
            self._queue.put_nowait((entry, generation))
            if self._queue.qsize() >= BATCH:
                self._hurry.set()
            return
        except queue.Full:
            pass
        with self._spill_lock:
            kept = self._spool_or_lose([entry], "audit queue full")
            self._spills += 1
        if kept and generation is not None and self._journal is not None:
            self._journal.settled({generation: 1})

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is committed or spooled; False on timeout."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return done.wait(timeout)

    def replay_now(self, timeout: float) -> bool:
        """Retry the database and replay the spool now; False if that did not finish within `timeout`."""
        done = _ReplayRequest()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Write what is queued (or spool it), try one last replay, and end the thread."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("audit writer did not take the stop request within %.1fs", timeout)
        self._hurry.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit writer still busy after %.1fs; queued entries not yet spooled may be lost", timeout)

    # --- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._retry_interval)
            except queue.Empty:
                first = None
            if isinstance(first, tuple) and self._queue.qsize() < BATCH:
                # an entry: let a batch gather for LINGER (one wake-up, not one per entry)
                self._hurry.wait(LINGER)
            self._hurry.clear()
            gathered = self._gather(first)
            stopping = gathered.stopping
            try:
                self._write_batch(gathered)
                for waiter in gathered.waiters:   # written or spooled: no need to wait for a replay
                    waiter.set()
                if stopping or gathered.replay_waiters or time.monotonic() >= self._next_replay:
                    self._replay()
            except Exception:
                log.exception("audit writer failed on a batch of %d entries", len(gathered.batch))
            finally:
                for waiter in (*gathered.waiters, *gathered.replay_waiters):
                    waiter.set()

    def _gather(self, item: object) -> _Gathered:
        """`item` and what else is queued now, up to a batch of entries, sorted by kind."""
        gathered = _Gathered()
        while item is not None:
            if item is _STOP:
                gathered.stopping = True
            elif isinstance(item, _ReplayRequest):
                gathered.replay_waiters.append(item)
            elif isinstance(item, threading.Event):
                gathered.waiters.append(item)
            elif isinstance(item, tuple):
                entry, generation = item
                gathered.batch.append(entry)
                if generation is not None:
                    gathered.journaled[generation] = gathered.journaled.get(generation, 0) + 1
            if len(gathered.batch) >= BATCH:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        return gathered

    def _write_batch(self, gathered: _Gathered) -> None:
        if not gathered.batch:
            return
        journal = self._journal if gathered.journaled else None
        if journal is not None:
            journal.sync()          # one fsync per batch, before its commit
        if self._write(gathered.batch) and journal is not None:
            journal.settled(gathered.journaled)

    def _write(self, batch: list[dict]) -> bool:
        """Store the batch, or spool it; False only if it could be neither (then it is lost, loudly)."""
        if self._spooling():
            return self._spool_or_lose(batch, "earlier entries are spooled")
        try:
            with database_errors():
                self._ensure_schema()
                with self._engine.begin() as conn:
                    insert_entries(conn, batch)
        except StoreUnavailable as err:
            self._went_down(err)
            return self._spool_or_lose(batch, "database write failed")
        except Exception:
            return self._write_one_by_one(batch, spool_on_outage=True)
        self._on_stored(batch)
        return True

    def _write_one_by_one(self, batch: list[dict], *, spool_on_outage: bool) -> bool:
        """Isolate the entries the database refuses; store the rest."""
        for position, entry in enumerate(batch):
            try:
                with database_errors(), self._engine.begin() as conn:
                    insert_entry(conn, entry)
            except StoreUnavailable as err:
                if not spool_on_outage:
                    raise
                self._went_down(err)
                return self._spool_or_lose(batch[position:], "database write failed")
            except Exception as err:
                self._reject(entry, err)
                continue
            self._on_stored([entry])
        return True

    def _replay(self) -> None:
        self._next_replay = time.monotonic() + self._retry_interval
        if self._journal is not None and self._journal.pending_orphans():
            self._journal.adopt_orphans(self._write)
        if not self._spooling() and not self._spool.pending():
            return
        spills = self._spills  # spills counted so far are in files this replay seals and takes
        try:
            self._ensure_schema()
            replayed = self._spool.replay(self._write_replayed)
        except StoreUnavailable as err:
            self._went_down(err)
            return
        except Exception:
            log.exception("audit spool replay failed")
            return
        self._spills_drained = spills
        if self._down_since is not None:
            log.warning("audit database reachable again after %.1fs; %d spooled entries replayed",
                        time.monotonic() - self._down_since, replayed)
            self._down_since = None
        elif replayed:
            log.info("replayed %d spooled audit entries", replayed)

    def _write_replayed(self, entries: list[dict]) -> None:
        """Commit a chunk from the spool; StoreUnavailable on an outage, so the file is kept."""
        try:
            with database_errors(), self._engine.begin() as conn:
                insert_entries(conn, entries)
        except StoreUnavailable:
            raise
        except Exception:
            self._write_one_by_one(entries, spool_on_outage=False)
            return
        self._on_stored(entries)

    def _went_down(self, err: StoreUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("audit database unavailable (%s); spooling audit entries to %s until it is back",
                      err.cause, self._spool.directory)

    def _reject(self, entry: dict, err: BaseException) -> None:
        reason = str(err) if isinstance(err, DatabaseRefused) else describe(err)
        log.error("audit entry %s refused by the database (%s); set aside in the spool's rejected file",
                  entry.get("call_id") or entry.get("feedback_id"), reason)
        try:
            self._spool.reject(entry, reason)
        except OSError:
            log.exception("could not set aside refused audit entry %s", entry.get("call_id"))

    def _spool_or_lose(self, entries: list[dict], why: str) -> bool:
        try:
            self._spool.append(entries)
            return True
        except OSError:
            # Last line of defence: the record is lost (unless journaled), and we say so loudly (ids only).
            log.critical("%s and the spool cannot be written: %d audit entries not spooled (%s)", why, len(entries),
                         ", ".join(str(e.get("call_id") or e.get("feedback_id")) for e in entries))
            return False
