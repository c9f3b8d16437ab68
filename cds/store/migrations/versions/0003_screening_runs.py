"""Screening runs: one row per `cds screen` run (counts only, no patient ids).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cds_screening_run",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_by", sa.String(200), nullable=False),
        sa.Column("kb_version", sa.String(128), nullable=False),
        sa.Column("input_digest", sa.String(80), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_cds_screening_run_started_at", "cds_screening_run", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_cds_screening_run_started_at", table_name="cds_screening_run")
    op.drop_table("cds_screening_run")
