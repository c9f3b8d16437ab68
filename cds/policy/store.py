"""Policy versions and the governance log in the database (tables in cds/store/schema.py, migration 0006).

A version holds every rules/*.yaml file as text; it is written once and never changed. What happens to
it — proposed, approved, rejected, activated (now or at a stated time), rolled back to — is an event
with who and when. The active version is the one named by the latest `activate` event whose
`effective_at` has come; every worker asks that of the database every few seconds.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from cds.errors import CdsError
from cds.store.schema import governance_event_table as events
from cds.store.schema import policy_version_table as versions

ACTIVATE = "activate"            # the event that makes a version the active one (at effective_at)
SYSTEM = "repository"            # the actor of version 1, the repository's rules/


def utcnow() -> datetime:
    return datetime.now(UTC)


def files_digest(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\0".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Event:
    event_id: int
    at: datetime
    actor: str
    action: str
    policy_version: int | None
    effective_at: datetime | None
    subject: str | None
    comment: str | None


@dataclass
class PolicyVersion:
    version: int
    base_version: int | None
    files: dict[str, str]
    digest: str
    author: str
    reason: str
    proposed_at: datetime
    events: list[Event] = field(default_factory=list)

    @property
    def status(self) -> str:
        """proposed, approved (scheduled or taken effect), rejected."""
        decided = [e.action for e in self.events if e.action in ("approve", "reject")]
        if not decided:
            return "approved" if any(e.action == ACTIVATE for e in self.events) else "proposed"
        return "approved" if decided[-1] == "approve" else "rejected"

    def event(self, action: str) -> Event | None:
        return next((e for e in reversed(self.events) if e.action == action), None)


@dataclass(frozen=True)
class ActiveVersion:
    version: int
    since: datetime            # when the activation took effect
    event_id: int


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _event(row) -> Event:
    return Event(row.event_id, _aware(row.at), row.actor, row.action, row.policy_version,
                 _aware(row.effective_at) if row.effective_at is not None else None, row.subject, row.comment)


class PolicyStore:
    """Reads and appends policy versions and governance events. Thread-safe (a connection per call)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # --- the active version (every worker, every few seconds) --------------------------------------
    def active(self, now: datetime | None = None) -> ActiveVersion | None:
        with self.engine.connect() as conn:
            return self._active(conn, now or utcnow())

    @staticmethod
    def _active(conn: Connection, now: datetime) -> ActiveVersion | None:
        row = conn.execute(
            select(events.c.policy_version, events.c.effective_at, events.c.event_id)
            .where(events.c.action == ACTIVATE, events.c.effective_at <= now)
            .order_by(events.c.effective_at.desc(), events.c.event_id.desc()).limit(1)).first()
        return ActiveVersion(row.policy_version, _aware(row.effective_at), row.event_id) if row else None

    def activations(self, now: datetime | None = None) -> list[ActiveVersion]:
        """Every activation that has taken effect, newest first (the last good version is among them)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events.c.policy_version, events.c.effective_at, events.c.event_id)
                .where(events.c.action == ACTIVATE, events.c.effective_at <= (now or utcnow()))
                .order_by(events.c.effective_at.desc(), events.c.event_id.desc()))
            return [ActiveVersion(r.policy_version, _aware(r.effective_at), r.event_id) for r in rows]

    # --- versions ---------------------------------------------------------------------------------
    def version(self, number: int) -> PolicyVersion:
        with self.engine.connect() as conn:
            row = conn.execute(select(versions).where(versions.c.version == number)).first()
            if row is None:
                raise CdsError(f"there is no policy version {number} (see `cds policy history`)")
            found = self._version(row)
            found.events = [_event(e) for e in conn.execute(
                select(events).where(events.c.policy_version == number).order_by(events.c.event_id))]
        return found

    @staticmethod
    def _version(row) -> PolicyVersion:
        return PolicyVersion(row.version, row.base_version, dict(row.files), row.digest, row.author, row.reason,
                             _aware(row.proposed_at))

    def history(self) -> list[PolicyVersion]:
        """Every version, newest first, with its events."""
        with self.engine.connect() as conn:
            found = {row.version: self._version(row)
                     for row in conn.execute(select(versions).order_by(versions.c.version.desc()))}
            for row in conn.execute(select(events).where(events.c.policy_version.is_not(None))
                                    .order_by(events.c.event_id)):
                if row.policy_version in found:
                    found[row.policy_version].events.append(_event(row))
        return list(found.values())

    def add_version(self, files: dict[str, str], author: str, reason: str, base_version: int | None,
                    action: str = "propose", activate: bool = False) -> int:
        """Write a new version (numbered after the newest) with its first event; `activate`: also make it
        active now (version 1 only). Two writers at once: the second retries with the next number."""
        for _attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    number = (conn.execute(select(func.max(versions.c.version))).scalar() or 0) + 1
                    now = utcnow()
                    conn.execute(insert(versions).values(
                        version=number, base_version=base_version, files=files, digest=files_digest(files),
                        author=author, reason=reason, proposed_at=now))
                    self._append(conn, author, action, number, comment=reason)
                    if activate:
                        self._append(conn, author, ACTIVATE, number, effective_at=now, comment=reason)
                return number
            except IntegrityError:
                continue
        raise CdsError("could not number the new policy version (too many writers at once); try again")

    def seed(self, files: dict[str, str]) -> bool:
        """Make `files` (the repository's rules/) version 1, active, if the database has no version yet."""
        with self.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(versions)).scalar():
                return False
        try:
            with self.engine.begin() as conn:
                now = utcnow()
                reason = "the repository's rules/ at the first start on this database"
                conn.execute(insert(versions).values(version=1, base_version=None, files=files,
                                                     digest=files_digest(files), author=SYSTEM, reason=reason,
                                                     proposed_at=now))
                self._append(conn, SYSTEM, ACTIVATE, 1, effective_at=now, comment=reason)
        except IntegrityError:
            return False          # another process seeded it first
        return True

    # --- events -----------------------------------------------------------------------------------
    def record(self, actor: str, action: str, policy_version: int | None = None, *,
               effective_at: datetime | None = None, subject: str | None = None, comment: str | None = None) -> None:
        with self.engine.begin() as conn:
            self._append(conn, actor, action, policy_version, effective_at=effective_at, subject=subject,
                         comment=comment)

    def record_many(self, entries: list[dict]) -> None:
        """Several events in one transaction (an approval and its activation)."""
        with self.engine.begin() as conn:
            for entry in entries:
                self._append(conn, **entry)

    @staticmethod
    def _append(conn: Connection, actor: str, action: str, policy_version: int | None = None, *,
                effective_at: datetime | None = None, subject: str | None = None, comment: str | None = None) -> None:
        conn.execute(insert(events).values(at=utcnow(), actor=actor, action=action, policy_version=policy_version,
                                           effective_at=effective_at, subject=subject, comment=comment))

    def events(self, limit: int = 200) -> list[Event]:
        with self.engine.connect() as conn:
            return [_event(r) for r in conn.execute(select(events).order_by(events.c.event_id.desc()).limit(limit))]


def diff(old: dict[str, str], new: dict[str, str]) -> str:
    """A unified diff from one version's files to another's (files added, removed, changed)."""
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        out.extend(difflib.unified_diff((before or "").splitlines(keepends=True),
                                        (after or "").splitlines(keepends=True),
                                        fromfile=f"a/{name}" if before is not None else "/dev/null",
                                        tofile=f"b/{name}" if after is not None else "/dev/null"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)
