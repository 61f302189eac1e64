"""Send grants: an account may send as (or on behalf of) an address that is not its own

Revision ID: sendgrants_9a4d27c1e5b3
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "sendgrants_9a4d27c1e5b3"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "address"),
    )
    op.create_index("ix_send_grants_account_id", "send_grants", ["account_id"])
    op.create_index("ix_send_grants_address", "send_grants", ["address"])


def downgrade() -> None:
    op.drop_table("send_grants")
