"""Free-text columns for the guideline version, phenotype and lookup key.

A guideline's `version` names every source release it encodes and runs past 100 characters;
PostgreSQL refused such cards (SQLite ignores declared lengths, so only the PostgreSQL run showed it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cds_card") as batch:
        batch.alter_column("guideline_version", type_=sa.Text(), existing_type=sa.String(100), existing_nullable=True)
    with op.batch_alter_table("cds_fact") as batch:
        batch.alter_column("phenotype", type_=sa.Text(), existing_type=sa.String(200), existing_nullable=True)
        batch.alter_column("lookup_key", type_=sa.Text(), existing_type=sa.String(200), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("cds_fact") as batch:
        batch.alter_column("lookup_key", type_=sa.String(200), existing_type=sa.Text(), existing_nullable=True)
        batch.alter_column("phenotype", type_=sa.String(200), existing_type=sa.Text(), existing_nullable=True)
    with op.batch_alter_table("cds_card") as batch:
        batch.alter_column("guideline_version", type_=sa.String(100), existing_type=sa.Text(), existing_nullable=True)
