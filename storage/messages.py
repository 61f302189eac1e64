"""Messages: delivery, APPEND, flags, expunge, copy/move and what SELECT and FETCH read.

Functions over an open transaction (``Store.transaction()``).  Invariants kept here (tested in tests/test_store.py):

* UIDs in a mailbox are strictly ascending and never reused: they are reserved with ``UPDATE mailboxes SET uid_next =
  uid_next + n … RETURNING`` under the mailbox row's write lock (``storage.mailboxes.bump`` and ``_SQL_BUMP_ADD``),
  so concurrent deliveries from several threads or processes cannot hand out one UID twice.
* Every change of a mailbox raises its ``highest_modseq``; each changed message carries the new modseq (RFC 7162).
  Messages of one delivery batch in one mailbox share one new modseq.
* Expunged UIDs leave a tombstone (``expunged``) with the modseq of their removal, for QRESYNC VANISHED.
* A mailbox's counters (messages, unseen, size, keywords ever used) and its account's ``used_bytes`` change in the
  same transaction as the messages.
* A message row only ever names a blob that is already durable (the caller ran ``BlobStore.ensure_synced``) and holds
  one reference to it (``storage.blobrefs``).

Every write returns :class:`~storage.records.Changed` with the change events it caused.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Iterable, Sequence

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from storage import blobrefs, mailboxes, shared
from storage import changes as ch
from storage.blobs import BlobRef
from storage.changes import Change
from storage.errors import Invalid, NotFound, QuotaExceeded
from storage.models import FLAG_DELETED, FLAG_SEEN, Account, Expunged, Mailbox, Message
from storage.parsed import column_values
from storage.records import (
    Changed,
    CopyResult,
    Delivery,
    DeliveryResult,
    FlagUpdate,
    MessageInfo,
    MessageMeta,
    StoreFlagsResult,
    join_keywords,
    message_info,
    split_keywords,
)
from storage.sql import chunks, on_sqlite

A = Account.__table__
M = Message.__table__
MB = Mailbox.__table__
X = Expunged.__table__

# Hot-path statements (delivery), prepared once: building SQLAlchemy constructs per message costs more than the SQL.
#: The statements of a delivery batch, for the driver's own cursor (by "is SQLite": qmark or format parameters).
#: SQLAlchemy's work per statement (the compiled cache's lookup, bind processing of every row's 22 values, the result
#: object, the events) cost the writer more than the statements themselves: about half of ``deliver_batch``'s CPU
#: (docs/benchmarks.md, branch smtp17).  Same statements, same rows: every column of a ``messages`` row is given (no
#: Python-side default is left to SQLAlchemy) and none of them has a bind processor (integers, floats, text, a bool).
#: The IN lists take one placeholder per value (:func:`_in`).
_SQL_ACCOUNTS = "SELECT id, used_bytes, quota_bytes FROM accounts WHERE id IN ({ids})"
# Only the mailboxes a batch can land in: the names asked for, INBOX (the fall-back) and the ids of exact placements
# (an account has several mailboxes more; reading them all cost the writer as much as a delivery's row).
_SQL_MAILBOXES = ("SELECT id, account_id, name, seen_per_reader FROM mailboxes "
                  "WHERE account_id IN ({ids}) AND (name IN ({names}) OR id IN ({mids}))")
#: A batch's UIDs of one mailbox: it runs once per mailbox of a batch.
_SQL_BUMP_ADD = {
    sqlite: "UPDATE mailboxes SET uid_next = uid_next + {p}, highest_modseq = highest_modseq + 1, "
            "message_count = message_count + {p}, unseen_count = unseen_count + {p}, total_size = total_size + {p} "
            "WHERE id = {p} RETURNING uid_next, highest_modseq, uid_validity".format(p="?" if sqlite else "%s")
    for sqlite in (True, False)}
_SQL_BLOB_UPSERT = {
    sqlite: "INSERT INTO blobs (id, size, refcount, data, created) VALUES ({p}, {p}, {p}, NULL, {p}) "
            "ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + excluded.refcount, "
            "created = excluded.created".format(p="?" if sqlite else "%s")
    for sqlite in (True, False)}
_SQL_ACCOUNT_USED = {sqlite: "UPDATE accounts SET used_bytes = used_bytes + {p} WHERE id = {p}".format(
    p="?" if sqlite else "%s") for sqlite in (True, False)}
#: Every column of a ``messages`` row but its id, in table order (:func:`_row_values` gives each of them).
_MESSAGE_COLUMNS: tuple[str, ...] = tuple(c.name for c in M.c if c.name != "id")
_SQL_INSERT_MESSAGE = {
    sqlite: "INSERT INTO messages ({cols}) VALUES ({ps})".format(
        cols=", ".join(f'"{c}"' for c in _MESSAGE_COLUMNS), ps=", ".join(["?" if sqlite else "%s"] * len(_MESSAGE_COLUMNS)))
    for sqlite in (True, False)}


def _in(n: int, sqlite: bool) -> str:
    """``n`` placeholders for an IN list."""
    return ", ".join(["?" if sqlite else "%s"] * n)


_SQL_LIST_MESSAGES = {
    True: "SELECT uid, modseq, flags, keywords, size, internal_date FROM messages WHERE mailbox_id = ? ORDER BY uid",
    False: "SELECT uid, modseq, flags, keywords, size, internal_date FROM messages WHERE mailbox_id = %s ORDER BY uid",
}
#: The same listing as columns, with the system-flag byte only (what a listing snapshot keeps).
_SQL_LIST_COLUMNS = {
    sqlite: "SELECT uid, modseq, flags & 255, keywords, size, internal_date FROM messages WHERE mailbox_id = {p} "
            "ORDER BY uid".format(p="?" if sqlite else "%s")
    for sqlite in (True, False)}


def thread_key(parsed: dict) -> int:
    """Conversation id of a message, computed at delivery without any lookup.

    Replies name the thread's first message first in References (RFC 5322 3.6.4), so every message of a conversation
    hashes the same root id: the first References id, else In-Reply-To, else its own Message-ID.  0 = unknown.
    """
    refs = (parsed.get("references") or "").split()
    root = refs[0] if refs else (parsed.get("in_reply_to") or "").split()[:1] or [parsed.get("message_id") or ""]
    root = root if isinstance(root, str) else root[0]
    if not root:
        return 0
    return int.from_bytes(hashlib.blake2b(root.strip().lower().encode("utf-8", "replace"), digest_size=7).digest(),
                          "big") or 1


# --------------------------------------------------------------------------------------------- reads


def list_messages(conn: Connection, mailbox_id: int) -> list[MessageMeta]:
    """Every message of the mailbox in UID order (what SELECT needs)."""
    # Driver-level fetch: for 100,000 rows SQLAlchemy's per-row processing costs more than the query.
    rows = conn.exec_driver_sql(_SQL_LIST_MESSAGES[on_sqlite(conn)], (mailbox_id,)).fetchall()
    empty: tuple[str, ...] = ()
    return [MessageMeta(u, ms, f, tuple(k.split()) if k else empty, sz, d) for u, ms, f, k, sz, d in rows]


def list_message_columns(conn: Connection, mailbox_id: int) -> tuple[tuple, ...]:
    """Every message of the mailbox in UID order as six columns: uids, modseqs, system-flag bytes (flags & 0xFF),
    keywords (the stored space-separated text, or None), sizes, internal dates.  No object per message: the IMAP
    listing snapshot turns the columns into its arrays at C speed."""
    rows = conn.exec_driver_sql(_SQL_LIST_COLUMNS[on_sqlite(conn)], (mailbox_id,)).fetchall()
    return tuple(zip(*rows, strict=True)) if rows else ((),) * 6


#: Built once (the webmail's message pages and lists run them on every request; building a select costs more than
#: SQLite running it).
_GET_MESSAGES = select(M).where(M.c.mailbox_id == bindparam("mailbox_id"),
                                M.c.uid.in_(bindparam("uids", expanding=True)))
_MESSAGE_COUNT = select(MB.c.message_count).where(MB.c.id == bindparam("mailbox_id"))
_PAGE_ORDER = {"date": M.c.internal_date, "uid": M.c.uid, "size": M.c.size, "subject": M.c.subject,
               "from": M.c.from_addr}
_PAGES: dict[tuple[str, bool], object] = {}


def get_messages(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[MessageInfo]:
    """Full metadata of the given UIDs (missing ones are left out), in UID order."""
    out: list[MessageInfo] = []
    for chunk in chunks(sorted(set(uids))):
        out.extend(message_info(r) for r in conn.execute(_GET_MESSAGES, {"mailbox_id": mailbox_id, "uids": chunk}))
    out.sort(key=lambda m: m.uid)
    return out


def _page_query(order: str, descending: bool):
    """The page select of one sort order (one of ``_PAGE_ORDER``, else date), built once per order."""
    key = (order if order in _PAGE_ORDER else "date", descending)
    q = _PAGES.get(key)
    if q is None:
        col = _PAGE_ORDER[key[0]]
        q = _PAGES[key] = select(M).where(M.c.mailbox_id == bindparam("mailbox_id")).order_by(
            col.desc() if descending else col.asc(), M.c.uid.desc() if descending else M.c.uid.asc()
        ).offset(bindparam("offset")).limit(bindparam("limit"))
    return q


def page_messages(conn: Connection, mailbox_id: int, *, offset: int = 0, limit: int = 50, order: str = "date",
                  descending: bool = True) -> tuple[int, list[MessageInfo]]:
    """One page of a mailbox for lists (webmail): (total count, messages) using the (mailbox, date) index."""
    total = conn.execute(_MESSAGE_COUNT, {"mailbox_id": mailbox_id}).scalar() or 0
    rows = conn.execute(_page_query(order, descending), {"mailbox_id": mailbox_id, "offset": offset, "limit": limit})
    return total, [message_info(r) for r in rows]


#: Built once (a SELECT from a cached listing runs them whenever the mailbox changed since).
_CHANGED_SINCE = select(M.c.uid, M.c.modseq, M.c.flags, M.c.keywords, M.c.size, M.c.internal_date).where(
    M.c.mailbox_id == bindparam("mailbox_id"), M.c.modseq > bindparam("modseq")).order_by(M.c.uid)
_VANISHED_SINCE = select(X.c.uid).where(X.c.mailbox_id == bindparam("mailbox_id"), X.c.modseq > bindparam("modseq"))


def changes_since(conn: Connection, mailbox_id: int, modseq: int) -> tuple[list[MessageMeta], list[int]]:
    """Messages changed after ``modseq`` and UIDs expunged after it (RFC 7162 CHANGEDSINCE / VANISHED)."""
    params = {"mailbox_id": mailbox_id, "modseq": modseq}
    changed = [MessageMeta(r[0], r[1], r[2], split_keywords(r[3]), r[4], r[5])
               for r in conn.execute(_CHANGED_SINCE, params)]
    vanished = sorted({r[0] for r in conn.execute(_VANISHED_SINCE, params)})
    return changed, vanished


# --------------------------------------------------------------------------------------------- helpers


# The write commands' statements (STORE, EXPUNGE, COPY/MOVE, APPEND), built once like the delivery's above: building a
# construct and its cache key cost more than SQLite running the statement (about 50-140 us against 13-30 us here).
_QUOTA_OF = select(A.c.used_bytes, A.c.quota_bytes).where(A.c.id == bindparam("account_id"))
_KEYWORDS_OF = select(MB.c.keywords).where(MB.c.id == bindparam("mailbox_id"))
_PER_READER = select(MB.c.seen_per_reader).where(MB.c.id == bindparam("mailbox_id"))
_ADDED = {  # by "the mailbox's keywords grow"
    with_keywords: update(MB).where(MB.c.id == bindparam("mailbox_id")).values(
        message_count=MB.c.message_count + bindparam("n"), unseen_count=MB.c.unseen_count + bindparam("unseen"),
        total_size=MB.c.total_size + bindparam("size"),
        **({"keywords": bindparam("new_keywords")} if with_keywords else {}))
    for with_keywords in (False, True)}
_ACCOUNT_GREW = update(A).where(A.c.id == bindparam("account_id")).values(
    used_bytes=A.c.used_bytes + bindparam("size"))
_ACCOUNT_SHRANK = update(A).where(A.c.id == bindparam("account_id")).values(
    used_bytes=A.c.used_bytes - bindparam("size"))
_INSERT_MESSAGES = insert(M)
_UIDS = bindparam("uids", expanding=True)
#: FOR UPDATE (PostgreSQL; SQLite's writer holds the whole database): the new modseq and the keyword list are
#: computed from this row, so two STOREs at once must not both read it, and the mailbox row is locked before the
#: message rows, in the order every other writer of a mailbox takes them (else the two deadlock).
_STORE_MAILBOX = select(MB.c.account_id, MB.c.highest_modseq, MB.c.keywords, MB.c.seen_per_reader).where(
    MB.c.id == bindparam("mailbox_id")).with_for_update()
_LOCK_MAILBOX = select(MB.c.id).where(MB.c.id == bindparam("mailbox_id")).with_for_update()
_STORE_ROWS = select(M.c.id, M.c.uid, M.c.modseq, M.c.flags, M.c.keywords).where(
    M.c.mailbox_id == bindparam("mailbox_id"), M.c.uid.in_(_UIDS))
_STORE_ROW = update(M).where(M.c.id == bindparam("row_id")).values(
    flags=bindparam("new_flags"), keywords=bindparam("new_keywords"), modseq=bindparam("new_modseq"))
_STORED = {  # by "the mailbox's keywords grow"
    with_keywords: update(MB).where(MB.c.id == bindparam("mailbox_id")).values(
        highest_modseq=bindparam("new_modseq"), unseen_count=MB.c.unseen_count + bindparam("unseen_delta"),
        **({"keywords": bindparam("new_keywords")} if with_keywords else {}))
    for with_keywords in (False, True)}
_REMOVABLE = select(M.c.id, M.c.uid, M.c.blob_id, M.c.size, M.c.flags).where(
    M.c.mailbox_id == bindparam("mailbox_id"))
_REMOVABLE_UIDS = _REMOVABLE.where(M.c.uid.in_(_UIDS))
_DELETED = _REMOVABLE.where(M.c.flags.op("&")(FLAG_DELETED) != 0)
_DELETED_UIDS = _DELETED.where(M.c.uid.in_(_UIDS))
#: One statement for the new modseq of an expunge and the mailbox's counters (``mailboxes.bump`` without UIDs, and
#: the counters' update, in one): its RETURNING also says whether readers keep their own \Seen there.
_REMOVED = update(MB).where(MB.c.id == bindparam("mailbox_id")).values(
    highest_modseq=MB.c.highest_modseq + 1, message_count=MB.c.message_count - bindparam("n"),
    unseen_count=MB.c.unseen_count - bindparam("unseen"), total_size=MB.c.total_size - bindparam("size"),
).returning(MB.c.highest_modseq, MB.c.seen_per_reader, MB.c.account_id)
_DELETE_ROWS = delete(M).where(M.c.id.in_(bindparam("ids", expanding=True)))
_INSERT_TOMBSTONES = insert(X)


def _check_quota(conn: Connection, account_id: int, extra: int) -> None:
    row = conn.execute(_QUOTA_OF, {"account_id": account_id}).first()
    if row is None:
        raise NotFound(f"no account {account_id}")
    if row.quota_bytes and row.used_bytes + extra > row.quota_bytes:
        raise QuotaExceeded("mailbox full")


def _row_values(mailbox_id: int, uid: int, modseq: int, blob: BlobRef, parsed: dict, flags: int,
                keywords: Iterable[str], internal_date: float) -> dict:
    values = column_values(parsed)
    values.update(mailbox_id=mailbox_id, uid=uid, modseq=modseq, flags=flags, keywords=join_keywords(keywords),
                  internal_date=internal_date, size=blob.size, blob_id=blob.id, thread_id=thread_key(parsed))
    return values


def _merge_keywords(conn: Connection, mailbox_id: int, keywords: list[str]) -> dict:
    """The mailbox's new ``keywords`` value when ``keywords`` adds any to it (else nothing to update)."""
    if not keywords:
        return {}
    cur = conn.execute(_KEYWORDS_OF, {"mailbox_id": mailbox_id}).scalar() or ""
    merged = join_keywords(split_keywords(cur) + tuple(keywords))
    return {"keywords": merged} if merged != cur else {}


