"""Outbound queue operations over the ``queue`` and ``queue_recipients`` tables (blocking; run in db pools).

Work is claimed per recipient row with a lease (``claimed_until``):

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` picks due rows no other process is claiming at this moment, and the
  lease written in the same transaction keeps them away from every other process until it expires.  Several server
  processes can share one database.
* SQLite: one writer at a time (``BEGIN IMMEDIATE``) makes the select-and-lease atomic; one process runs the queue (the
  only one, or the worker holding the cluster's maintenance lease, mailserver/leases.py), so when it starts it
  releases every lease left by a crashed run (:meth:`QueueStore.release_all`).

Recipient states: ``pending`` (never tried), ``deferred`` (tried, next attempt at ``next_attempt``), ``bounce`` (an
administrator asked for a bounce; the runner fails it with a report), ``delivered`` and ``failed`` (final).  When no
recipient of a message is left open the message row goes and its blob reference is dropped (``blobs.refcount``).

Messages are named by their public queue id (``queue.public_id``, storage/queueid.py) in the administration methods,
as in the logs; the integer keys are internal and never reused (AUTOINCREMENT on SQLite), so a runner still holding
the rows of a message an administrator deleted can never update another message's rows.

The module's functions work over an open transaction (``Store.transaction()``); :class:`QueueStore` is their facade,
one transaction per method, for the queue runner and the CLI.  Messages enter with :func:`enqueue`
(``Store.enqueue``), which holds a reference to the body (``storage.blobrefs``) until the entry goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from storage import blobrefs
from storage.blobs import BlobRef
from storage.errors import Invalid
from storage.models import Blob, QueuedMessage, QueueRecipient
from storage.queueid import new_queue_id
from storage.records import QueueRecipientSpec
from storage.sql import chunks, on_sqlite

if TYPE_CHECKING:
    from storage.store import Store

Q = QueuedMessage.__table__
R = QueueRecipient.__table__
B = Blob.__table__

OPEN_STATES = ("pending", "deferred", "bounce")
FINAL_STATES = ("delivered", "failed")


@dataclass(frozen=True)
class QueuedInfo:
    id: int  # internal key (queue_recipients.queue_id); never shown
    public_id: str  # the queue id of logs and the CLI (storage/queueid.py)
    sender: str
    blob_id: str
    size: int
    created: float
    envid: str
    ret: str
    smtputf8: bool
    body_8bit: bool
    account_id: int | None
    source: str


@dataclass(frozen=True)
class RecipientRow:
    id: int
    queue_id: int
    recipient: str
    domain: str
    orcpt: str
    notify: str
    status: str
    attempts: int
    next_attempt: float
    last_reply: str
    remote_mta: str
    route: str
    delay_warned: bool
    claimed_until: float


@dataclass(frozen=True)
class WorkItem:
    """Recipients of one message, one domain and one route: one SMTP transaction."""

    message: QueuedInfo
    recipients: tuple[RecipientRow, ...]

    @property
    def domain(self) -> str:
        return self.recipients[0].domain

    @property
    def route(self) -> str:
        return self.recipients[0].route


@dataclass(frozen=True)
class Outcome:
    recipient_id: int
    status: str  # delivered | deferred | failed
    reply: str
    remote_mta: str = ""
    next_attempt: float = 0.0
    delay_warned: bool | None = None  # set when a delay report was sent now


@dataclass(frozen=True)
class QueueSummary:
    message: QueuedInfo
    recipients: tuple[RecipientRow, ...]


def _info(row) -> QueuedInfo:
    return QueuedInfo(row.id, row.public_id, row.sender, row.blob_id, row.size, row.created, row.envid, row.ret, bool(row.smtputf8),
                      bool(row.body_8bit), row.account_id, row.source)


def _rcpt(row) -> RecipientRow:
    return RecipientRow(row.id, row.queue_id, row.recipient, row.domain, row.orcpt, row.notify, row.status,
                        row.attempts, row.next_attempt, row.last_reply, row.remote_mta, row.route,
                        bool(row.delay_warned), row.claimed_until)


# ----------------------------------------------------------------------------------------- entering


def enqueue(conn: Connection, sender: str, blob: BlobRef, recipients: Sequence[QueueRecipientSpec], *,
            envid: str = "", ret: str = "", smtputf8: bool = False, body_8bit: bool = False,
            account_id: int | None = None, source: str = "submission", next_attempt: float | None = None,
            queue_id: str | None = None) -> str:
    """Put a message into the durable outbound queue; returns its public queue id (storage/queueid.py).

    ``queue_id`` is the id the message got when it was taken in (SMTP), so one id follows it from the SMTP log
    line and its Received field to the delivery log lines; a new one is made if none is given.  The caller made
    ``blob`` durable first.
    """
    if not recipients:
        raise Invalid("no recipients")
    public_id = queue_id or new_queue_id()
    now = time.time()
    blobrefs.ref(conn, blob)
    qid = conn.execute(insert(Q).values(
        public_id=public_id, sender=sender, blob_id=blob.id, size=blob.size, created=now, envid=envid, ret=ret,
        smtputf8=smtputf8, body_8bit=body_8bit, account_id=account_id, source=source)).inserted_primary_key[0]
    conn.execute(insert(R), [
        {"queue_id": qid, "recipient": r.recipient, "domain": r.recipient.rsplit("@", 1)[-1].lower(),
         "orcpt": r.orcpt, "notify": r.notify, "status": "pending", "attempts": 0,
         "next_attempt": next_attempt if next_attempt is not None else now, "last_reply": "",
         "remote_mta": "", "route": r.route, "delay_warned": False, "claimed_until": 0.0}
        for r in recipients])
    return public_id


# ----------------------------------------------------------------------------------------- claiming


def claim(conn: Connection, now: float, lease: float, limit: int, per_item: int = 100,
          skip_domains: Sequence[str] = ()) -> list[WorkItem]:
    """Lease up to ``limit`` due recipient rows and return them grouped into work items."""
    q = (select(R.c.id).where(R.c.status.in_(OPEN_STATES), R.c.next_attempt <= now, R.c.claimed_until <= now)
         .order_by(R.c.next_attempt, R.c.queue_id, R.c.domain).limit(limit))
    if skip_domains:
        q = q.where(R.c.domain.not_in(list(skip_domains)))
    if not on_sqlite(conn):
        q = q.with_for_update(skip_locked=True)
    ids = [r[0] for r in conn.execute(q)]
    if not ids:
        return []
    rows = []
    for chunk in chunks(ids):
        conn.execute(update(R).where(R.c.id.in_(chunk)).values(claimed_until=now + lease))
        rows.extend(conn.execute(select(R).where(R.c.id.in_(chunk))).all())
    qids = sorted({r.queue_id for r in rows})
    messages = {}
    for chunk in chunks(qids):
        for m in conn.execute(select(Q).where(Q.c.id.in_(chunk))):
            messages[m.id] = _info(m)
    groups: dict[tuple[int, str, str], list[RecipientRow]] = {}
    for r in sorted(rows, key=lambda r: r.id):
        groups.setdefault((r.queue_id, r.domain, r.route), []).append(_rcpt(r))
    items = []
    for (qid, _, _), rcpts in groups.items():
        for i in range(0, len(rcpts), max(1, per_item)):
            items.append(WorkItem(messages[qid], tuple(rcpts[i:i + per_item])))
    return items


def renew(conn: Connection, ids: Sequence[int], until: float) -> None:
    """Extend the claim on ``ids``; a claim already given back (its attempt recorded, or released) stays given back.

    The runner renews what it holds in memory, and the attempt's result may be committed between that list being
    taken and this statement: re-claiming such a row would hide its next attempt until the new lease ran out.
    """
    for chunk in chunks(list(ids)):
        conn.execute(update(R).where(R.c.id.in_(chunk), R.c.status.in_(OPEN_STATES), R.c.claimed_until > 0)
                     .values(claimed_until=until))


def release(conn: Connection, ids: Sequence[int]) -> None:
    """Give back the claim on ``ids`` (unstarted or failed work): they are due again at their next attempt."""
    for chunk in chunks(list(ids)):
        conn.execute(update(R).where(R.c.id.in_(chunk), R.c.status.in_(OPEN_STATES)).values(claimed_until=0.0))


def release_all(conn: Connection) -> int:
    """Clear every lease (SQLite start-up: only this process runs the queue)."""
    return conn.execute(update(R).where(R.c.claimed_until > 0).values(claimed_until=0.0)).rowcount


def next_due(conn: Connection) -> float | None:
    """When the next open recipient can be claimed (its next attempt, or the end of its lease); None = none."""
    due = case((R.c.claimed_until > R.c.next_attempt, R.c.claimed_until), else_=R.c.next_attempt)
    return conn.execute(select(func.min(due)).where(R.c.status.in_(OPEN_STATES))).scalar()


@dataclass(frozen=True)
class QueueStats:
    """The outbound queue at a glance (metrics): open recipients, their messages, the oldest one's enqueue time."""

    recipients: int
    messages: int
    oldest: float | None  # ``created`` of the oldest message with an open recipient; None = empty


