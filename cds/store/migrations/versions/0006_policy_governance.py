"""Governance of the local policy (issue 22): policy versions, events, accounts, sessions.

Policy versions in the database, who did what (proposals, approvals, activations, rollbacks, account
changes, logins), workbench accounts and sessions, single sign-on logins under way; and on each card,
the policy version that worded it. (The first line alone: Alembic logs it as the migration's name.)

Cards written before this revision carry no policy version (NULL): they were worded by the rules/
files the service was started with.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-15
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cds_policy_version",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "cds_governance_event",
        sa.Column("event_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("policy_version", sa.Integer(), sa.ForeignKey("cds_policy_version.version"), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
    )
    op.create_index("ix_cds_governance_event_at", "cds_governance_event", ["at"])
    op.create_index("ix_cds_governance_event_action", "cds_governance_event", ["action"])
    op.create_index("ix_cds_governance_event_policy_version", "cds_governance_event", ["policy_version"])
    op.create_table(
        "cds_account",
        sa.Column("username", sa.String(200), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("oidc_issuer", sa.String(500), nullable=True),
        sa.Column("oidc_subject", sa.String(200), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cds_account_oidc", "cds_account", ["oidc_issuer", "oidc_subject"], unique=True)
    op.create_table(
        "cds_workbench_session",
        sa.Column("sid_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(200), sa.ForeignKey("cds_account.username"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cds_workbench_session_username", "cds_workbench_session", ["username"])
    op.create_index("ix_cds_workbench_session_expires_at", "cds_workbench_session", ["expires_at"])
    op.create_table(
        "cds_oidc_login",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("next_url", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("cds_card") as batch:
        batch.add_column(sa.Column("policy_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cds_card") as batch:
        batch.drop_column("policy_version")
    op.drop_table("cds_oidc_login")
    op.drop_table("cds_workbench_session")
    op.drop_table("cds_account")
    op.drop_table("cds_governance_event")
    op.drop_table("cds_policy_version")