def _after_add(conn: Connection, mailbox_id: int, account_id: int, n: int, size: int, unseen: int,
               keywords: list[str]) -> None:
    merged = _merge_keywords(conn, mailbox_id, keywords)
    params = {"mailbox_id": mailbox_id, "n": n, "unseen": unseen, "size": size}
    if merged:
        params["new_keywords"] = merged["keywords"]
    conn.execute(_ADDED[bool(merged)], params)
    conn.execute(_ACCOUNT_GREW, {"account_id": account_id, "size": size})


def _select_uids(conn: Connection, query, uids: Sequence[int], params: dict) -> list:
    """The rows of the prepared ``query`` (an expanding ``uids`` parameter, ``params`` for its others) for ``uids``,
    a chunk at a time."""
    rows = []
    for chunk in chunks(sorted(set(uids))):
        rows.extend(conn.execute(query, {**params, "uids": list(chunk)}).all())
    return rows


def _execute_rows(conn: Connection, statement, rows: list[dict]) -> None:
    """``statement`` once per parameter set (one executemany for several)."""
    if len(rows) == 1:
        conn.execute(statement, rows[0])
    elif rows:
        conn.execute(statement, rows)


# --------------------------------------------------------------------------------------------- adding


def deliver_batch(conn: Connection, deliveries: Sequence[Delivery],
                  notify: Callable[[list[Change]], list[tuple[str, dict]]] | None = None) -> Changed:
    """Deliver many messages in one transaction (group commit).  ``value`` is a list of DeliveryResult.

    A delivery that cannot be made (no such account, over quota) gets ``ok=False`` without affecting the others.
    An unexpected database error raises for the whole batch (the caller retries the deliveries one by one).

    Set-based on purpose: the statements per batch grow with the number of distinct mailboxes, accounts and
    blobs, not with the number of messages; messages of one batch in one mailbox share one new modseq.

    On PostgreSQL the UID reservation locks the mailbox row until the commit, and every delivery to that mailbox
    from any process waits for it: what follows it is sent as one pipeline (one round trip: the blob references,
    the message rows, the account's usage and, with ``notify`` (changes -> statements), the change events), so the
    lock is held for the reservation's round trip, that one and the COMMIT.
    """
    now = time.time()
    results: list[DeliveryResult | None] = [None] * len(deliveries)
    changes: list[Change] = []
    sqlite = on_sqlite(conn)
    cursor = conn.connection.cursor()  # the transaction's own connection
    account_ids = sorted({d.account_id for d in deliveries})
    cursor.execute(_SQL_ACCOUNTS.format(ids=_in(len(account_ids), sqlite)), account_ids)
    accounts = {r[0]: [r[1], r[2]] for r in cursor.fetchall()}
    boxes: dict[tuple[int, str], int] = {}
    owner: dict[int, int] = {}
    per_reader: set[int] = set()  # storage/shared.py: no \Seen in the stored flags there
    wanted = [mailboxes.normalize_mailbox_name(d.mailbox) if d.mailbox_id is None else "" for d in deliveries]
    names = sorted(set(wanted) - {""} | {"INBOX"})
    mids = sorted({d.mailbox_id for d in deliveries if d.mailbox_id is not None}) or [0]  # ids start at 1
    cursor.execute(_SQL_MAILBOXES.format(ids=_in(len(account_ids), sqlite), names=_in(len(names), sqlite),
                                         mids=_in(len(mids), sqlite)), [*account_ids, *names, *mids])
    for mid, account_id, name, seen_per_reader in cursor.fetchall():
        boxes[(account_id, name)] = mid
        owner[mid] = account_id
        if seen_per_reader:
            per_reader.add(mid)
    # Admission (quota counted across the batch) and target mailbox per delivery.
    per_box: dict[int, list[int]] = {}
    for i, d in enumerate(deliveries):
        acct = accounts.get(d.account_id)
        if acct is None:
            results[i] = DeliveryResult(False, error="nonexistent")
            continue
        if d.check_quota and acct[1] and acct[0] + d.blob.size > acct[1]:
            results[i] = DeliveryResult(False, error="overquota")
            continue
        if d.mailbox_id is not None:
            if owner.get(d.mailbox_id) != d.account_id:
                results[i] = DeliveryResult(False, error="nonexistent")
                continue
            acct[0] += d.blob.size
            per_box.setdefault(d.mailbox_id, []).append(i)
            continue
        acct[0] += d.blob.size
        name = wanted[i]
        mid = boxes.get((d.account_id, name)) or boxes.get((d.account_id, "INBOX"))
        if mid is None:  # INBOX was never created (legacy data): create it now
            mid = mailboxes.create_mailbox_row(conn, d.account_id, "INBOX")
            boxes[(d.account_id, "INBOX")] = mid
            changes.append(Change(ch.MAILBOX_CREATE, d.account_id, mid, name="INBOX"))
        per_box.setdefault(mid, []).append(i)
    rows: list[tuple] = []
    blob_counts: dict[str, list] = {}
    used: dict[int, int] = {}
    bump = _SQL_BUMP_ADD[sqlite]
    for mid, idxs in per_box.items():
        size = sum(deliveries[i].blob.size for i in idxs)
        strip = ~FLAG_SEEN if mid in per_reader else ~0
        unseen = sum(0 if deliveries[i].flags & strip & FLAG_SEEN else 1 for i in idxs)
        cursor.execute(bump, (len(idxs), len(idxs), unseen, size, mid))
        r = cursor.fetchone()
        first_uid, modseq, uid_validity = r[0] - len(idxs), r[1], r[2]
        merged = _merge_keywords(conn, mid, [k for i in idxs for k in deliveries[i].keywords])
        if merged:
            conn.execute(update(MB).where(MB.c.id == mid).values(**merged))
        for k, i in enumerate(idxs):
            d = deliveries[i]
            uid = first_uid + k
            values = _row_values(mid, uid, modseq, d.blob, d.parsed, d.flags & strip, d.keywords,
                                 d.internal_date or now)
            rows.append(tuple([values[c] for c in _MESSAGE_COLUMNS]))
            entry = blob_counts.setdefault(d.blob.id, [d.blob.size, 0])
            entry[1] += 1
            used[d.account_id] = used.get(d.account_id, 0) + d.blob.size
            results[i] = DeliveryResult(True, mid, uid, uid_validity=uid_validity)
            changes.append(Change(ch.EXISTS, d.account_id, mid, uid=uid, modseq=modseq, flags=d.flags & strip,
                                  keywords=tuple(d.keywords), size=d.blob.size))
    notes = notify(changes) if notify is not None and changes else []
    if sqlite:
        _write_batch(cursor, sqlite, rows, blob_counts, used, now, notes)
    else:
        with cursor.connection.pipeline():  # sent together; an error raises here, for the whole batch
            _write_batch(cursor, sqlite, rows, blob_counts, used, now, notes)
    cursor.close()
    return Changed(results, changes)


