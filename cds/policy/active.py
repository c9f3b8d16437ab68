"""The policy a service process serves, and how a newly active version reaches every worker.

A `Snapshot` is one policy ready to serve: its knowledge, its compiled engine (durable-rules rulesets
under names of its own) and its advisor. A call takes the current snapshot when it starts and keeps it
to the end (the service pins it per request), so a call in flight finishes on the version it started
with. Every worker — and every replica on the same database — asks the database every few seconds
(`CDS_POLICY_POLL`, default 2) which version is active; when it changed, the worker compiles the new
one beside the old in a background thread, warms it, runs its test cases, and swaps one reference.
A version that does not validate or whose test cases fail is refused: logged, and the worker keeps
serving the version it has. A replaced engine's rulesets are freed a minute later, when no call can
still be using them.

Without a database (CDS_AUDIT=false) or with CDS_POLICY=files the policy is the rules/ files the
service started with, as before governance.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.engine import Engine
from cds.errors import KnowledgeError
from cds.knowledge.loader import KnowledgeBase, rules_files
from cds.pipeline import Advisor
from cds.policy.review import PolicyRefused, compile_policy, validate_files
from cds.policy.store import PolicyStore, files_digest

log = logging.getLogger("cds.policy")

RETIRE_AFTER = 60.0              # seconds an engine replaced by a newer one is kept for calls still using it


@dataclass
class Snapshot:
    version: int | None          # the policy version in the database; None: the rules/ files
    kb: KnowledgeBase
    engine: Engine
    advisor: Advisor
    views: dict[str, Any] = field(default_factory=dict, repr=False)   # faces' derived data, built once each

    def view(self, name: str, build):
        """Data a face derives from this policy alone (e.g. the workbench catalogue), built on first use."""
        found = self.views.get(name)
        if found is None:
            found = self.views[name] = build(self)
        return found


def snapshot_of_files(kb: KnowledgeBase) -> Snapshot:
    """The rules/ files as loaded, compiled and tested. Raises PolicyRefused when a test case fails."""
    compiled = compile_policy(kb)
    return Snapshot(None, compiled.kb, compiled.engine, compiled.advisor)


class PolicyHolder:
    """Holds the current snapshot; `refresh` takes up the database's active version."""

    def __init__(self, snapshot: Snapshot, store: PolicyStore | None = None, interval: float = 2.0):
        self._snapshot = snapshot
        self.store = store
        self.base = snapshot.kb
        self.interval = interval
        self._refused: set[tuple[int, str]] = set()       # (version, digest) that failed here: not retried
        self._unreachable = False                          # the database failed at the last poll
        self._retired: list[tuple[float, Snapshot]] = []
        self._refresh_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watcher_pid: int | None = None
        self._stop = threading.Event()

    @classmethod
    def start_up(cls, kb: KnowledgeBase, store: PolicyStore | None, poll_seconds: float = 2.0) -> PolicyHolder:
        """At service start: without a store, the files; with one, the active version (the repository's
        rules/ seed version 1 of a new database), else the newest earlier active version that passes,
        else the files. `poll_seconds`: how often the database's active version is read (CDS_POLICY_POLL)."""
        if store is None:
            return cls(snapshot_of_files(kb))
        holder = cls(_placeholder(kb), store, poll_seconds)
        try:
            store.seed(rules_files(kb.root))
            holder._snapshot = holder._last_good(kb)
        except Exception as err:
            log.error("policy database unavailable at start-up (%s); serving the rules/ files until it answers",
                      type(err).__name__)
            holder._snapshot = snapshot_of_files(kb)
        return holder

    def _last_good(self, kb: KnowledgeBase) -> Snapshot:
        store = self.store
        assert store is not None
        disk = rules_files(kb.root)
        for newest, activation in enumerate(store.activations()):   # newest first
            version = store.version(activation.version)
            try:
                if version.digest == files_digest(disk):
                    compiled = compile_policy(kb)       # the files as loaded: same text, and their cache
                else:
                    compiled = compile_policy(kb, version.files)
            except PolicyRefused as err:
                log.error("policy version %d refused at start-up, trying the version active before it:\n%s",
                          version.version, err)
                self._refused.add((version.version, version.digest))
                continue
            if newest:
                log.error("serving policy version %d, the last good one", version.version)
            self.base = compiled.kb
            return Snapshot(version.version, compiled.kb, compiled.engine, compiled.advisor)
        log.error("no policy version in the database passes; serving the rules/ files")
        return snapshot_of_files(kb)

    # --- what calls take ----------------------------------------------------------------------------
    def current(self) -> Snapshot:
        return self._snapshot

    @property
    def version(self) -> int | None:
        return self._snapshot.version

    # --- taking up a new version ----------------------------------------------------------------------
    def refresh(self) -> bool:
        """Swap in the database's active version if it differs from the one served; True if swapped."""
        if self.store is None:
            return False
        with self._refresh_lock:
            try:
                active = self.store.active()
            except Exception as err:
                if not self._unreachable:      # once per outage, not at every poll
                    log.warning("cannot read the active policy version (%s); still serving version %s",
                                type(err).__name__, self._snapshot.version)
                self._unreachable = True
                return False
            if self._unreachable:
                log.info("policy database reachable again")
                self._unreachable = False
            if active is None or active.version == self._snapshot.version:
                return False
            return self._take_up(active.version)

    def _take_up(self, number: int) -> bool:
        assert self.store is not None
        version = self.store.version(number)
        if (number, version.digest) in self._refused:
            return False
        started = time.perf_counter()
        try:
            compiled = compile_policy(self.base, version.files)
        except (PolicyRefused, KnowledgeError) as err:
            self._refused.add((number, version.digest))
            log.error("policy version %d refused; still serving version %s:\n%s", number, self._snapshot.version, err)
            return False
        old, self._snapshot = self._snapshot, Snapshot(number, compiled.kb, compiled.engine, compiled.advisor)
        self._retire(old)
        log.info("policy version %d active in process %d (was %s; compiled and tested in %.2f s)", number,
                 os.getpid(), old.version, time.perf_counter() - started)
        return True

    def _retire(self, old: Snapshot) -> None:
        now = time.monotonic()
        self._retired.append((now, old))
        keep = []
        for retired_at, snapshot in self._retired:
            if now - retired_at >= RETIRE_AFTER and snapshot.engine is not self._snapshot.engine:
                snapshot.engine.close()
            else:
                keep.append((retired_at, snapshot))
        self._retired = keep

    # --- the watcher thread (one per process) ---------------------------------------------------------
    def ensure_watching(self) -> None:
        """Start this process's watcher if it has none (after a fork the parent's thread is gone)."""
        if self.store is None or self._watcher_pid == os.getpid():
            return
        with self._watch_lock:
            if self._watcher_pid == os.getpid():
                return
            self._watcher_pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._watch, name="cds-policy-watcher", daemon=True).start()

    def after_fork(self) -> None:
        """In a new worker: locks held by the parent's threads at fork stay held, so take fresh ones; catch
        up with the database now, before the first call, then keep watching."""
        self._refresh_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watcher_pid = None
        self.refresh()
        self.ensure_watching()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                log.exception("policy refresh failed; still serving version %s", self._snapshot.version)


