"""Indexes for conversations: messages.thread_id and messages.message_id

Revision ID: 0004
Revises: 0001
"""
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_thread", ["thread_id"], unique=False)
        batch_op.create_index("ix_messages_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_message_id")
        batch_op.drop_index("ix_messages_thread")
