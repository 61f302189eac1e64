"""Outbound queue operations over the ``queue`` and ``queue_recipients`` tables (blocking; run in db pools).

Work is claimed per recipient row with a lease (``claimed_until``):

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` picks due rows no other process is claiming at this moment, and the
  lease written in the same transaction keeps them away from every other process until it expires.  Several server
  processes can share one database.
* SQLite: one writer at a time (``BEGIN IMMEDIATE``) makes the select-and-lease atomic; one process runs the queue, so
  at start it releases every lease left by a crashed run (:meth:`QueueStore.release_all`).

Recipient states: ``pending`` (never tried), ``deferred`` (tried, next attempt at ``next_attempt``), ``bounce`` (an
administrator asked for a bounce; the runner fails it with a report), ``delivered`` and ``failed`` (final).  When no
recipient of a message is left open the message row goes and its blob reference is dropped (``blobs.refcount``).

Messages are named by their public queue id (``queue.public_id``, storage/queueid.py) in the administration methods,
as in the logs; the integer keys are internal and never reused (AUTOINCREMENT on SQLite), so a runner still holding
the rows of a message an administrator deleted can never update another message's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import case, delete, func, select, update

from storage.models import Blob, QueuedMessage, QueueRecipient
from storage.store import Store

Q = QueuedMessage.__table__
R = QueueRecipient.__table__
B = Blob.__table__

OPEN_STATES = ("pending", "deferred", "bounce")
FINAL_STATES = ("delivered", "failed")
_CHUNK = 500


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


def _chunks(seq: Sequence[int], n: int = _CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class QueueStore:
    def __init__(self, store: Store):
        self.store = store

    # ----------------------------------------------------------------------------------------- claiming

    def claim(self, now: float, lease: float, limit: int, per_item: int = 100,
              skip_domains: Sequence[str] = ()) -> list[WorkItem]:
        """Lease up to ``limit`` due recipient rows and return them grouped into work items (blocking)."""
        with self.store._tx() as conn:
            q = (select(R.c.id).where(R.c.status.in_(OPEN_STATES), R.c.next_attempt <= now,
                                      R.c.claimed_until <= now)
                 .order_by(R.c.next_attempt, R.c.queue_id, R.c.domain).limit(limit))
            if skip_domains:
                q = q.where(R.c.domain.not_in(list(skip_domains)))
            if not self.store.sqlite:
                q = q.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(q)]
            if not ids:
                return []
            rows = []
            for chunk in _chunks(ids):
                conn.execute(update(R).where(R.c.id.in_(chunk)).values(claimed_until=now + lease))
                rows.extend(conn.execute(select(R).where(R.c.id.in_(chunk))).all())
            qids = sorted({r.queue_id for r in rows})
            messages = {}
            for chunk in _chunks(qids):
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

    def renew(self, ids: Sequence[int], until: float) -> None:
        with self.store._tx() as conn:
            for chunk in _chunks(list(ids)):
                conn.execute(update(R).where(R.c.id.in_(chunk), R.c.status.in_(OPEN_STATES))
                             .values(claimed_until=until))

    def release(self, ids: Sequence[int]) -> None:
        self.renew(ids, 0.0)

    def release_all(self) -> int:
        """Clear every lease (SQLite start-up: only this process runs the queue)."""
        with self.store._tx() as conn:
            return conn.execute(update(R).where(R.c.claimed_until > 0).values(claimed_until=0.0)).rowcount

    def next_due(self) -> float | None:
        """When the next open recipient can be claimed (its next attempt, or the end of its lease); None = none."""
        due = case((R.c.claimed_until > R.c.next_attempt, R.c.claimed_until), else_=R.c.next_attempt)
        with self.store._read() as conn:
            return conn.execute(select(func.min(due)).where(R.c.status.in_(OPEN_STATES))).scalar()

    # ----------------------------------------------------------------------------------------- results

    def record(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Store attempt results; remove messages with no open recipient left.  Returns their queue ids."""
        if not outcomes:
            return []
        with self.store._tx() as conn:
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
            return self._finish_done(conn, sorted(qids))

    def mark_delay_warned(self, ids: Sequence[int]) -> None:
        with self.store._tx() as conn:
            for chunk in _chunks(list(ids)):
                conn.execute(update(R).where(R.c.id.in_(chunk)).values(delay_warned=True))

    def _finish_done(self, conn, qids: Sequence[int]) -> list[int]:
        done = []
        for qid in qids:
            open_n = conn.execute(select(func.count()).select_from(R).where(
                R.c.queue_id == qid, R.c.status.in_(OPEN_STATES))).scalar()
            if open_n == 0:
                self._remove(conn, qid)
                done.append(qid)
        return done

    def _remove(self, conn, qid: int) -> bool:
        blob_id = conn.execute(select(Q.c.blob_id).where(Q.c.id == qid)).scalar()
        if blob_id is None:
            return False
        conn.execute(delete(R).where(R.c.queue_id == qid))
        conn.execute(delete(Q).where(Q.c.id == qid))
        # The queue entry's reference to the body goes (storage.store.Store.enqueue took it).
        conn.execute(update(B).where(B.c.id == blob_id).values(refcount=B.c.refcount - 1))
        return True

    # ----------------------------------------------------------------------------------------- administration

    def _key(self, conn, public_id: str) -> int | None:
        return conn.execute(select(Q.c.id).where(Q.c.public_id == public_id)).scalar()

    def get(self, public_id: str) -> QueueSummary | None:
        with self.store._read() as conn:
            m = conn.execute(select(Q).where(Q.c.public_id == public_id)).first()
            if m is None:
                return None
            rows = conn.execute(select(R).where(R.c.queue_id == m.id).order_by(R.c.id)).all()
        return QueueSummary(_info(m), tuple(_rcpt(r) for r in rows))

    def list(self) -> list[QueueSummary]:
        with self.store._read() as conn:
            msgs = conn.execute(select(Q).order_by(Q.c.id)).all()
            rows = conn.execute(select(R).order_by(R.c.queue_id, R.c.id)).all()
        by_q: dict[int, list[RecipientRow]] = {}
        for r in rows:
            by_q.setdefault(r.queue_id, []).append(_rcpt(r))
        return [QueueSummary(_info(m), tuple(by_q.get(m.id, ()))) for m in msgs]

    def retry(self, public_id: str | None = None) -> int:
        """Make open recipients (of ``public_id``, or all) due now; returns how many."""
        with self.store._tx() as conn:
            q = update(R).where(R.c.status.in_(("pending", "deferred"))).values(next_attempt=0.0)
            if public_id is not None:
                qid = self._key(conn, public_id)
                if qid is None:
                    return 0
                q = q.where(R.c.queue_id == qid)
            return conn.execute(q).rowcount

    def delete(self, public_id: str) -> bool:
        """Remove a message from the queue without any report."""
        with self.store._tx() as conn:
            qid = self._key(conn, public_id)
            return qid is not None and self._remove(conn, qid)

    def bounce(self, public_id: str) -> int:
        """Ask the runner to fail the open recipients of ``public_id`` with a report to the sender; returns how many."""
        with self.store._tx() as conn:
            qid = self._key(conn, public_id)
            if qid is None:
                return 0
            return conn.execute(update(R).where(R.c.queue_id == qid, R.c.status.in_(("pending", "deferred")))
                                .values(status="bounce", next_attempt=0.0)).rowcount

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        return self.store.blobs.read(blob_id, start, end)
