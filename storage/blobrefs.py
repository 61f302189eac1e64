"""Blob reference counts and garbage collection: functions over an open transaction (``Store.transaction()``).

Each message row, each queue entry and each quarantined copy holds one reference to its body in ``blobs.refcount``; the same content
delivered twice is stored once and counted twice.  A blob whose count fell to zero is removed by
:func:`collect` once it is older than a grace period: ``created`` is refreshed on every new reference, so a blob that
is being de-duplicated into a new delivery right now is never collected under it.  The bodies themselves live in the
blob store (storage/blobs.py); a row only ever names a blob that is already durable (``BlobStore.ensure_synced`` runs
before the transaction that adds the reference).
"""

from __future__ import annotations

import time

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from storage.blobs import BlobRef, BlobStore
from storage.models import Blob, Message, QueuedMessage
from storage.models import Quarantined as QuarantineModel
from storage.sql import chunks

B = Blob.__table__
M = Message.__table__
Q = QueuedMessage.__table__


def ref(conn: Connection, blob: BlobRef, n: int = 1) -> None:
    """Count ``n`` more references to ``blob`` (creating its row for the file backend)."""
    res = conn.execute(update(B).where(B.c.id == blob.id).values(refcount=B.c.refcount + n, created=time.time()))
    if res.rowcount == 0:
        conn.execute(insert(B).values(id=blob.id, size=blob.size, refcount=n, data=None, created=time.time()))


# Built once (every COPY, MOVE and EXPUNGE runs them), each run as one executemany over the blobs.
_ADD_REFS = update(B).where(B.c.id == bindparam("blob_id")).values(refcount=B.c.refcount + bindparam("n"))
_DROP_REFS = update(B).where(B.c.id == bindparam("blob_id")).values(refcount=B.c.refcount - bindparam("n"))


def _per_blob(conn: Connection, statement, counts: dict[str, int]) -> None:
    params = [{"blob_id": blob_id, "n": n} for blob_id, n in counts.items()]
    if len(params) == 1:
        conn.execute(statement, params[0])
    elif params:
        conn.execute(statement, params)


def ref_existing(conn: Connection, counts: dict[str, int]) -> None:
    """Count more references to blobs that already have rows (a copy of messages): ``counts`` is id -> n."""
    _per_blob(conn, _ADD_REFS, counts)


def unref(conn: Connection, counts: dict[str, int]) -> None:
    """Drop references: ``counts`` is blob id -> how many."""
    _per_blob(conn, _DROP_REFS, counts)


def unref_selected(conn: Connection, query) -> None:
    """Drop one reference per row of ``query`` (a select of blob ids), e.g. the messages of a mailbox."""
    unref(conn, count(r[0] for r in conn.execute(query)))


def count(blob_ids) -> dict[str, int]:
    counts: dict[str, int] = {}
    for blob_id in blob_ids:
        counts[blob_id] = counts.get(blob_id, 0) + 1
    return counts


def collect(conn: Connection, grace: float) -> list[str]:
    """Delete the rows of blobs nothing references (older than ``grace`` seconds); returns their ids.

    The caller removes the bodies from the blob store after the commit (``BlobStore.remove``)."""
    cutoff = time.time() - grace
    ids = [r.id for r in conn.execute(select(B.c.id).where(B.c.refcount <= 0, B.c.created < cutoff))]
    for chunk in chunks(ids):
        conn.execute(delete(B).where(B.c.id.in_(chunk), B.c.refcount <= 0))
    return ids


def referenced(conn: Connection) -> set[str]:
    """Every blob id a message or a queue entry names."""
    ids = {r[0] for r in conn.execute(select(M.c.blob_id).distinct())}
    ids |= {r[0] for r in conn.execute(select(Q.c.blob_id).distinct())}
    ids |= {r[0] for r in conn.execute(select(QuarantineModel.__table__.c.blob_id).distinct())}
    return ids


def named(conn: Connection, blob_ids: list[str]) -> set[str]:
    """Those of ``blob_ids`` that have a ``blobs`` row or that a message, queue entry or quarantined copy names."""
    found: set[str] = set()
    for chunk in chunks(blob_ids):
        for column in (B.c.id, M.c.blob_id, Q.c.blob_id, QuarantineModel.__table__.c.blob_id):
            found |= {r[0] for r in conn.execute(select(column).where(column.in_(chunk)).distinct())}
    return found


def integrity_problems(blobs: BlobStore, referenced_ids: set[str]) -> list[str]:
    """Referenced blobs the blob store cannot read (used by the durability test)."""
    return [f"missing blob {blob_id}" for blob_id in sorted(referenced_ids) if not blobs.exists(blob_id)]
