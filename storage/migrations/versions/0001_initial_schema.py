"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 20:51:54.291202
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('aliases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('target', sa.String(length=320), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address', 'target')
    )
    with op.batch_alter_table('aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliases_address'), ['address'], unique=False)

    op.create_table('blobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('refcount', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('domains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('relay_to', sa.String(length=300), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('domain_id', sa.Integer(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('uid_validity_seq', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address')
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_domain_id'), ['domain_id'], unique=False)

    op.create_table('queue',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sender', sa.String(length=320), nullable=False),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('envid', sa.String(length=100), nullable=False),
    sa.Column('ret', sa.String(length=8), nullable=False),
    sa.Column('smtputf8', sa.Boolean(), nullable=False),
    sa.Column('body_8bit', sa.Boolean(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('queue', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_queue_blob_id'), ['blob_id'], unique=False)

    op.create_table('mailboxes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=1000), nullable=False),
    sa.Column('special_use', sa.String(length=32), nullable=False),
    sa.Column('subscribed', sa.Boolean(), nullable=False),
    sa.Column('uid_validity', sa.BigInteger(), nullable=False),
    sa.Column('uid_next', sa.BigInteger(), nullable=False),
    sa.Column('highest_modseq', sa.BigInteger(), nullable=False),
    sa.Column('keywords', sa.Text(), nullable=False),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('unseen_count', sa.Integer(), nullable=False),
    sa.Column('total_size', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'name')
    )
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mailboxes_account_id'), ['account_id'], unique=False)

    op.create_table('queue_recipients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('queue_id', sa.Integer(), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('orcpt', sa.String(length=500), nullable=False),
    sa.Column('notify', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt', sa.Float(), nullable=False),
    sa.Column('last_reply', sa.Text(), nullable=False),
    sa.Column('remote_mta', sa.String(length=300), nullable=False),
    sa.Column('route', sa.String(length=300), nullable=False),
    sa.Column('delay_warned', sa.Boolean(), nullable=False),
    sa.Column('claimed_until', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['queue_id'], ['queue.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('queue_recipients', schema=None) as batch_op:
        batch_op.create_index('ix_queue_recipients_due', ['status', 'next_attempt'], unique=False)
        batch_op.create_index(batch_op.f('ix_queue_recipients_queue_id'), ['queue_id'], unique=False)

    op.create_table('expunged',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('modseq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.create_index('ix_expunged_mailbox_modseq', ['mailbox_id', 'modseq'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('modseq', sa.BigInteger(), nullable=False),
    sa.Column('flags', sa.Integer(), nullable=False),
    sa.Column('keywords', sa.Text(), nullable=False),
    sa.Column('internal_date', sa.Float(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('envelope', sa.Text(), nullable=False),
    sa.Column('bodystructure', sa.Text(), nullable=False),
    sa.Column('header_size', sa.Integer(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('from_addr', sa.Text(), nullable=False),
    sa.Column('to_addr', sa.Text(), nullable=False),
    sa.Column('cc_addr', sa.Text(), nullable=False),
    sa.Column('date_sent', sa.Float(), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('in_reply_to', sa.Text(), nullable=False),
    sa.Column('references', sa.Text(), nullable=False),
    sa.Column('preview', sa.Text(), nullable=False),
    sa.Column('has_attachment', sa.Boolean(), nullable=False),
    sa.Column('thread_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], ),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('mailbox_id', 'uid')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_blob_id'), ['blob_id'], unique=False)
        batch_op.create_index('ix_messages_mailbox_date', ['mailbox_id', 'internal_date'], unique=False)
        batch_op.create_index('ix_messages_mailbox_modseq', ['mailbox_id', 'modseq'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_mailbox_modseq')
        batch_op.drop_index('ix_messages_mailbox_date')
        batch_op.drop_index(batch_op.f('ix_messages_blob_id'))

    op.drop_table('messages')
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.drop_index('ix_expunged_mailbox_modseq')

    op.drop_table('expunged')
    with op.batch_alter_table('queue_recipients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_queue_recipients_queue_id'))
        batch_op.drop_index('ix_queue_recipients_due')

    op.drop_table('queue_recipients')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mailboxes_account_id'))

    op.drop_table('mailboxes')
    with op.batch_alter_table('queue', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_queue_blob_id'))

    op.drop_table('queue')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_domain_id'))

    op.drop_table('accounts')
    op.drop_table('domains')
    op.drop_table('blobs')
    with op.batch_alter_table('aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aliases_address'))

    op.drop_table('aliases')

