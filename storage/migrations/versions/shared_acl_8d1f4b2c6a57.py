"""Shared mailboxes and RFC 4314 ACLs: grants per mailbox, groups, per-reader \\Seen and \\Recent

Revision ID: shared_acl_8d1f4b2c6a57
Revises: 0001

``accounts.shared_name``: set on a shared mailbox's account (owned by its domain, no person, no login), its name in
the "Shared/" namespace.  ``mailboxes.seen_per_reader``: each reader keeps their own \\Seen in ``reader_seen``.
``mailbox_acl``: rights per identifier (account address, ``anyone``, ``$group``); ``account_groups`` and
``group_members`` for the ``$group`` identifiers.
"""
import sqlalchemy as sa
from alembic import op

revision = "shared_acl_8d1f4b2c6a57"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("shared_name", sa.String(length=200), nullable=True))
        batch.create_unique_constraint("uq_accounts_shared_name", ["shared_name"])
    with op.batch_alter_table("mailboxes") as batch:
        batch.add_column(sa.Column("seen_per_reader", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "mailbox_acl",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=330), nullable=False),
        sa.Column("rights", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "identifier"),
    )
    op.create_index("ix_mailbox_acl_mailbox_id", "mailbox_acl", ["mailbox_id"])
    op.create_index("ix_mailbox_acl_identifier", "mailbox_acl", ["identifier"])
    op.create_table(
        "account_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "group_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["account_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("group_id", "account_id"),
    )
    op.create_index("ix_group_members_group_id", "group_members", ["group_id"])
    op.create_index("ix_group_members_account_id", "group_members", ["account_id"])
    op.create_table(
        "reader_seen",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "account_id", "uid"),
    )
    op.create_index("ix_reader_seen_account_id", "reader_seen", ["account_id"])
    op.create_table(
        "reader_recent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("uid_validity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "account_id"),
    )
    op.create_index("ix_reader_recent_account_id", "reader_recent", ["account_id"])


def downgrade() -> None:
    op.drop_table("reader_recent")
    op.drop_table("reader_seen")
    op.drop_table("group_members")
    op.drop_table("account_groups")
    op.drop_table("mailbox_acl")
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("seen_per_reader")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("uq_accounts_shared_name", type_="unique")
        batch.drop_column("shared_name")