def stats(conn: Connection) -> QueueStats:
    row = conn.execute(select(func.count(), func.count(func.distinct(R.c.queue_id)), func.min(Q.c.created))
                       .select_from(R.join(Q, Q.c.id == R.c.queue_id))
                       .where(R.c.status.in_(OPEN_STATES))).one()
    return QueueStats(row[0] or 0, row[1] or 0, row[2])


# ----------------------------------------------------------------------------------------- results


def record(conn: Connection, outcomes: Sequence[Outcome]) -> list[int]:
    """Store attempt results; remove messages with no open recipient left.  Returns their queue ids."""
    qids = set()
    for o in outcomes:
        values = dict(status=o.status, last_reply=o.reply[:4000], remote_mta=o.remote_mta[:300],
                      next_attempt=o.next_attempt, claimed_until=0.0, attempts=R.c.attempts + 1)
        if o.delay_warned is not None:
            values["delay_warned"] = o.delay_warned
        conn.execute(update(R).where(R.c.id == o.recipient_id).values(**values))
        qid = conn.execute(select(R.c.queue_id).where(R.c.id == o.recipient_id)).scalar()
        if qid is not None:
            qids.add(qid)
    return _finish_done(conn, sorted(qids))


def mark_delay_warned(conn: Connection, ids: Sequence[int]) -> None:
    for chunk in chunks(list(ids)):
        conn.execute(update(R).where(R.c.id.in_(chunk)).values(delay_warned=True))


