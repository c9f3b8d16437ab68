"""The audit and feedback tables (SQLAlchemy 2.x declarative models).

Append-only by use: the store inserts rows and never updates or deletes them. Primary keys are the
ids the service generated (call id, card uuid, feedback id), which makes replaying a spooled write
idempotent. The migration in migrations/versions/ must create exactly these tables; a test compares
the two.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
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


call_table = Call.__table__
card_table = Card.__table__
fact_table = Fact.__table__
feedback_table = Feedback.__table__
screening_run_table = ScreeningRun.__table__
