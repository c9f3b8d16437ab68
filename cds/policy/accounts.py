"""Workbench accounts, roles and sessions, in the database every worker and replica shares.

Roles, each including the one before: viewer (reads), author (proposes policy changes), approver
(approves or rejects another's proposal, rolls back), admin (manages accounts). Local passwords are
kept as Argon2id hashes (argon2-cffi, its default parameters: RFC 9106's second recommended option),
never in clear and never logged. A session is a random 256-bit id in the cookie, stored as its SHA-256,
with a synchronizer token for the session's forms (CSRF), and an absolute expiry.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from cds.errors import CdsError
from cds.policy.store import PolicyStore, utcnow
from cds.store.schema import account_table as accounts
from cds.store.schema import oidc_login_table as oidc_logins
from cds.store.schema import session_table as sessions

ROLES = ("viewer", "author", "approver", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
MIN_PASSWORD = 12
_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccessDenied(CdsError):
    """The person may not do this (role, self-approval, disabled account)."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    display_name: str | None = None
    disabled: bool = False
    oidc_issuer: str | None = None

    def can(self, role: str) -> bool:
        """Whether the account holds `role` or one above it (and is not disabled)."""
        return not self.disabled and _RANK[self.role] >= _RANK[role]

    @property
    def shown(self) -> str:
        return self.display_name or self.username


@dataclass(frozen=True)
class Session:
    account: Account
    csrf_token: str
    expires_at: datetime


def check_role(role: str) -> str:
    if role not in _RANK:
        raise CdsError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _account(row) -> Account:
    return Account(row.username, row.role, row.display_name, bool(row.disabled), row.oidc_issuer)


