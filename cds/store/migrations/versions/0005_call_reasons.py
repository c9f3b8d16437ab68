"""Audit why results and orders on file were not used (cds_call.reasons).

A genomic result that could not be read, another patient's Observation, an order for another patient:
each leaves a reason in the call's audit record, so no silence goes uncounted (issue 10).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cds_call") as batch:
        batch.add_column(sa.Column("reasons", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("cds_call") as batch:
        batch.drop_column("reasons")
