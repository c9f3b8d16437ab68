"""The audit journal: every audit entry is appended here by the request thread before the CDS
response leaves, so a worker that dies (kill -9, the OOM killer, gunicorn's timeout) loses no record.

Each process appends JSON lines to its own `journal/journal-<ns>-<host>-<pid>.jsonl` and holds an
exclusive flock on it while it lives. The append is one write() into the kernel, which keeps it
whatever happens to the process; the writer thread fsyncs the file once per batch, before the
batch's database commit. Once every entry appended so far is in the database or the spool, the
writer truncates the file (an entry stored twice is skipped by its key, so truncating late is
harmless). A journal whose owner died is no longer locked: any process of the service adopts it
(at start-up and with every spool replay), hands its entries to the database or the spool, and
deletes it; the flock makes sure only one process does, the entries' keys that each is stored once.

What can still be lost is said in docs/governance.md: on a power cut or kernel crash, the entries
appended since the last fsync (at most one writer batch, about LINGER + one commit).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from cds.store.spool import _fsync_dir, _read_all, _read_entries, _same_file, _write_all

log = logging.getLogger(__name__)


ROTATE_BYTES = 4 * 1024 * 1024   # under steady load the active file is never all settled: start a new one


class _Segment:
    """One journal file of this process and how many of its entries are settled."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd
        self.appended = 0
        self.settled = 0
        self.size = 0


class Journal:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}   # generation → file; the highest is the active one
        self._generation = 0
        self._dirty: set[int] = set()               # fds appended to since the last fsync
        self._host = socket.gethostname().replace("-", "_")

    # --- request threads -------------------------------------------------------------------------
    def append(self, entry: dict) -> int:
        """One write() of one line; returns the file's generation, which `settled` takes back.
        Raises OSError if the disk refuses it."""
        data = orjson.dumps(entry) + b"\n"     # on the request path: orjson, several times the stdlib's speed
        with self._lock:
            active = self._segments.get(self._generation)
            if active is None or active.size >= ROTATE_BYTES:
                active = self._open()
            _write_all(active.fd, data)
            active.appended += 1
            active.size += len(data)
            self._dirty.add(active.fd)
            return self._generation

    # --- the writer thread -----------------------------------------------------------------------
    def sync(self) -> None:
        """fsync what was appended so far (once per batch, before its commit)."""
        # fsync outside the lock: request threads append under it, and a sync worker that waited
        # for the disk here would serve nobody meanwhile (measured: 2 ms per append under load).
        # Duplicates of the descriptors, so a file closed meanwhile (settled) is still synced safely.
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            copies = [os.dup(fd) for fd in dirty]
        for fd in copies:
            try:
                os.fsync(fd)
            except OSError:
                log.exception("audit journal fsync failed")
            finally:
                os.close(fd)

    def settled(self, counts: dict[int, int]) -> None:
        """These journaled entries (count per generation) are in the database or the spool. A file whose
        entries are all settled is emptied (the active one) or deleted (an older one)."""
        with self._lock:
            for generation, count in counts.items():
                segment = self._segments.get(generation)
                if segment is None:
                    continue
                segment.settled += count
                if segment.settled < segment.appended:
                    continue
                if generation == self._generation:
                    os.ftruncate(segment.fd, 0)       # O_APPEND: the next line goes to the start
                    segment.appended = segment.settled = segment.size = 0
                else:
                    self._dirty.discard(segment.fd)
                    segment.path.unlink(missing_ok=True)
                    os.close(segment.fd)
                    del self._segments[generation]

    def adopt_orphans(self, write: Callable[[list[dict]], bool]) -> int:
        """Hand the entries of every journal whose process is gone to `write` (True: stored or spooled),
        then delete that journal. Returns how many entries were handed over."""
        adopted = 0
        own = self._own_paths()
        for path in sorted(self.directory.glob("journal-*.jsonl")):
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:          # its process is alive (or another adopts it now)
                    continue
                if not _same_file(fd, path):
                    continue
                entries = list(_read_entries(_read_all(fd), path))
                if entries and not write(entries):
                    continue                     # keep it: the next replay tries again
                path.unlink()
                _fsync_dir(self.directory)
                adopted += len(entries)
                if entries:
                    log.warning("adopted %d audit entries from the journal of a process that ended "
                                "without writing them (%s)", len(entries), path.name)
            finally:
                os.close(fd)
        return adopted

    def pending_orphans(self) -> bool:
        own = self._own_paths()
        return any(p not in own for p in self.directory.glob("journal-*.jsonl"))

    def _own_paths(self) -> set[Path]:
        with self._lock:
            return {segment.path for segment in self._segments.values()}

    @property
    def size(self) -> int:
        with self._lock:
            return sum(segment.size for segment in self._segments.values())

    def close(self) -> None:
        """Close this process's files; delete those whose entries are all settled (others stay for adoption)."""
        with self._lock:
            for segment in self._segments.values():
                if segment.settled >= segment.appended:
                    segment.path.unlink(missing_ok=True)
                os.close(segment.fd)
            self._segments.clear()
            self._dirty.clear()

    def _open(self) -> _Segment:
        path = self.directory / f"journal-{time.time_ns():020d}-{self._host}-{os.getpid()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _fsync_dir(self.directory)
        self._generation += 1
        segment = self._segments[self._generation] = _Segment(path, fd)
        return segment
