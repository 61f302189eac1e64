"""The built-in spam classifier: token counts, totals, trained messages, training jobs, correspondents

Revision ID: bayes_9e4d2c7a1f58
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "bayes_9e4d2c7a1f58"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bayes_tokens",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("spam", sa.Integer(), nullable=False),
        sa.Column("ham", sa.Integer(), nullable=False),
        sa.Column("touched", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "token"),
    )
    op.create_table(
        "bayes_totals",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("spam", sa.Integer(), nullable=False),
        sa.Column("ham", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "bayes_trained",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("klass", sa.String(length=4), nullable=False),
        sa.Column("trained", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "blob_id"),
    )
    op.create_index("ix_bayes_trained_account_id", "bayes_trained", ["account_id"])
    op.create_table(
        "bayes_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("klass", sa.String(length=4), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bayes_jobs_account_id", "bayes_jobs", ["account_id"])
    op.create_table(
        "bayes_senders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "address"),
    )
    op.create_index("ix_bayes_senders_account_id", "bayes_senders", ["account_id"])


def downgrade() -> None:
    op.drop_table("bayes_senders")
    op.drop_table("bayes_jobs")
    op.drop_table("bayes_trained")
    op.drop_table("bayes_totals")
    op.drop_table("bayes_tokens")
