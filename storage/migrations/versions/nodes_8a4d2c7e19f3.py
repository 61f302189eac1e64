"""Several nodes on one database: DKIM keys, the self-signed TLS certificate and a heartbeat row per process

Revision ID: nodes_8a4d2c7e19f3
Revises: workers_3b8e4f2a1c67

``dkim_keys``: the signing keys of each domain (one row per selector; ``private`` is the PEM of an RSA key or the
base64 Ed25519 seed, as dkimpy takes it), so that every node signs with the same keys (mailserver/delivery/dkim.py).
``tls_certificates``: a certificate and its key by name; the self-signed pair every node serves when ``[tls] cert``
is not set (mailserver/tls.py).  ``cluster_nodes``: one row per running server process, renewed every few seconds,
dead once ``expires`` has passed (mailserver/nodes.py, ``mailserver node list``).
"""
import sqlalchemy as sa
from alembic import op

revision = "nodes_8a4d2c7e19f3"
down_revision = "workers_3b8e4f2a1c67"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("private", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "selector"),
    )
    op.create_table(
        "tls_certificates",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "cluster_nodes",
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("seen", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("listeners", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("holder"),
    )


def downgrade() -> None:
    op.drop_table("cluster_nodes")
    op.drop_table("tls_certificates")
    op.drop_table("dkim_keys")
