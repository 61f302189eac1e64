"""The webmail's data: sessions, recent correspondents, identities, search and conversations.

Functions over an open transaction (``Store.transaction()``).  Everything is scoped by ``account_id`` in the query
itself, so an id belonging to another account finds nothing.  Session policy (tokens, expiry, CSRF) stays in
``webmail/sessions.py``; this module only keeps the rows (``webmail_sessions`` holds the SHA-256 of the cookie, never
the cookie).  Message bodies are matched by a ``body_text`` function the caller passes in, since storage parses no
MIME.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from storage import accounts, sendgrants
from storage.models import Account, Mailbox, Message, WebmailContact, WebmailIdentity, WebmailSession
from storage.records import MessageInfo, message_info
from storage.sql import like_substring

A = Account.__table__
C = WebmailContact.__table__
ID = WebmailIdentity.__table__
M = Message.__table__
MB = Mailbox.__table__
S = WebmailSession.__table__

#: Most messages whose bodies one body search reads (newest first).
MAX_BODY_SCAN = 5000
#: Most messages shown in a conversation.
MAX_THREAD = 100
#: Longest search text.
MAX_QUERY = 200
SEARCH_FIELDS = ("all", "from", "to", "subject", "body")

#: ``body_text(raw message, bodystructure JSON) -> text`` of its readable parts (``mailserver.mime.extract_text``).
BodyText = Callable[[bytes, str], str]


@dataclass(frozen=True)
class SessionRow:
    key: str  # sha256 hex of the cookie value
    account_id: int
    address: str
    display_name: str
    enabled: bool
    csrf: str
    created: float
    last_seen: float


@dataclass(frozen=True)
class Identity:
    address: str
    name: str
    signature: str
    #: ``sendgrants.OWN`` (the account's address or alias), ``SEND_AS`` or ``SEND_ON_BEHALF`` (a grant).
    kind: str = sendgrants.OWN


@dataclass(frozen=True)
class SearchResult:
    messages: list[MessageInfo]
    more: bool
    scanned_all: bool = True


# --------------------------------------------------------------------------------------------- sessions


def create_session(conn: Connection, key: str, account_id: int, csrf: str, now: float, ip: str, user_agent: str,
                   *, idle: float, absolute: float) -> tuple[str, str]:
    """Insert a session (and drop the account's expired ones); returns the account's (address, display name)."""
    conn.execute(S.insert().values(id=key, account_id=account_id, csrf=csrf, created=now, last_seen=now,
                                   ip=ip[:64], user_agent=user_agent[:300]))
    conn.execute(delete(S).where(S.c.account_id == account_id,
                                 (S.c.last_seen < now - idle) | (S.c.created < now - absolute)))
    return session_account(conn, account_id)


def session_account(conn: Connection, account_id: int) -> tuple[str, str]:
    row = conn.execute(select(A.c.address, A.c.display_name).where(A.c.id == account_id)).first()
    return (row.address, row.display_name) if row else ("", "")


#: Built once: every request runs it.
_LOAD_SESSION = select(S.c.id, S.c.account_id, A.c.address, A.c.display_name, A.c.enabled, S.c.csrf, S.c.created,
                       S.c.last_seen).join(A, A.c.id == S.c.account_id).where(S.c.id == bindparam("key"))


def load_session(conn: Connection, key: str) -> SessionRow | None:
    row = conn.execute(_LOAD_SESSION, {"key": key}).first()
    return SessionRow(row.id, row.account_id, row.address, row.display_name, bool(row.enabled), row.csrf,
                      row.created, row.last_seen) if row else None


def touch_session(conn: Connection, key: str, now: float) -> None:
    conn.execute(update(S).where(S.c.id == key).values(last_seen=now))


def delete_session(conn: Connection, key: str) -> None:
    conn.execute(delete(S).where(S.c.id == key))


def delete_other_sessions(conn: Connection, account_id: int, keep_key: str) -> int:
    return conn.execute(delete(S).where(S.c.account_id == account_id, S.c.id != keep_key)).rowcount


def count_sessions(conn: Connection, account_id: int) -> int:
    return len(conn.execute(select(S.c.id).where(S.c.account_id == account_id)).all())


# --------------------------------------------------------------------------------------------- contacts


def record_contacts(conn: Connection, account_id: int, people: list[tuple[str, str]]) -> None:
    """Remember the recipients of a sent message (name, address)."""
    now = time.time()
    for name, addr in people:
        addr = addr.strip().lower()[:320]
        if not addr or "@" not in addr:
            continue
        res = conn.execute(update(C).where(C.c.account_id == account_id, C.c.address == addr).values(
            last_used=now, use_count=C.c.use_count + 1, **({"name": name[:200]} if name else {})))
        if res.rowcount == 0:
            conn.execute(C.insert().values(account_id=account_id, address=addr, name=name[:200], last_used=now,
                                           use_count=1))


def suggest_contacts(conn: Connection, account_id: int, prefix: str = "", limit: int = 20) -> list[tuple[str, str]]:
    """(name, address) of recent correspondents matching ``prefix``, most recently used first."""
    q = select(C.c.name, C.c.address).where(C.c.account_id == account_id)
    prefix = prefix.strip().lower()[:100]
    if prefix:
        q = q.where(or_(C.c.address.like(like_substring(prefix), escape="\\"),
                        func.lower(C.c.name).like(like_substring(prefix), escape="\\")))
    return [(r.name, r.address) for r in conn.execute(q.order_by(C.c.last_used.desc()).limit(limit))]


# --------------------------------------------------------------------------------------------- identities


def identities(conn: Connection, account_id: int) -> list[Identity]:
    """One identity per address the account may send as (``accounts.addresses_of``), own address first, then one
    per send grant (``sendgrants.grants_of``) with its kind."""
    acct = accounts.get_account_by_id(conn, account_id)
    rows = {r.address: r for r in conn.execute(select(ID).where(ID.c.account_id == account_id))}
    out = []
    owned = accounts.addresses_of(conn, account_id)
    for addr in owned:
        r = rows.get(addr)
        if r is not None:
            out.append(Identity(addr, r.name, r.signature))
        elif acct is not None and addr == acct.address:
            out.append(Identity(addr, acct.display_name, acct.signature))
        else:
            out.append(Identity(addr, acct.display_name if acct else "", ""))
    for addr, kind in sendgrants.grants_of(conn, account_id):
        if addr in owned:
            continue
        r = rows.get(addr)
        out.append(Identity(addr, r.name if r else "", r.signature if r else "", kind))
    return out


def save_identity(conn: Connection, account_id: int, address: str, name: str, signature: str) -> None:
    res = conn.execute(update(ID).where(ID.c.account_id == account_id, ID.c.address == address)
                       .values(name=name, signature=signature))
    if res.rowcount == 0:
        conn.execute(ID.insert().values(account_id=account_id, address=address, name=name, signature=signature))


# --------------------------------------------------------------------------------------------- search


def search(conn: Connection, read_blob: Callable[[str], bytes], body_text: BodyText, account_id: int,
           mailbox_ids: list[int] | None, text: str, field: str, offset: int, limit: int) -> SearchResult:
    """Messages of the account (in ``mailbox_ids`` or all) matching ``text`` in ``field``, newest first.

    Header fields and the stored preview are matched in SQL (case-insensitive LIKE); ``body`` and ``all`` also read
    message bodies, at most :data:`MAX_BODY_SCAN` of them.
    """
    text = text.strip()[:MAX_QUERY]
    owned = select(MB.c.id).where(MB.c.account_id == account_id)
    if mailbox_ids is not None:
        owned = owned.where(MB.c.id.in_(mailbox_ids))
    scope = M.c.mailbox_id.in_(owned.scalar_subquery())
    pattern = like_substring(text.lower())
    cols = {"from": [M.c.from_addr], "to": [M.c.to_addr, M.c.cc_addr], "subject": [M.c.subject],
            "all": [M.c.subject, M.c.from_addr, M.c.to_addr, M.c.cc_addr, M.c.preview], "body": [M.c.preview]}
    conds = [func.lower(c).like(pattern, escape="\\") for c in cols.get(field, cols["all"])]
    order = (M.c.internal_date.desc(), M.c.id.desc())
    if field not in ("body", "all"):
        rows = conn.execute(select(M).where(scope, or_(*conds)).order_by(*order).offset(offset).limit(limit + 1))
        infos = [message_info(r) for r in rows]
        return SearchResult(infos[:limit], len(infos) > limit)
    # Bodies: walk the scope newest first, matching headers in SQL and bodies by reading them.
    needle = text.casefold()
    found: list[MessageInfo] = []
    scanned = 0
    last = None
    while len(found) < offset + limit + 1 and scanned < MAX_BODY_SCAN:
        q = select(M).where(scope).order_by(*order).limit(200)
        if last is not None:
            q = q.where(or_(M.c.internal_date < last[0], and_(M.c.internal_date == last[0], M.c.id < last[1])))
        rows = conn.execute(q).all()
        if not rows:
            break
        for r in rows:
            scanned += 1
            hit = field == "all" and any(needle in (v or "").casefold() for v in (
                r.subject, r.from_addr, r.to_addr, r.cc_addr))
            if not hit:
                try:
                    hit = needle in body_text(read_blob(r.blob_id), r.bodystructure).casefold()
                except Exception:  # an unreadable body is no match; the search goes on
                    hit = False
            if hit:
                found.append(message_info(r))
            if scanned >= MAX_BODY_SCAN:
                break
        last = (rows[-1].internal_date, rows[-1].id)
    return SearchResult(found[offset:offset + limit], len(found) > offset + limit, scanned < MAX_BODY_SCAN)


def conversation(conn: Connection, account_id: int, msg: MessageInfo) -> list[tuple[str, MessageInfo]]:
    """Messages of the account in the same conversation (References / In-Reply-To chain), oldest first."""
    ids = set((msg.references or "").split()) | set((msg.in_reply_to or "").split())
    if msg.message_id:
        ids.add(msg.message_id)
    ids = {i for i in ids if i.startswith("<") and len(i) < 1000}
    if not ids:
        return []
    # Indexed lookups only: the conversation id computed at delivery (storage.messages.thread_key), plus the
    # messages this one names (which may predate thread ids or have been threaded under another root).
    params = {"account_id": account_id, "message_ids": sorted(ids)[:100]}
    if msg.thread_id:
        params["thread_id"] = msg.thread_id
    q = _CONVERSATION_BY_THREAD if msg.thread_id else _CONVERSATION
    return [(r.mailbox_name, message_info(r)) for r in conn.execute(q, params)]


def _conversation(by_thread: bool):
    named = M.c.message_id.in_(bindparam("message_ids", expanding=True))
    return (select(M, MB.c.name.label("mailbox_name")).join(MB, MB.c.id == M.c.mailbox_id)
            .where(MB.c.account_id == bindparam("account_id"),
                   or_(named, M.c.thread_id == bindparam("thread_id")) if by_thread else named)
            .order_by(M.c.date_sent, M.c.internal_date).limit(MAX_THREAD))


#: Built once (every message page runs one): by the messages named, and by those and the conversation id.
_CONVERSATION = _conversation(False)
_CONVERSATION_BY_THREAD = _conversation(True)