def _finish_done(conn: Connection, qids: Sequence[int]) -> list[int]:
    done = []
    for qid in qids:
        open_n = conn.execute(select(func.count()).select_from(R).where(
            R.c.queue_id == qid, R.c.status.in_(OPEN_STATES))).scalar()
        if open_n == 0:
            _remove(conn, qid)
            done.append(qid)
    return done


def _remove(conn: Connection, qid: int) -> bool:
    blob_id = conn.execute(select(Q.c.blob_id).where(Q.c.id == qid)).scalar()
    if blob_id is None:
        return False
    conn.execute(delete(R).where(R.c.queue_id == qid))
    conn.execute(delete(Q).where(Q.c.id == qid))
    # The queue entry's reference to the body goes (enqueue took it).
    blobrefs.unref(conn, {blob_id: 1})
    return True


# ----------------------------------------------------------------------------------------- administration


def _key(conn: Connection, public_id: str) -> int | None:
    return conn.execute(select(Q.c.id).where(Q.c.public_id == public_id)).scalar()


def get(conn: Connection, public_id: str) -> QueueSummary | None:
    m = conn.execute(select(Q).where(Q.c.public_id == public_id)).first()
    if m is None:
        return None
    rows = conn.execute(select(R).where(R.c.queue_id == m.id).order_by(R.c.id)).all()
    return QueueSummary(_info(m), tuple(_rcpt(r) for r in rows))