def _write_batch(cursor, sqlite: bool, rows: list[tuple], blob_counts: dict[str, list], used: dict[int, int],
                 now: float, notes: list[tuple[str, dict]]) -> None:
    """The writes of a delivery batch after its UID reservations (:func:`deliver_batch`)."""
    if rows:
        cursor.executemany(_SQL_BLOB_UPSERT[sqlite], [(b, v[0], v[1], now) for b, v in blob_counts.items()])
        cursor.executemany(_SQL_INSERT_MESSAGE[sqlite], rows)
        cursor.executemany(_SQL_ACCOUNT_USED[sqlite], [(n, a) for a, n in used.items()])
    for sql, params in notes:
        cursor.execute(sql, params)


def append_many(conn: Connection, account_id: int, mailbox_id: int, messages: Sequence[tuple]) -> Changed:
    """APPEND several messages all-or-nothing (RFC 3502 MULTIAPPEND): ``messages`` are (blob, parsed, flags,
    keywords, internal_date); ``value`` is (uid_validity, [uids]).  Raises QuotaExceeded / NotFound."""
    if not messages:
        raise Invalid("nothing to append")
    total = sum(m[0].size for m in messages)
    if mailboxes.owner_of(conn, mailbox_id) != account_id:
        raise NotFound("no such mailbox")
    _check_quota(conn, account_id, total)
    first, modseq, uv = mailboxes.bump(conn, mailbox_id, len(messages))
    now = time.time()
    unseen = 0
    strip = ~FLAG_SEEN if _per_reader(conn, mailbox_id) else ~0
    all_keywords: list[str] = []
    changes: list[Change] = []
    for k, (blob, parsed, flags, keywords, internal_date) in enumerate(messages):
        flags &= strip
        blobrefs.ref(conn, blob)
        conn.execute(insert(M).values(**_row_values(mailbox_id, first + k, modseq, blob, parsed, flags, keywords,
                                                    internal_date or now)))
        unseen += 0 if flags & FLAG_SEEN else 1
        all_keywords.extend(keywords)
        changes.append(Change(ch.EXISTS, account_id, mailbox_id, uid=first + k, modseq=modseq, flags=flags,
                              keywords=tuple(keywords), size=blob.size))
    _after_add(conn, mailbox_id, account_id, len(messages), total, unseen, list(dict.fromkeys(all_keywords)))
    return Changed((uv, list(range(first, first + len(messages)))), changes)


