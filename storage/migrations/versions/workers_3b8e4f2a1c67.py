"""Worker processes on one database: cluster-wide leases and POP3 maildrop locks held by a process

Revision ID: workers_3b8e4f2a1c67
Revises: cluster_state_5d0c3e9a7b21

``cluster_leases``: one row per job that one process of the whole cluster runs (the queue runner, the blob
collector), naming its holder (``holder`` is unique per process start, ``holder_pid`` lets the supervisor free a dead
worker's rows at once) and when the lease ends unless renewed (mailserver/leases.py).  ``maildrop_locks``: the POP3
maildrop lock (RFC 1939 section 4) across worker processes on SQLite (mailserver/clusterstate_sqlite.py); PostgreSQL
keeps using advisory locks and leaves the table empty.
"""
import sqlalchemy as sa
from alembic import op

revision = "workers_3b8e4f2a1c67"
down_revision = "cluster_state_5d0c3e9a7b21"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "maildrop_locks",
        sa.Column("account_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_maildrop_locks_holder", "maildrop_locks", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_maildrop_locks_holder", table_name="maildrop_locks")
    op.drop_table("maildrop_locks")
    op.drop_table("cluster_leases")
