"""Mailboxes and subscriptions: functions over an open transaction (``Store.transaction()``).

Invariants kept here (tested in tests/test_store.py):

* ``uid_validity`` changes only when a mailbox name is (re-)created: it comes from a per-account sequence
  (``accounts.uid_validity_seq``), so a name deleted and created again never gets its old value back.
* UIDs and modseqs are reserved with :func:`bump`, one ``UPDATE … RETURNING`` under the mailbox row's write lock:
  ``uid_next`` only grows and ``highest_modseq`` rises on every change, even across threads and processes.
* Subscriptions are names, not mailboxes (RFC 9051 6.3.7): they outlive a deleted mailbox and follow a rename.

Names use "/" as the hierarchy separator; "INBOX" is case-insensitive and always spelled upper-case (RFC 9051 5.1).
"""

from __future__ import annotations

import time

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from storage import blobrefs
from storage import changes as ch
from storage.changes import Change
from storage.errors import AlreadyExists, HasChildren, Invalid, NotFound
from storage.models import Account, Expunged, Mailbox, Message, Subscription
from storage.records import Changed, MailboxInfo, mailbox_info
from storage.sql import like_prefix, on_sqlite

A = Account.__table__
M = Message.__table__
MB = Mailbox.__table__
SUB = Subscription.__table__
X = Expunged.__table__

DEFAULT_MAILBOXES = (
    ("INBOX", ""),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
SEPARATOR = "/"
MAX_MAILBOX_NAME = 1000
MAX_MAILBOX_DEPTH = 32


# --------------------------------------------------------------------------------------------- names


def normalize_mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 5.1); strip leading/trailing separators."""
    name = name.strip(SEPARATOR)
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX" + SEPARATOR):
        return "INBOX" + name[5:]
    return name


def check_mailbox_name(name: str) -> str:
    """The normalized name, or Invalid when it is empty, too long or too deep, or has a forbidden character."""
    name = normalize_mailbox_name(name)
    if not name or len(name.encode()) > MAX_MAILBOX_NAME:
        raise Invalid("mailbox name empty or too long")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_MAILBOX_DEPTH or any(p == "" for p in parts):
        raise Invalid("mailbox name has empty or too many levels")
    if any(c in name for c in "\r\n\0*%") or any(ord(c) < 0x20 for c in name):
        raise Invalid("mailbox name contains a forbidden character")
    return name


# --------------------------------------------------------------------------------------------- rows


def next_uid_validity(conn: Connection, account_id: int) -> int:
    row = conn.execute(select(A.c.uid_validity_seq).where(A.c.id == account_id)).first()
    if row is None:
        raise NotFound(f"no account {account_id}")
    value = max(int(time.time()), (row.uid_validity_seq or 0) + 1)
    value = min(value, 2**32 - 1)  # RFC 9051: nz-number fits in 32 bits
    conn.execute(update(A).where(A.c.id == account_id).values(uid_validity_seq=value))
    return value


def create_mailbox_row(conn: Connection, account_id: int, name: str, special_use: str = "",
                       subscribed: bool = True) -> int:
    """Insert one mailbox (no parents, no checks) with a fresh UIDVALIDITY; returns its id."""
    uv = next_uid_validity(conn, account_id)
    # storage/shared.py: the mailboxes of a shared mailbox's account keep \Seen per reader.
    per_reader = conn.execute(select(A.c.shared_name).where(A.c.id == account_id)).scalar() is not None
    if subscribed:
        _subscribe(conn, account_id, name)
    else:  # a name subscribed before (and deleted since) is still subscribed
        subscribed = _is_subscribed(conn, account_id, name)
    values = dict(account_id=account_id, name=name, special_use=special_use, subscribed=subscribed, uid_validity=uv,
                  uid_next=1, highest_modseq=1, keywords="", message_count=0, unseen_count=0, total_size=0,
                  seen_per_reader=per_reader)
    if on_sqlite(conn):
        values["id"] = _next_sqlite_mailbox_id(conn)
    return conn.execute(insert(MB).values(**values)).inserted_primary_key[0]


_NEXT_ID = text("UPDATE id_high_water SET value = MAX(value, (SELECT COALESCE(MAX(id), 0) FROM mailboxes)) + 1 "
                "WHERE name = 'mailboxes' RETURNING value")
_FIRST_ID = text("INSERT INTO id_high_water (name, value) SELECT 'mailboxes', COALESCE(MAX(id), 0) + 1 FROM mailboxes "
                 "RETURNING value")


def _next_sqlite_mailbox_id(conn: Connection) -> int:
    """A mailbox id never given before (SQLite would hand out a deleted highest one again: migration
    mailbox_ids_4c9e2b7d1a36); PostgreSQL's sequence already never does."""
    value = conn.execute(_NEXT_ID).scalar()
    if value is None:
        value = conn.execute(_FIRST_ID).scalar()
    return int(value)


