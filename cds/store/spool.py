"""A local, append-only spool for audit writes the database did not take in time.

Each process appends fsync'd JSON lines to its own file in the spool directory and holds an
exclusive flock on it while it is open, so several workers (gunicorn) can share one directory.
Replay seals the process's own file, then takes every unlocked `spool-*.jsonl` file in name order
(names begin with a nanosecond timestamp, so older writes replay first), hands its entries to the
database writer and deletes the file only after they are all committed. A file whose owner died is
simply unlocked, so any process replays it. Entries carry their own primary keys: replaying twice
inserts nothing twice.

Entries the database rejects for good (a constraint, not an outage) go to `rejected-*.jsonl`,
which nothing replays: an operator reads it. Spooled entries are de-identified like database rows.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPLAY_CHUNK = 200  # entries per database transaction during replay


@dataclass(frozen=True)
class SpoolBacklog:
    """What waits on this host's disk for the database: spooled entries (the database was down or
    refused them in time) and journals not yet settled, by size; read from the folder, so it covers
    every process that shares it."""

    spool_files: int
    spool_bytes: int
    oldest_spooled_seconds: float     # since the oldest spool file was started; 0 when none waits
    journal_bytes: int

    def as_dict(self) -> dict[str, float]:
        return {"spool_files": self.spool_files, "spool_bytes": self.spool_bytes,
                "oldest_spooled_seconds": round(self.oldest_spooled_seconds, 1), "journal_bytes": self.journal_bytes}


def spool_backlog(directory: str | os.PathLike) -> SpoolBacklog:
    """Sizes and file names only (nothing is read), so a metrics scrape can afford it."""
    folder = Path(directory)
    spooled = sorted(folder.glob("spool-*.jsonl"))
    oldest = max(0.0, time.time() - _started(spooled[0])) if spooled else 0.0
    return SpoolBacklog(len(spooled), sum(map(_size, spooled)), oldest,
                        sum(map(_size, (folder / "journal").glob("journal-*.jsonl"))))


def _started(path: Path) -> float:
    """When a spool file was started: the timestamp in its name (spool-<ns>-<host>-<pid>.jsonl)."""
    try:
        return int(path.name.split("-")[1]) / 1e9
    except (IndexError, ValueError):         # not named by us: its last change will do
        return path.stat().st_mtime


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:      # replayed (or settled) meanwhile
        return 0


class Spool:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._fd: int | None = None        # this process's active spool file, flock'd while open
        self._path: Path | None = None
        self._host = socket.gethostname().replace("-", "_")

    # --- writing -------------------------------------------------------------------------------
    def append(self, entries: list[dict]) -> None:
        """Append entries durably (written and fsync'd before return). Raises OSError if the disk fails."""
        data = b"".join(_line(e) for e in entries)
        with self._lock:
            fd = self._fd if self._fd is not None else self._open_active()
            _write_all(fd, data)
            os.fsync(fd)

    def reject(self, entry: dict, reason: str) -> None:
        """Set aside an entry the database refuses for good, with the reason, for an operator."""
        path = self.directory / f"rejected-{self._host}-{os.getpid()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, _line({"reason": reason, "entry": entry}))
            os.fsync(fd)
        finally:
            os.close(fd)

    def seal(self) -> None:
        """Close this process's active file so replay (here or elsewhere) may take it."""
        with self._lock:
            self._close_active()

    def _open_active(self) -> int:
        name = f"spool-{time.time_ns():020d}-{self._host}-{os.getpid()}.jsonl"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # new and uniquely named: nobody else holds it
        _fsync_dir(self.directory)      # the new name survives a crash
        self._fd, self._path = fd, path
        return fd

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)           # also releases the flock
            self._fd, self._path = None, None

    # --- replay --------------------------------------------------------------------------------
    def pending(self) -> bool:
        """Whether any spool file (this process's or an orphan) waits for replay."""
        return any(self._files())

    def replay(self, write: Callable[[list[dict]], None]) -> int:
        """Hand every spooled entry to `write` in chunks; delete each file once all of it is written.

        `write` raises when the database is unavailable: replay stops there, the file stays, and the
        next replay starts it again (its committed part inserts nothing the second time).
        """
        self.seal()
        replayed = 0
        for path in self._files():
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:    # another process replayed it meanwhile
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its owner is still writing it, or another replay holds it
                    continue
                if not _same_file(fd, path):  # replayed and removed between listing and locking
                    continue
                entries = list(_read_entries(_read_all(fd), path))
                for start in range(0, len(entries), REPLAY_CHUNK):
                    write(entries[start:start + REPLAY_CHUNK])
                path.unlink()
                _fsync_dir(self.directory)
                replayed += len(entries)
            finally:
                os.close(fd)
        return replayed

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("spool-*.jsonl"))

    def close(self) -> None:
        self.seal()


def _line(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def _read_entries(data: bytes, path: Path) -> Iterator[dict]:
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            # Only the last line of a file can be torn (a crash mid-append, before fsync returned).
            log.error("spool %s line %d is not valid JSON and is skipped", path.name, number)
            continue
        if isinstance(entry, dict):
            yield entry


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
