"""Outbound queue: a random public queue id per message, and internal ids that are never reused

Revision ID: 0006_queue_public_id
Revises: 0001

``queue.public_id`` (unique, 16 base32 characters, see storage/queueid.py) is what logs and the CLI show.  On SQLite
``queue`` and ``queue_recipients`` are rebuilt with AUTOINCREMENT, without which SQLite hands the highest deleted
rowid out again; PostgreSQL's serial sequences never did.

SQLite rebuild: the migration runs in one transaction with ``foreign_keys=ON`` (which cannot be switched off inside
a transaction), and dropping ``queue`` would then delete every recipient row by its ON DELETE CASCADE.  So the new
child table is filled first and references the new parent table; the old child and then the old parent are
dropped (no row refers to the old parent any more), and the new tables are renamed, which also renames the reference.
"""
import sqlalchemy as sa
from alembic import op

from storage.queueid import new_queue_id

revision = "0006_queue_public_id"
down_revision = "0001"
branch_labels = None
depends_on = None

QUEUE_COLUMNS = ["id", "sender", "blob_id", "size", "created", "envid", "ret", "smtputf8", "body_8bit", "account_id",
                 "source"]
RECIPIENT_COLUMNS = ["id", "queue_id", "recipient", "domain", "orcpt", "notify", "status", "attempts", "next_attempt",
                     "last_reply", "remote_mta", "route", "delay_warned", "claimed_until"]


def _queue_table(name: str, public_id: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        *([sa.Column("public_id", sa.String(length=16), nullable=False)] if public_id else []),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("envid", sa.String(length=100), nullable=False),
        sa.Column("ret", sa.String(length=8), nullable=False),
        sa.Column("smtputf8", sa.Boolean(), nullable=False),
        sa.Column("body_8bit", sa.Boolean(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=public_id,
    )


def _recipients_table(name: str, parent: str, autoincrement: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("orcpt", sa.String(length=500), nullable=False),
        sa.Column("notify", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.Float(), nullable=False),
        sa.Column("last_reply", sa.Text(), nullable=False),
        sa.Column("remote_mta", sa.String(length=300), nullable=False),
        sa.Column("route", sa.String(length=300), nullable=False),
        sa.Column("delay_warned", sa.Boolean(), nullable=False),
        sa.Column("claimed_until", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["queue_id"], [f"{parent}.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=autoincrement,
    )


def _rebuild_sqlite(public_id: bool) -> None:
    """Rebuild both queue tables, with (upgrade) or without (downgrade) public_id and AUTOINCREMENT."""
    _queue_table("queue_new", public_id)
    cols = ", ".join(QUEUE_COLUMNS)
    if public_id:  # a unique placeholder, replaced by a random id below
        op.execute(f"INSERT INTO queue_new (public_id, {cols}) SELECT printf('%016d', id), {cols} FROM queue")
    else:
        op.execute(f"INSERT INTO queue_new ({cols}) SELECT {cols} FROM queue")
    _recipients_table("queue_recipients_new", "queue_new", public_id)
    cols = ", ".join(RECIPIENT_COLUMNS)
    op.execute(f"INSERT INTO queue_recipients_new ({cols}) SELECT {cols} FROM queue_recipients")
    op.drop_table("queue_recipients")
    op.drop_table("queue")
    op.rename_table("queue_new", "queue")
    op.rename_table("queue_recipients_new", "queue_recipients")
    op.create_index("ix_queue_blob_id", "queue", ["blob_id"], unique=False)
    op.create_index("ix_queue_recipients_due", "queue_recipients", ["status", "next_attempt"], unique=False)
    op.create_index("ix_queue_recipients_queue_id", "queue_recipients", ["queue_id"], unique=False)


def _fill_public_ids() -> None:
    conn = op.get_bind()
    for (qid,) in conn.execute(sa.text("SELECT id FROM queue")).all():
        conn.execute(sa.text("UPDATE queue SET public_id = :p WHERE id = :i"), {"p": new_queue_id(), "i": qid})


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(public_id=True)
    else:
        op.add_column("queue", sa.Column("public_id", sa.String(length=16), nullable=True))
    _fill_public_ids()
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("queue", "public_id", nullable=False)
    op.create_index("ix_queue_public_id", "queue", ["public_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_queue_public_id", table_name="queue")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(public_id=False)
    else:
        op.drop_column("queue", "public_id")