# The write commands' statements (STORE, EXPUNGE, COPY/MOVE run them once or more each), built once: building a
# SQLAlchemy construct and its cache key costs several times what SQLite takes to run the statement.
_BUMP = update(MB).where(MB.c.id == bindparam("mailbox_id")).values(
    uid_next=MB.c.uid_next + bindparam("n_uids"), highest_modseq=MB.c.highest_modseq + 1
).returning(MB.c.uid_next, MB.c.highest_modseq, MB.c.uid_validity)
_OWNER_OF = select(MB.c.account_id).where(MB.c.id == bindparam("mailbox_id"))


def bump(conn: Connection, mailbox_id: int, n_uids: int) -> tuple[int, int, int]:
    """Reserve ``n_uids`` UIDs and one new modseq: returns (first uid, modseq, uid_validity)."""
    row = conn.execute(_BUMP, {"mailbox_id": mailbox_id, "n_uids": n_uids}).first()
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return row[0] - n_uids, row[1], row[2]


def owner_of(conn: Connection, mailbox_id: int) -> int | None:
    """The account that owns the mailbox, or None when there is no such mailbox."""
    return conn.execute(_OWNER_OF, {"mailbox_id": mailbox_id}).scalar()


def _id_of(conn: Connection, account_id: int, name: str) -> int | None:
    return conn.execute(select(MB.c.id).where(MB.c.account_id == account_id, MB.c.name == name)).scalar()


def _create_parents(conn: Connection, account_id: int, name: str, subscribed: bool = True) -> list[Change]:
    """Create the missing parents of ``name`` (RFC 9051 6.3.4: CREATE makes the hierarchy it needs)."""
    changes = []
    parts = name.split(SEPARATOR)
    for i in range(1, len(parts)):
        parent = SEPARATOR.join(parts[:i])
        if _id_of(conn, account_id, parent) is None:
            pid = create_mailbox_row(conn, account_id, parent, subscribed=subscribed)
            changes.append(Change(ch.MAILBOX_CREATE, account_id, pid, name=parent))
    return changes


def _children(conn: Connection, account_id: int, name: str):
    return conn.execute(select(MB.c.id, MB.c.name).where(
        MB.c.account_id == account_id, MB.c.name.like(like_prefix(name + SEPARATOR), escape="\\"))).all()


# --------------------------------------------------------------------------------------------- reads


#: Built once: every webmail page and IMAP LIST runs it.
_LIST_MAILBOXES = select(MB).where(MB.c.account_id == bindparam("account_id")).order_by(MB.c.name)
_LIST_SUBSCRIPTIONS = select(SUB.c.name).where(SUB.c.account_id == bindparam("account_id")).order_by(SUB.c.name)


def list_mailboxes(conn: Connection, account_id: int) -> list[MailboxInfo]:
    return [mailbox_info(r) for r in conn.execute(_LIST_MAILBOXES, {"account_id": account_id})]


def large_mailboxes(conn: Connection, min_messages: int, limit: int) -> list[MailboxInfo]:
    """The largest mailboxes of every account (at least ``min_messages`` messages), largest first."""
    return [mailbox_info(r) for r in conn.execute(select(MB).where(MB.c.message_count >= min_messages)
                                                  .order_by(MB.c.message_count.desc()).limit(limit))]


