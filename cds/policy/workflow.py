"""The steps of a policy change, each checked and recorded with who did it:

    propose   an author replaces some rules/*.yaml files; refused (file:line) unless every file
              validates and every rule's test cases pass; a reason is required
    approve   an approver other than the author signs it off, with a comment; it is checked again
              against the knowledge of the day and becomes active at once or at a stated time
    reject    an approver turns it down, with a comment
    rollback  an approver makes an earlier active version active again, with a reason

The command line (`cds policy`) and the workbench call these same functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cds.errors import CdsError
from cds.knowledge.loader import KnowledgeBase, load_knowledge, rules_files
from cds.policy.accounts import AccessDenied, Account, Accounts
from cds.policy.review import compile_policy
from cds.policy.store import ACTIVATE, PolicyStore, PolicyVersion, utcnow


@dataclass
class Governance:
    store: PolicyStore
    accounts: Accounts
    base: KnowledgeBase          # the knowledge (guidelines, genes, hooks) policies are checked against

    @classmethod
    def open(cls, database_url: str | None = None, knowledge_dir: Path | None = None,
             base: KnowledgeBase | None = None, *, cache_dir: Path | None = None) -> Governance:
        """Connect (DATABASE_URL), migrate, and make the repository's rules/ version 1 of a new database."""
        from cds.store import migrate
        from cds.store.engine import make_engine

        engine = make_engine(database_url)
        migrate.upgrade(engine)
        base = base or load_knowledge(knowledge_dir, cache_dir=cache_dir)
        store = PolicyStore(engine)
        store.seed(rules_files(Path(base.root)))
        return cls(store, Accounts(engine, store), base)

    def close(self) -> None:
        self.store.engine.dispose()

    # --- reading ------------------------------------------------------------------------------------
    def active(self) -> PolicyVersion:
        active = self.store.active()
        if active is None:
            raise CdsError("no policy version is active in this database")
        return self.store.version(active.version)

    # --- steps --------------------------------------------------------------------------------------
    def propose(self, changed: dict[str, str], author: str, reason: str) -> int:
        """A new version: the active policy with `changed` files replaced (or added). Returns its number."""
        self.accounts.require(author, "author")
        reason = _required(reason, "a reason")
        active = self.active()
        files = {**active.files, **changed}
        if files == active.files:
            raise CdsError(f"the proposal changes nothing: it is the active version {active.version}")
        compile_policy(self.base, files).engine.close()     # PolicyRefused, with file:line, if it fails
        return self.store.add_version(files, author, reason, base_version=active.version)

    def approve(self, number: int, approver: str, comment: str | None = None,
                activate_at: datetime | None = None) -> PolicyVersion:
        account = self.accounts.require(approver, "approver")
        version = self._open_proposal(number, account, "approve")
        compile_policy(self.base, version.files).engine.close()   # the knowledge may have moved on since
        now = utcnow()
        effective = activate_at if activate_at is not None and activate_at > now else now
        self.store.record_many([
            {"actor": approver, "action": "approve", "policy_version": number, "comment": comment},
            {"actor": approver, "action": ACTIVATE, "policy_version": number, "effective_at": effective,
             "comment": comment},
        ])
        return self.store.version(number)

    def reject(self, number: int, approver: str, comment: str) -> PolicyVersion:
        account = self.accounts.require(approver, "approver")
        self._open_proposal(number, account, "reject")
        self.store.record(approver, "reject", number, comment=_required(comment, "a comment"))
        return self.store.version(number)

    def rollback(self, by: str, reason: str, to: int | None = None) -> int:
        """Make an earlier active version active again (default: the one active before the current).
        Returns its number."""
        self.accounts.require(by, "approver")
        reason = _required(reason, "a reason")
        activations = self.store.activations()
        if not activations:
            raise CdsError("no policy version has been active yet")
        current = activations[0].version
        was_active = [a.version for a in activations]
        if to is None:
            to = next((v for v in was_active if v != current), None)
            if to is None:
                raise CdsError(f"version {current} is the only version that has been active; nothing to roll back to")
        if to == current:
            raise CdsError(f"version {to} is the active version already")
        if to not in was_active:
            raise CdsError(f"version {to} was never active; only an approved version that took effect can be "
                           "rolled back to")
        compile_policy(self.base, self.store.version(to).files).engine.close()
        self.store.record_many([
            {"actor": by, "action": "rollback", "policy_version": to, "comment": reason},
            {"actor": by, "action": ACTIVATE, "policy_version": to, "effective_at": utcnow(), "comment": reason},
        ])
        return to

    def _open_proposal(self, number: int, account: Account, action: str) -> PolicyVersion:
        version = self.store.version(number)
        if version.status != "proposed":
            raise CdsError(f"version {number} is {version.status} already; only a proposal can be decided")
        if version.author == account.username:
            raise AccessDenied(f"{account.username} proposed version {number} and cannot {action} it: "
                               "another approver must")
        return version

    def export(self, directory: Path) -> tuple[int, list[Path]]:
        """Write the active version's files under `directory` (its rules/ folder), for a git commit."""
        active = self.active()
        written = []
        for name, text in sorted(active.files.items()):
            target = Path(directory) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(target)
        return active.version, written


def _required(text: str | None, what: str) -> str:
    if not text or not text.strip():
        raise CdsError(f"{what} is required")
    return text.strip()


def impact(governance: Governance, number: int, patients: int | None = None):
    """The proposal's impact against the active policy (cds.policy.impact), over the usual cohort."""
    from cds.policy.impact import DEFAULT_PATIENTS, cohort_for, compare

    proposed = governance.store.version(number)
    active = governance.active()
    before = compile_policy(governance.base, active.files)
    try:
        after = compile_policy(governance.base, proposed.files)
    except Exception:
        before.engine.close()
        raise
    try:
        name, cohort = cohort_for(governance.base, governance.store.engine, patients or DEFAULT_PATIENTS)
        return compare(before.advisor, after.advisor, cohort, name), active.version
    finally:
        before.engine.close()
        after.engine.close()
