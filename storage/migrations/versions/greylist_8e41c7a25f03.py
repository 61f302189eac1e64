"""Greylisting: triplets and client networks, shared by every node on the database

Revision ID: greylist_8e41c7a25f03
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "greylist_8e41c7a25f03"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "greylist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("passed", sa.Float(), nullable=True),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("network", "sender", "recipient"),
    )
    op.create_index("ix_greylist_expires", "greylist", ["expires"])
    op.create_table(
        "greylist_clients",
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("network"),
    )
    op.create_index("ix_greylist_clients_expires", "greylist_clients", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_greylist_clients_expires", table_name="greylist_clients")
    op.drop_table("greylist_clients")
    op.drop_index("ix_greylist_expires", table_name="greylist")
    op.drop_table("greylist")
