"""Mailbox ids are never reused on SQLite

Revision ID: mailbox_ids_4c9e2b7d1a36
Revises: 0001

Without AUTOINCREMENT, SQLite hands out the highest deleted rowid again: a mailbox deleted and made anew (imaptest
does it before every test) got the id of the old one, and a change event of the old mailbox still on its way to
another worker or node (the worker bus, NOTIFY) was then applied to the new one: a session that had just selected
it was told "the selected mailbox was deleted", or EXISTS for a UID of the old mailbox.  Rebuilding ``mailboxes``
with AUTOINCREMENT would cascade into every table that refers to it, so instead ``id_high_water`` keeps the
highest id ever given per table (``storage/mailboxes.py`` takes the next one from it on SQLite); PostgreSQL's
sequences never reuse an id and leave it empty.
"""
import sqlalchemy as sa
from alembic import op

revision = "mailbox_ids_4c9e2b7d1a36"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "id_high_water",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("INSERT INTO id_high_water (name, value) SELECT 'mailboxes', COALESCE(MAX(id), 0) FROM mailboxes")


def downgrade() -> None:
    op.drop_table("id_high_water")