_GET_MAILBOX = select(MB).where(MB.c.account_id == bindparam("account_id"), MB.c.name == bindparam("name"))
MAILBOX_BY_ID = select(MB).where(MB.c.id == bindparam("mailbox_id"))


def get_mailbox(conn: Connection, account_id: int, name: str) -> MailboxInfo | None:
    row = conn.execute(_GET_MAILBOX, {"account_id": account_id, "name": normalize_mailbox_name(name)}).first()
    return mailbox_info(row) if row else None


def get_mailbox_by_id(conn: Connection, mailbox_id: int) -> MailboxInfo | None:
    row = conn.execute(MAILBOX_BY_ID, {"mailbox_id": mailbox_id}).first()
    return mailbox_info(row) if row else None


# --------------------------------------------------------------------------------------------- writes


def create_mailbox(conn: Connection, account_id: int, name: str, special_use: str = "", *,
                   subscribed: bool = True) -> Changed:
    """Create ``name`` and any missing parents (RFC 9051 6.3.4).  ``value`` is the MailboxInfo.

    ``subscribed`` applies to the new mailbox and to the parents created with it: IMAP CREATE passes False
    (RFC 9051 6.3.4 creates, it does not subscribe); webmail and default folders keep the default."""
    name = check_mailbox_name(name)
    if _id_of(conn, account_id, name) is not None:
        raise AlreadyExists(f"mailbox {name} exists")
    if special_use and conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                          MB.c.special_use == special_use)).first():
        raise AlreadyExists(f"a mailbox with {special_use} exists")
    changes = _create_parents(conn, account_id, name, subscribed)
    mid = create_mailbox_row(conn, account_id, name, special_use, subscribed=subscribed)
    changes.append(Change(ch.MAILBOX_CREATE, account_id, mid, name=name))
    return Changed(mailbox_info(conn.execute(select(MB).where(MB.c.id == mid)).first()), changes)


def delete_mailbox(conn: Connection, account_id: int, name: str) -> Changed:
    """Delete a mailbox and its messages.  INBOX cannot be deleted; a mailbox with children raises HasChildren."""
    name = normalize_mailbox_name(name)
    if name == "INBOX":
        raise Invalid("INBOX cannot be deleted")  # RFC 9051 6.3.5
    row = conn.execute(select(MB).where(MB.c.account_id == account_id, MB.c.name == name)).first()
    if row is None:
        raise NotFound(f"no mailbox {name}")
    if conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                          MB.c.name.like(like_prefix(name + SEPARATOR), escape="\\"))).first():
        raise HasChildren(f"mailbox {name} has children")
    blobrefs.unref_selected(conn, select(M.c.blob_id).where(M.c.mailbox_id == row.id))
    floor = func.max if on_sqlite(conn) else func.greatest
    conn.execute(update(A).where(A.c.id == account_id).values(used_bytes=floor(A.c.used_bytes - row.total_size, 0)))
    conn.execute(delete(M).where(M.c.mailbox_id == row.id))
    conn.execute(delete(X).where(X.c.mailbox_id == row.id))
    conn.execute(delete(MB).where(MB.c.id == row.id))
    return Changed(None, [Change(ch.MAILBOX_DELETE, account_id, row.id, name=name)])


def rename_mailbox(conn: Connection, account_id: int, old: str, new: str) -> Changed:
    """Rename ``old`` (and its children) to ``new``.

    RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox and leaves INBOX empty (and existing).
    """
    old = normalize_mailbox_name(old)
    new = check_mailbox_name(new)
    if new == "INBOX":
        raise AlreadyExists("INBOX exists")
    src = conn.execute(select(MB).where(MB.c.account_id == account_id, MB.c.name == old)).first()
    if src is None:
        raise NotFound(f"no mailbox {old}")
    if _id_of(conn, account_id, new) is not None:
        raise AlreadyExists(f"mailbox {new} exists")
    if new.startswith(old + SEPARATOR):
        raise Invalid("cannot rename a mailbox into its own child")
    changes = _create_parents(conn, account_id, new)
    if old == "INBOX":
        return Changed(None, changes + _rename_inbox(conn, account_id, src, new))
    children = _children(conn, account_id, old)
    for _cid, cname in children:
        target = new + cname[len(old):]
        if _id_of(conn, account_id, target) is not None:
            raise AlreadyExists(f"mailbox {target} exists")
    conn.execute(update(MB).where(MB.c.id == src.id).values(name=new))
    _move_subscription(conn, account_id, old, new)
    changes.append(Change(ch.MAILBOX_RENAME, account_id, src.id, name=new, old_name=old))
    for cid, cname in children:
        target = new + cname[len(old):]
        conn.execute(update(MB).where(MB.c.id == cid).values(name=target))
        _move_subscription(conn, account_id, cname, target)
        changes.append(Change(ch.MAILBOX_RENAME, account_id, cid, name=target, old_name=cname))
    return Changed(None, changes)


