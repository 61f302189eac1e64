"""Quarantine digests: each account's digest setting and last run, server secrets (the digest links' HMAC key)

Revision ID: quarantine_digest_8a41c5e2f7b3
Revises: quarantine_3b8f1e6c2d90

``quarantine_digests``: one row per account that changed its digest setting or got a digest (``enabled`` NULL =
its domain's / the server's setting; ``hour`` NULL = the server's hour; ``last_sent`` the time of its last digest).
``server_secrets``: named random keys made once and shared by every node of the cluster (a row, not a file, so
PostgreSQL nodes need no shared disk).
"""
import sqlalchemy as sa
from alembic import op

revision = "quarantine_digest_8a41c5e2f7b3"
down_revision = "quarantine_3b8f1e6c2d90"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine_digests",
        sa.Column("account_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("hour", sa.Integer(), nullable=True),
        sa.Column("last_sent", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_table("quarantine_digests")