def copy(conn: Connection, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *,
         move: bool = False, reader: int = 0) -> Changed:
    """COPY (or MOVE, RFC 6851: atomic copy + expunge) messages; ``value`` is a CopyResult.

    The mailboxes may belong to different accounts (the caller checked the rights): the copies count against the
    target's owner.  ``reader``'s own \\Seen of a per-reader source goes with the copies, and stays theirs in a
    per-reader target."""
    src = mailboxes.owner_of(conn, src_mailbox_id)
    dst = mailboxes.owner_of(conn, dst_mailbox_id)
    if src is None or dst is None:
        raise NotFound("no such mailbox")
    account_id = dst
    src_seen = shared.seen_uids(conn, src_mailbox_id, reader, uids) if reader and _per_reader(
        conn, src_mailbox_id) else set()
    dst_strip = _per_reader(conn, dst_mailbox_id)
    if move:
        lock_mailboxes(conn, src_mailbox_id, dst_mailbox_id)
    rows = _select_uids(conn, _GET_MESSAGES, uids, {"mailbox_id": src_mailbox_id})
    rows.sort(key=lambda r: r.uid)
    if not rows:
        uv = conn.execute(select(MB.c.uid_validity).where(MB.c.id == dst_mailbox_id)).scalar()
        return Changed(CopyResult(uv, []), [])
    total = sum(r.size for r in rows)
    if not move or src != dst:  # a copy adds messages, into the same mailbox too (MOVE only relocates them)
        _check_quota(conn, account_id, total)
    first_uid, modseq, uv = mailboxes.bump(conn, dst_mailbox_id, len(rows))
    pairs = []
    changes: list[Change] = []
    skip = {"id", "mailbox_id", "uid", "modseq"}
    new_rows = []
    keywords: list[str] = []
    unseen = 0
    dst_seen: list[int] = []
    for i, r in enumerate(rows):
        flags = r.flags | (FLAG_SEEN if r.uid in src_seen else 0)
        if dst_strip:
            if flags & FLAG_SEEN and reader:
                dst_seen.append(first_uid + i)
            flags &= ~FLAG_SEEN
        vals = {k: v for k, v in r._mapping.items() if k not in skip}
        vals.update(mailbox_id=dst_mailbox_id, uid=first_uid + i, modseq=modseq, flags=flags)
        new_rows.append(vals)
        pairs.append((r.uid, first_uid + i))
        keywords.extend(split_keywords(r.keywords))
        unseen += 0 if flags & FLAG_SEEN else 1
        changes.append(Change(ch.EXISTS, account_id, dst_mailbox_id, uid=first_uid + i, modseq=modseq,
                              flags=flags, keywords=split_keywords(r.keywords), size=r.size))
    conn.execute(_INSERT_MESSAGES, new_rows)
    if dst_seen:
        shared.mark_seen(conn, dst_mailbox_id, reader, dst_seen)
    blobrefs.ref_existing(conn, blobrefs.count(r.blob_id for r in rows))
    _after_add(conn, dst_mailbox_id, account_id, len(rows), total, unseen, list(dict.fromkeys(keywords)))
    if move:
        changes = _remove(conn, src_mailbox_id, rows) + changes
    return Changed(CopyResult(uv, pairs), changes)