def _placeholder(kb: KnowledgeBase) -> Snapshot:
    # replaced before start_up returns; holds the base knowledge meanwhile
    return Snapshot(None, kb, None, None)  # type: ignore[arg-type]


def governed(kb: KnowledgeBase, database_url: str | None) -> tuple[KnowledgeBase, int | None]:
    """The knowledge with the policy the service serves under governance (CDS_POLICY=database, the
    default; the caller decides that), for a face that decides or reports outside the service
    (screening, `cds report`): the database's active version. Returns it and the version (None: the
    rules/ files as loaded). A database without an active version (never served) means the files, which
    become its version 1 the day a service opens it. Database errors propagate: deciding with the files
    while the service serves another version would be a silent disagreement."""
    from cds.store.boundary import database_errors_said
    from cds.store.engine import make_engine
    from cds.store.migrate import current_revision

    engine = make_engine(database_url)
    try:
        with database_errors_said("cannot read the active policy version from the database (CDS_POLICY=files "
                                  "decides with the rules/ files instead)"):
            with engine.connect() as conn:
                if current_revision(conn) is None:
                    return kb, None
            store = PolicyStore(engine)
            active = store.active()
            if active is None:
                return kb, None
            version = store.version(active.version)
    finally:
        engine.dispose()
    if version.digest == files_digest(rules_files(Path(kb.root))):
        return kb, version.version          # the files are that version: keep what was loaded
    return validate_files(kb, version.files), version.version
