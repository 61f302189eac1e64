"""Quarantine: held copies per recipient, sender rules, domain admins, used digest links

Revision ID: quarantine_3b8f1e6c2d90
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "quarantine_3b8f1e6c2d90"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("parsed", sa.Text(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("from_header", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reason_text", sa.Text(), nullable=False),
        sa.Column("facts", sa.Text(), nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("arrived", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("digested", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quarantine_account_id", "quarantine", ["account_id"])
    op.create_index("ix_quarantine_arrived", "quarantine", ["arrived"])
    op.create_index("ix_quarantine_expires", "quarantine", ["expires"])
    op.create_table(
        "quarantine_senders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("rule", sa.String(length=8), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "address"),
    )
    op.create_index("ix_quarantine_senders_account_id", "quarantine_senders", ["account_id"])
    op.create_table(
        "domain_admins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "domain_id"),
    )
    op.create_index("ix_domain_admins_account_id", "domain_admins", ["account_id"])
    op.create_index("ix_domain_admins_domain_id", "domain_admins", ["domain_id"])
    op.create_table(
        "quarantine_tokens",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("used", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quarantine_tokens_expires", "quarantine_tokens", ["expires"])


def downgrade() -> None:
    op.drop_table("quarantine_tokens")
    op.drop_table("domain_admins")
    op.drop_table("quarantine_senders")
    op.drop_table("quarantine")