class Accounts:
    def __init__(self, engine: Engine, log: PolicyStore):
        self.engine = engine
        self.log = log

    # --- accounts ---------------------------------------------------------------------------------
    def get(self, username: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
        return _account(row) if row else None

    def require(self, username: str, role: str) -> Account:
        """The account, if it exists, is enabled and holds `role`; else AccessDenied naming what is missing."""
        account = self.get(username)
        if account is None:
            raise AccessDenied(f"no account '{username}' (an admin adds it: cds user add {username} --role {role})")
        if account.disabled:
            raise AccessDenied(f"the account '{username}' is disabled")
        if not account.can(role):
            raise AccessDenied(f"'{username}' has the {account.role} role; this needs {role}")
        return account

    def all(self) -> list[Account]:
        with self.engine.connect() as conn:
            return [_account(r) for r in conn.execute(select(accounts).order_by(accounts.c.username))]

    def any(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(accounts.c.username).limit(1)).first() is not None

    def add(self, username: str, role: str, by: str, password: str | None = None, display_name: str | None = None,
            oidc: tuple[str, str | None] | None = None) -> Account:
        if not _USERNAME.match(username):
            raise CdsError(f"user name {username!r}: letters, digits and . _ @ - only, starting with a letter or digit")
        check_role(role)
        password_hash = _hasher.hash(_checked_password(password)) if password is not None else None
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(accounts).values(
                    username=username, role=role, display_name=display_name, password_hash=password_hash,
                    oidc_issuer=oidc[0] if oidc else None, oidc_subject=oidc[1] if oidc else None,
                    disabled=False, created_at=utcnow()))
        except IntegrityError:
            raise CdsError(f"the account '{username}' already exists") from None
        self.log.record(by, "account-add", subject=username, comment=f"role {role}")
        return Account(username, role, display_name)

    def set_role(self, username: str, role: str, by: str) -> None:
        self._change(username, by, "account-role", f"role {check_role(role)}", role=role)

    def set_disabled(self, username: str, disabled: bool, by: str) -> None:
        self._change(username, by, "account-disable" if disabled else "account-enable", None, disabled=disabled)
        if disabled:
            with self.engine.begin() as conn:
                conn.execute(delete(sessions).where(sessions.c.username == username))

    def set_password(self, username: str, password: str, by: str) -> None:
        self._change(username, by, "account-password", None, password_hash=_hasher.hash(_checked_password(password)))
        with self.engine.begin() as conn:   # a new password ends every session opened with the old one
            conn.execute(delete(sessions).where(sessions.c.username == username))

    def _change(self, username: str, by: str, action: str, comment: str | None, **values) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(update(accounts).where(accounts.c.username == username).values(**values)).rowcount
        if not changed:
            raise CdsError(f"no account '{username}'")
        self.log.record(by, action, subject=username, comment=comment)

    def verify_password(self, username: str, password: str) -> Account | None:
        """The account if the password is right (constant work whether or not the name exists)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or not row.password_hash or row.disabled:
            return None
        if _hasher.check_needs_rehash(stored):
            with self.engine.begin() as conn:
                conn.execute(update(accounts).where(accounts.c.username == username)
                             .values(password_hash=_hasher.hash(password)))
        return _account(row)

    def for_oidc(self, issuer: str, subject: str, username: str, role: str | None,
                 display_name: str | None) -> Account | None:
        """The account of a single sign-on identity: found by issuer and subject, else the account an admin
        created for that user name with `--sso` (linked now), else a new one when the provider's claims
        give a role. None: no account and no role — the person is not let in."""
        with self.engine.begin() as conn:
            row = conn.execute(select(accounts).where(accounts.c.oidc_issuer == issuer,
                                                      accounts.c.oidc_subject == subject)).first()
            if row is None:
                row = conn.execute(select(accounts).where(accounts.c.username == username,
                                                          accounts.c.oidc_issuer == issuer,
                                                          accounts.c.oidc_subject.is_(None))).first()
                if row is not None:
                    conn.execute(update(accounts).where(accounts.c.username == username).values(oidc_subject=subject))
            if row is not None and role is not None and role != row.role:
                conn.execute(update(accounts).where(accounts.c.username == row.username).values(role=role))
                return Account(row.username, role, row.display_name, bool(row.disabled), issuer)
        if row is not None:
            return _account(row)
        if role is None:
            return None
        return self.add(username, role, by=f"sso:{issuer}", display_name=display_name, oidc=(issuer, subject))

    # --- sessions ---------------------------------------------------------------------------------
    def open_session(self, account: Account, lifetime: timedelta) -> str:
        """A new session (a new id at every login); returns the id for the cookie."""
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
            conn.execute(insert(sessions).values(sid_hash=_sha(sid), username=account.username,
                                                 csrf_token=secrets.token_urlsafe(32), created_at=now,
                                                 expires_at=now + lifetime))
        self.log.record(account.username, "login")
        return sid

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions, accounts).join(accounts, accounts.c.username == sessions.c.username)
                               .where(sessions.c.sid_hash == _sha(sid))).first()
        if row is None or row.disabled:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        if expires <= utcnow():
            return None
        return Session(_account(row), row.csrf_token, expires)

    def close_session(self, sid: str | None) -> None:
        if not sid:
            return
        with self.engine.begin() as conn:
            row = conn.execute(select(sessions.c.username).where(sessions.c.sid_hash == _sha(sid))).first()
            conn.execute(delete(sessions).where(sessions.c.sid_hash == _sha(sid)))
        if row is not None:
            self.log.record(row.username, "logout")

    # --- single sign-on logins under way ----------------------------------------------------------
    def begin_oidc(self, state: str, nonce: str, code_verifier: str, next_url: str, lifetime: timedelta) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(delete(oidc_logins).where(oidc_logins.c.expires_at <= now))
            conn.execute(insert(oidc_logins).values(state_hash=_sha(state), nonce=nonce, code_verifier=code_verifier,
                                                    next_url=next_url, expires_at=now + lifetime))

    def finish_oidc(self, state: str) -> tuple[str, str, str] | None:
        """(nonce, code_verifier, next_url) of a login under way, used once; None if unknown or expired."""
        with self.engine.begin() as conn:
            row = conn.execute(select(oidc_logins).where(oidc_logins.c.state_hash == _sha(state))).first()
            conn.execute(delete(oidc_logins).where(oidc_logins.c.state_hash == _sha(state)))
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        return (row.nonce, row.code_verifier, row.next_url) if expires > utcnow() else None


def _checked_password(password: str | None) -> str:
    if password is None or len(password) < MIN_PASSWORD:
        raise CdsError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return given is not None and bool(given) and hmac.compare_digest(expected.encode(), given.encode())
