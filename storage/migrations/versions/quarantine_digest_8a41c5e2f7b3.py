"""Quarantine digests: each account's digest setting and last run

Revision ID: quarantine_digest_8a41c5e2f7b3
Revises: quarantine_3b8f1e6c2d90

``quarantine_digests``: one row per account that changed its digest setting or got a digest (``enabled`` NULL =
its domain's / the server's setting; ``hour`` NULL = the server's hour; ``last_sent`` the time of its last digest).
The digest links' HMAC key is a row of ``server_secrets`` (gateway_srs_9a41c7e2b5d8), made once for the cluster.
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


def downgrade() -> None:
    op.drop_table("quarantine_digests")
