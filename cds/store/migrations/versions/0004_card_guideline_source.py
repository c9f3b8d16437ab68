"""Which guideline source(s) each card rests on: CPIC, DPWG or both ("CPIC+DPWG").

Cards written before this revision (0004) rested on CPIC alone (the only source then encoded); they keep NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cds_card") as batch:
        batch.add_column(sa.Column("source", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cds_card") as batch:
        batch.drop_column("source")
