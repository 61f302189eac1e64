"""Gateway mode: the callout cache (a relay host's answers to RCPT probes, per address, until they expire)

Revision ID: callout_9a41c7e2b5d8
Revises: 0001

A branch off 0001 (storage/migrate.py upgrades to every head).
"""
import sqlalchemy as sa
from alembic import op

revision = "callout_9a41c7e2b5d8"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callout_cache",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index("ix_callout_cache_expires", "callout_cache", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_callout_cache_expires", table_name="callout_cache")
    op.drop_table("callout_cache")