def _rename_inbox(conn: Connection, account_id: int, src, new: str) -> list[Change]:
    """Move every message of INBOX (row ``src``) into a new mailbox ``new``; INBOX stays, empty."""
    dst_id = create_mailbox_row(conn, account_id, new)
    # The same UIDs are fine in the new mailbox, which has its own UIDVALIDITY.
    conn.execute(update(M).where(M.c.mailbox_id == src.id).values(mailbox_id=dst_id))
    conn.execute(update(MB).where(MB.c.id == dst_id).values(
        uid_next=src.uid_next, highest_modseq=src.highest_modseq, message_count=src.message_count,
        unseen_count=src.unseen_count, total_size=src.total_size, keywords=src.keywords))
    new_modseq = src.highest_modseq + 1
    uids = [r.uid for r in conn.execute(select(M.c.uid).where(M.c.mailbox_id == dst_id))]
    conn.execute(update(MB).where(MB.c.id == src.id).values(
        message_count=0, unseen_count=0, total_size=0, highest_modseq=new_modseq))
    changes = []
    for uid in uids:
        conn.execute(insert(X).values(mailbox_id=src.id, uid=uid, modseq=new_modseq))
        changes.append(Change(ch.EXPUNGE, account_id, src.id, uid=uid, modseq=new_modseq))
    changes.append(Change(ch.MAILBOX_CREATE, account_id, dst_id, name=new))
    return changes


# --------------------------------------------------------------------------------------------- subscriptions


def _is_subscribed(conn: Connection, account_id: int, name: str) -> bool:
    return conn.execute(select(SUB.c.id).where(SUB.c.account_id == account_id,
                                               SUB.c.name == name)).first() is not None


def _subscribe(conn: Connection, account_id: int, name: str) -> None:
    if not _is_subscribed(conn, account_id, name):
        conn.execute(insert(SUB).values(account_id=account_id, name=name))


def _move_subscription(conn: Connection, account_id: int, old: str, new: str) -> None:
    if _is_subscribed(conn, account_id, old):
        conn.execute(delete(SUB).where(SUB.c.account_id == account_id, SUB.c.name == new))
        conn.execute(update(SUB).where(SUB.c.account_id == account_id, SUB.c.name == old).values(name=new))


def set_subscribed(conn: Connection, account_id: int, name: str, subscribed: bool) -> Changed:
    """SUBSCRIBE / UNSUBSCRIBE ``name``; the mailbox need not exist (RFC 9051 6.3.7)."""
    name = check_mailbox_name(name)
    if subscribed:
        _subscribe(conn, account_id, name)
    else:
        conn.execute(delete(SUB).where(SUB.c.account_id == account_id, SUB.c.name == name))
    mid = _id_of(conn, account_id, name)
    if mid is not None:
        conn.execute(update(MB).where(MB.c.id == mid).values(subscribed=subscribed))
    return Changed(None, [Change(ch.MAILBOX_SUBSCRIBE, account_id, mid or 0, name=name,
                                 flags=1 if subscribed else 0)])


def list_subscriptions(conn: Connection, account_id: int) -> list[str]:
    """Every subscribed name, whether or not its mailbox exists."""
    return [r.name for r in conn.execute(_LIST_SUBSCRIPTIONS, {"account_id": account_id})]
