"""Audit trail (calls, cards, facts) and CDS Hooks feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cds_call",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(100), nullable=False),
        sa.Column("hook_instance", sa.String(200), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=True),
        sa.Column("kb_version", sa.String(128), nullable=False),
        sa.Column("consent", sa.String(64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("unresolved_drugs", sa.JSON(), nullable=False),
        sa.Column("fhir_errors", sa.JSON(), nullable=False),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_cds_call_patient_hash", "cds_call", ["patient_hash"])
    op.create_index("ix_cds_call_recorded_at", "cds_call", ["recorded_at"])

    op.create_table(
        "cds_card",
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("guideline_id", sa.String(200), nullable=True),
        sa.Column("guideline_version", sa.String(100), nullable=True),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["cds_call.call_id"]),
        sa.PrimaryKeyConstraint("card_uuid"),
    )
    op.create_index("ix_cds_card_call_id", "cds_card", ["call_id"])
    op.create_index("ix_cds_card_rule_id", "cds_card", ["rule_id"])

    op.create_table(
        "cds_fact",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("gene", sa.String(64), nullable=False),
        sa.Column("phenotype", sa.String(200), nullable=True),
        sa.Column("lookup_key", sa.String(200), nullable=True),
        sa.Column("source_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["cds_call.call_id"]),
        sa.PrimaryKeyConstraint("call_id", "position"),
    )

    op.create_table(
        "cds_feedback",
        sa.Column("feedback_id", sa.String(36), nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("reason_system", sa.String(500), nullable=True),
        sa.Column("reason_code", sa.String(200), nullable=True),
        sa.Column("reason_display", sa.String(500), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["card_uuid"], ["cds_card.card_uuid"]),
        sa.PrimaryKeyConstraint("feedback_id"),
    )
    op.create_index("ix_cds_feedback_card_outcome_at", "cds_feedback", ["card_uuid", "outcome_at"])


def downgrade() -> None:
    op.drop_table("cds_feedback")
    op.drop_table("cds_fact")
    op.drop_table("cds_card")
    op.drop_table("cds_call")
