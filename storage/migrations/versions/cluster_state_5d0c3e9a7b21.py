"""Per-cluster state shared by server processes on one database: login failures and \\Recent claims

Revision ID: cluster_state_5d0c3e9a7b21
Revises: 0001

Used by mailserver/clusterstate_pg.py when the database is PostgreSQL (created on SQLite too, where they stay
empty: one process keeps that state in memory).  ``auth_failures`` has one row per failed login per key (a SHA-256 of
"ip:…" or "account:…"); ``imap_recent`` the highest UID of a mailbox any session has claimed as \\Recent.  The POP3
maildrop lock needs no table (advisory locks).
"""
import sqlalchemy as sa
from alembic import op

revision = "cluster_state_5d0c3e9a7b21"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_failures_key_failed_at", "auth_failures", ["key", "failed_at"])
    op.create_index("ix_auth_failures_failed_at", "auth_failures", ["failed_at"])
    op.create_table(
        "imap_recent",
        sa.Column("mailbox_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("uid_validity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id"),
    )


def downgrade() -> None:
    op.drop_table("imap_recent")
    op.drop_index("ix_auth_failures_failed_at", table_name="auth_failures")
    op.drop_index("ix_auth_failures_key_failed_at", table_name="auth_failures")
    op.drop_table("auth_failures")
