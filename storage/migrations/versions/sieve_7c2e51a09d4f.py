"""Sieve: scripts (per account, and a domain's global ones), vacation replies sent, duplicate ids seen

Revision ID: sieve_7c2e51a09d4f
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "sieve_7c2e51a09d4f"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sieve_scripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "owner_id", "name"),
    )
    op.create_index("ix_sieve_scripts_owner_id", "sieve_scripts", ["owner_id"])
    op.create_table(
        "sieve_vacation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("handle", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("replied_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "handle", "sender"),
    )
    op.create_index("ix_sieve_vacation_account_id", "sieve_vacation", ["account_id"])
    op.create_table(
        "sieve_duplicates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "key"),
    )
    op.create_index("ix_sieve_duplicates_account_id", "sieve_duplicates", ["account_id"])


def downgrade() -> None:
    op.drop_table("sieve_duplicates")
    op.drop_table("sieve_vacation")
    op.drop_index("ix_sieve_scripts_owner_id", table_name="sieve_scripts")
    op.drop_table("sieve_scripts")