def list_all(conn: Connection) -> list[QueueSummary]:
    msgs = conn.execute(select(Q).order_by(Q.c.id)).all()
    rows = conn.execute(select(R).order_by(R.c.queue_id, R.c.id)).all()
    by_q: dict[int, list[RecipientRow]] = {}
    for r in rows:
        by_q.setdefault(r.queue_id, []).append(_rcpt(r))
    return [QueueSummary(_info(m), tuple(by_q.get(m.id, ()))) for m in msgs]


def retry(conn: Connection, public_id: str | None = None) -> int:
    """Make open recipients (of ``public_id``, or all) due now; returns how many."""
    q = update(R).where(R.c.status.in_(("pending", "deferred"))).values(next_attempt=0.0)
    if public_id is not None:
        qid = _key(conn, public_id)
        if qid is None:
            return 0
        q = q.where(R.c.queue_id == qid)
    return conn.execute(q).rowcount


def remove(conn: Connection, public_id: str) -> bool:
    """Remove a message from the queue without any report."""
    qid = _key(conn, public_id)
    return qid is not None and _remove(conn, qid)


def bounce(conn: Connection, public_id: str) -> int:
    """Ask the runner to fail the open recipients of ``public_id`` with a report to the sender; returns how many."""
    qid = _key(conn, public_id)
    if qid is None:
        return 0
    return conn.execute(update(R).where(R.c.queue_id == qid, R.c.status.in_(("pending", "deferred")))
                        .values(status="bounce", next_attempt=0.0)).rowcount


# ----------------------------------------------------------------------------------------- facade


class QueueStore:
    """The queue's operations, each one transaction of ``store`` (blocking: run them in the database pools)."""

    def __init__(self, store: "Store"):
        self.store = store

    def claim(self, now: float, lease: float, limit: int, per_item: int = 100,
              skip_domains: Sequence[str] = ()) -> list[WorkItem]:
        with self.store.transaction() as conn:
            return claim(conn, now, lease, limit, per_item, skip_domains)

    def renew(self, ids: Sequence[int], until: float) -> None:
        with self.store.transaction() as conn:
            renew(conn, ids, until)

    def release(self, ids: Sequence[int]) -> None:
        with self.store.transaction() as conn:
            release(conn, ids)

    def release_all(self) -> int:
        with self.store.transaction() as conn:
            return release_all(conn)

    def next_due(self) -> float | None:
        with self.store.transaction(write=False) as conn:
            return next_due(conn)

    def stats(self) -> QueueStats:
        with self.store.transaction(write=False) as conn:
            return stats(conn)

    def record(self, outcomes: Sequence[Outcome]) -> list[int]:
        if not outcomes:
            return []
        with self.store.transaction() as conn:
            return record(conn, outcomes)

    def mark_delay_warned(self, ids: Sequence[int]) -> None:
        with self.store.transaction() as conn:
            mark_delay_warned(conn, ids)

    def get(self, public_id: str) -> QueueSummary | None:
        with self.store.transaction(write=False) as conn:
            return get(conn, public_id)

    def list(self) -> list[QueueSummary]:
        with self.store.transaction(write=False) as conn:
            return list_all(conn)

    def retry(self, public_id: str | None = None) -> int:
        with self.store.transaction() as conn:
            return retry(conn, public_id)

    def delete(self, public_id: str) -> bool:
        with self.store.transaction() as conn:
            return remove(conn, public_id)

    def bounce(self, public_id: str) -> int:
        with self.store.transaction() as conn:
            return bounce(conn, public_id)

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        return self.store.blobs.read(blob_id, start, end)
