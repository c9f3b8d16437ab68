"""The audit and feedback tables (SQLAlchemy 2.x declarative models).

Append-only by use: the store inserts rows and never updates or deletes them. Primary keys are the
ids the service generated (call id, card uuid, feedback id), which makes replaying a spooled write
idempotent. The migration in migrations/versions/ must create exactly these tables; a test compares
the two.
"""
from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Call(Base):
    """One CDS Hooks call: what came in (de-identified), what knowledge answered it, how long it took."""

    __tablename__ = "cds_call"

    call_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # time of the call
    service_id: Mapped[str] = mapped_column(String(200))
    hook: Mapped[str] = mapped_column(String(100))
    hook_instance: Mapped[str | None] = mapped_column(String(200))
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # HMAC-SHA256 hex
    kb_version: Mapped[str] = mapped_column(String(128))
    consent: Mapped[str | None] = mapped_column(String(64))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    unresolved_drugs: Mapped[list] = mapped_column(JSON)
    fhir_errors: Mapped[list] = mapped_column(JSON)
    reasons: Mapped[list] = mapped_column(JSON)        # results and orders not used, and why (migration 0003)
    card_count: Mapped[int] = mapped_column(Integer)


class Card(Base):
    """A card the service returned, with the rule and guideline version behind it."""

    __tablename__ = "cds_card"

    card_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("cds_call.call_id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[str] = mapped_column(String(200), index=True)
    guideline_id: Mapped[str | None] = mapped_column(String(200))
    guideline_version: Mapped[str | None] = mapped_column(Text)  # knowledge YAML `version`: free text
    source: Mapped[str | None] = mapped_column(String(32))       # CPIC, DPWG or CPIC+DPWG; NULL before 0004 (CPIC)
    policy_version: Mapped[int | None] = mapped_column(Integer)  # the local policy version that worded it (0006)
    indicator: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)


class Fact(Base):
    """A genotype fact a call's decision rested on, and the Observations it came from."""

    __tablename__ = "cds_fact"

    call_id: Mapped[str] = mapped_column(ForeignKey("cds_call.call_id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    gene: Mapped[str] = mapped_column(String(64))
    phenotype: Mapped[str | None] = mapped_column(Text)
    lookup_key: Mapped[str | None] = mapped_column(Text)
    source_ids: Mapped[list] = mapped_column(JSON)


class Feedback(Base):
    """One CDS Hooks feedback item as received; a card may get several (the spec allows repeats)."""

    __tablename__ = "cds_feedback"

    feedback_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    card_uuid: Mapped[str] = mapped_column(ForeignKey("cds_card.card_uuid"))
    service_id: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))               # accepted | overridden
    outcome_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # outcomeTimestamp
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_suggestions: Mapped[list] = mapped_column(JSON)       # suggestion uuids
    reason_system: Mapped[str | None] = mapped_column(String(500))
    reason_code: Mapped[str | None] = mapped_column(String(200))
    reason_display: Mapped[str | None] = mapped_column(String(500))
    user_comment: Mapped[str | None] = mapped_column(Text)         # clinician free text; never logged

    __table_args__ = (Index("ix_cds_feedback_card_outcome_at", "card_uuid", "outcome_at"),)


class ScreeningRun(Base):
    """One population screening run (`cds screen`): who ran it, on what data and knowledge, and what
    it found, as counts only (no patient appears here, not even as a pseudonym)."""

    __tablename__ = "cds_screening_run"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_by: Mapped[str] = mapped_column(String(200))
    kb_version: Mapped[str] = mapped_column(String(128))
    input_digest: Mapped[str] = mapped_column(String(80))
    source: Mapped[str | None] = mapped_column(Text)             # input folder or Bulk Data server URL
    engine: Mapped[str] = mapped_column(String(32))
    workers: Mapped[int] = mapped_column(Integer)
    patients: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict] = mapped_column(JSON)                   # the run's summary.json "counts"
    seconds: Mapped[float] = mapped_column(Float)


# Declarative tables are Tables (SQLAlchemy types __table__ as its FromClause base)
call_table = cast(Table, Call.__table__)
card_table = cast(Table, Card.__table__)
fact_table = cast(Table, Fact.__table__)
feedback_table = cast(Table, Feedback.__table__)
screening_run_table = cast(Table, ScreeningRun.__table__)


# --- governance of the local policy (issue 22; cds/policy, migration 0006) -------------------------

class PolicyVersion(Base):
    """One version of the local CDS policy: every rules/*.yaml file as it stands in that version.
    Written once when proposed; what happens to it afterwards is in cds_governance_event."""

    __tablename__ = "cds_policy_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    base_version: Mapped[int | None] = mapped_column(Integer)      # the active version it was proposed against
    files: Mapped[dict] = mapped_column(JSON)                      # rules/NAME.yaml → YAML text
    digest: Mapped[str] = mapped_column(String(64))                # SHA-256 over the files
    author: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GovernanceEvent(Base):
    """Who did what, when: proposals, approvals, rejections, activations, rollbacks, account changes,
    logins. Append-only. The active policy is the version of the latest activating event
    (action `activate`) whose `effective_at` has come."""

    __tablename__ = "cds_governance_event"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32), index=True)
    policy_version: Mapped[int | None] = mapped_column(ForeignKey("cds_policy_version.version"), index=True)
    effective_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    subject: Mapped[str | None] = mapped_column(String(200))       # the account an account event is about
    comment: Mapped[str | None] = mapped_column(Text)


class Account(Base):
    """A workbench user: a local account with an Argon2id password hash, or one signed in through the
    hospital's OpenID Connect provider (issuer and subject)."""

    __tablename__ = "cds_account"

    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))                  # viewer | author | approver | admin
    password_hash: Mapped[str | None] = mapped_column(Text)        # argon2id PHC string; never the password
    oidc_issuer: Mapped[str | None] = mapped_column(String(500))
    oidc_subject: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_cds_account_oidc", "oidc_issuer", "oidc_subject", unique=True),)


class WorkbenchSession(Base):
    """A signed-in workbench session, shared by every worker and replica. The cookie holds a random id;
    only its SHA-256 is stored, so the table alone opens no session."""

    __tablename__ = "cds_workbench_session"

    sid_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("cds_account.username"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))            # the forms' synchronizer token
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class OidcLogin(Base):
    """A single sign-on under way: what the callback must check (state, nonce, PKCE verifier)."""

    __tablename__ = "cds_oidc_login"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_url: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


policy_version_table = cast(Table, PolicyVersion.__table__)
governance_event_table = cast(Table, GovernanceEvent.__table__)
account_table = cast(Table, Account.__table__)
session_table = cast(Table, WorkbenchSession.__table__)
oidc_login_table = cast(Table, OidcLogin.__table__)
