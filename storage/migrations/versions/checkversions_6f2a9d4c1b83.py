"""Versions of the per-account data the inbound checks cache (sender rules, correspondents, training)

Revision ID: checkversions_6f2a9d4c1b83
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "checkversions_6f2a9d4c1b83"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "check_versions",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("rules", sa.BigInteger(), nullable=False),
        sa.Column("senders", sa.BigInteger(), nullable=False),
        sa.Column("training", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id"),
    )
    # "No row" means "that data never changed": an account that exists now may have rules, correspondents or
    # training already, so every one gets a row (version 1; a cache starts empty in any case).
    op.execute("INSERT INTO check_versions (account_id, rules, senders, training) SELECT id, 1, 1, 1 FROM accounts")


def downgrade() -> None:
    op.drop_table("check_versions")