def _per_reader(conn: Connection, mailbox_id: int) -> bool:
    return bool(conn.execute(_PER_READER, {"mailbox_id": mailbox_id}).scalar())


# --------------------------------------------------------------------------------------------- flags


def set_flags(conn: Connection, mailbox_id: int, uids: Sequence[int], mode: str, flags: int,
              keywords: Sequence[str] = (), unchanged_since: int | None = None, reader: int = 0) -> Changed:
    """STORE: ``mode`` is "add", "remove" or "replace".  ``value`` is a StoreFlagsResult.

    In a mailbox that keeps \\Seen per reader (storage/shared.py) \\Seen is ``reader``'s own (none without one):
    the results and events show that reader's \\Seen, the stored flags never hold it.

    Only messages whose flags really change get a new modseq (RFC 7162 3.1.3 lets unchanged ones keep theirs);
    with ``unchanged_since`` messages with a higher modseq are left alone and reported in ``modified``.
    """
    if mode not in ("add", "remove", "replace"):
        raise Invalid("bad STORE mode")
    kw_lower = {k.lower(): k for k in keywords}
    updated: list[FlagUpdate] = []
    modified: list[int] = []
    changes: list[Change] = []
    mb = conn.execute(_STORE_MAILBOX, {"mailbox_id": mailbox_id}).first()
    if mb is None:
        raise NotFound("no such mailbox")
    rows = _select_uids(conn, _STORE_ROWS, uids, {"mailbox_id": mailbox_id})
    rows.sort(key=lambda r: r.uid)
    new_modseq = mb.highest_modseq + 1
    unseen_delta = 0
    per_reader = bool(mb.seen_per_reader)
    seen = shared.seen_uids(conn, mailbox_id, reader, [r.uid for r in rows]) if per_reader and reader else set()
    seen_add: list[int] = []
    seen_remove: list[int] = []
    row_updates: list[dict] = []
    for r in rows:
        if unchanged_since is not None and r.modseq > unchanged_since:
            modified.append(r.uid)
            continue
        old_kw = split_keywords(r.keywords)
        cur = r.flags | (FLAG_SEEN if r.uid in seen else 0)
        if mode == "add":
            nf = cur | flags
            nk = join_keywords(old_kw + tuple(keywords))
        elif mode == "remove":
            nf = cur & ~flags
            nk = join_keywords(k for k in old_kw if k.lower() not in kw_lower)
        else:
            nf = flags
            nk = join_keywords(keywords)
        if per_reader and not reader:
            nf &= ~FLAG_SEEN
        if nf == cur and nk == r.keywords:
            if unchanged_since is not None:
                # RFC 7162 3.1.3: still reported with its (unchanged) modseq
                updated.append(FlagUpdate(r.uid, r.modseq, cur, old_kw))
            continue
        stored = nf & ~FLAG_SEEN if per_reader else nf
        if per_reader and (nf ^ cur) & FLAG_SEEN:
            (seen_add if nf & FLAG_SEEN else seen_remove).append(r.uid)
        row_updates.append({"row_id": r.id, "new_flags": stored, "new_keywords": nk, "new_modseq": new_modseq})
        unseen_delta += (0 if stored & FLAG_SEEN else 1) - (0 if r.flags & FLAG_SEEN else 1)
        fu = FlagUpdate(r.uid, new_modseq, nf, split_keywords(nk))
        updated.append(fu)
        changes.append(Change(ch.FLAGS, mb.account_id, mailbox_id, uid=r.uid, modseq=new_modseq, flags=nf,
                              keywords=fu.keywords, reader=reader if per_reader else 0))
    _execute_rows(conn, _STORE_ROW, row_updates)
    if seen_add or seen_remove:
        shared.mark_seen(conn, mailbox_id, reader, seen_add, seen_remove)
    if changes:
        params = {"mailbox_id": mailbox_id, "new_modseq": new_modseq, "unseen_delta": unseen_delta}
        if keywords and mode != "remove":
            merged = join_keywords(split_keywords(mb.keywords) + tuple(keywords))
            if merged != mb.keywords:
                params["new_keywords"] = merged
        conn.execute(_STORED["new_keywords" in params], params)
    return Changed(StoreFlagsResult(updated, modified), changes)


