"""Forwarding and gateway mode: the server's secrets (the SRS key) and the callout cache

Revision ID: gateway_srs_9a41c7e2b5d8
Revises: 0001

``server_secrets``: keys made once for the whole cluster (``srs``: the SRS hash key, delivery/srs.py), so every node
checks the others' rewritten addresses.  ``callout_cache``: a relay host's answers to our RCPT probes, per address,
until they expire (delivery/callout.py).  A branch off 0001 (storage/migrate.py upgrades to every head).
"""
import sqlalchemy as sa
from alembic import op

revision = "gateway_srs_9a41c7e2b5d8"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
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
    op.drop_table("server_secrets")