# --------------------------------------------------------------------------------------------- removing


def _remove(conn: Connection, mailbox_id: int, rows) -> list[Change]:
    """Delete the given message rows, leave tombstones, fix counters (the mailbox's and its owner's); returns
    EXPUNGE changes."""
    if not rows:
        return []
    size = sum(r.size for r in rows)
    unseen = sum(0 if r.flags & FLAG_SEEN else 1 for r in rows)
    mb = conn.execute(_REMOVED, {"mailbox_id": mailbox_id, "n": len(rows), "unseen": unseen, "size": size}).first()
    if mb is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    modseq, account_id = mb.highest_modseq, mb.account_id
    for chunk in chunks([r.id for r in rows]):
        conn.execute(_DELETE_ROWS, {"ids": list(chunk)})
    _execute_rows(conn, _INSERT_TOMBSTONES, [{"mailbox_id": mailbox_id, "uid": r.uid, "modseq": modseq}
                                             for r in rows])
    if mb.seen_per_reader:  # only such mailboxes have reader_seen rows (storage/shared.py)
        shared.forget_seen(conn, mailbox_id, [r.uid for r in rows])
    blobrefs.unref(conn, blobrefs.count(r.blob_id for r in rows))
    conn.execute(_ACCOUNT_SHRANK, {"account_id": account_id, "size": size})
    return [Change(ch.EXPUNGE, account_id, mailbox_id, uid=r.uid, modseq=modseq) for r in
            sorted(rows, key=lambda r: r.uid)]


def lock_mailboxes(conn: Connection, *mailbox_ids: int) -> None:
    """PostgreSQL: lock these mailbox rows (in id order) before reading the message rows a removal counts, so two
    removals at once never both count the same rows; SQLite's writer already holds the whole database."""
    if on_sqlite(conn):
        return
    for mailbox_id in sorted(set(mailbox_ids)):
        conn.execute(_LOCK_MAILBOX, {"mailbox_id": mailbox_id})


def expunge(conn: Connection, mailbox_id: int, uids: Sequence[int] | None = None) -> Changed:
    """Remove messages flagged \\Deleted (only among ``uids`` when given: UID EXPUNGE).  ``value``: expunged UIDs."""
    params = {"mailbox_id": mailbox_id}
    lock_mailboxes(conn, mailbox_id)
    if uids is None:
        rows = conn.execute(_DELETED, params).all()
    else:
        rows = _select_uids(conn, _DELETED_UIDS, uids, params)
    return _removed(conn, mailbox_id, rows)


def _removed(conn: Connection, mailbox_id: int, rows) -> Changed:
    """:func:`_remove` of ``rows``, as the result of an expunge (a mailbox that is not there is NotFound; with rows
    to remove, the mailbox row's update tells, else one lookup)."""
    if not rows and mailboxes.owner_of(conn, mailbox_id) is None:
        raise NotFound("no such mailbox")
    try:
        changes = _remove(conn, mailbox_id, rows)
    except NotFound:
        raise NotFound("no such mailbox") from None
    return Changed([c.uid for c in changes], changes)


def delete_messages(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> Changed:
    """Remove the given messages whatever their flags (POP3 UPDATE state, webmail delete)."""
    lock_mailboxes(conn, mailbox_id)
    return _removed(conn, mailbox_id, _select_uids(conn, _REMOVABLE_UIDS, uids, {"mailbox_id": mailbox_id}))
