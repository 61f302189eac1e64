"""The webmail's own read and write queries (blocking: run them through ``app.read`` / ``app.write``).

Search, conversations, recent correspondents and identities.  Everything here is scoped by ``account_id`` in the
query itself, so an id belonging to another account finds nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine

from storage.db import is_sqlite
from storage.models import Mailbox, Message
from storage.store import MessageInfo, split_keywords
from webmail.models import WebmailContact, WebmailIdentity

M = Message.__table__
MB = Mailbox.__table__
C = WebmailContact.__table__
ID = WebmailIdentity.__table__

#: Most messages whose bodies one body search reads (newest first).
MAX_BODY_SCAN = 5000
#: Most messages shown in a conversation.
MAX_THREAD = 100
#: Longest search text.
MAX_QUERY = 200
SEARCH_FIELDS = ("all", "from", "to", "subject", "body")


def message_info(row) -> MessageInfo:
    return MessageInfo(row.id, row.mailbox_id, row.uid, row.modseq, row.flags, split_keywords(row.keywords),
                       row.internal_date, row.size, row.blob_id, row.envelope, row.bodystructure, row.header_size,
                       row.subject, row.from_addr, row.to_addr, row.cc_addr, row.date_sent, row.message_id,
                       row.in_reply_to, row.references, row.preview, bool(row.has_attachment), row.thread_id)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _write(engine: Engine):
    conn = engine.connect()
    if is_sqlite(str(engine.url)):
        conn.info["sqlite_begin"] = "IMMEDIATE"
    return conn


@dataclass(frozen=True)
class SearchResult:
    messages: list[MessageInfo]
    more: bool
    scanned_all: bool = True


def search(engine: Engine, read_blob, account_id: int, mailbox_ids: list[int] | None, text: str, field: str,
           offset: int, limit: int) -> SearchResult:
    """Messages of the account (in ``mailbox_ids`` or all) matching ``text`` in ``field``, newest first.

    Header fields and the stored preview are matched in SQL (case-insensitive LIKE); ``body`` and ``all`` also read
    message bodies, at most :data:`MAX_BODY_SCAN` of them.
    """
    text = text.strip()[:MAX_QUERY]
    owned = select(MB.c.id).where(MB.c.account_id == account_id)
    if mailbox_ids is not None:
        owned = owned.where(MB.c.id.in_(mailbox_ids))
    scope = M.c.mailbox_id.in_(owned.scalar_subquery())
    pattern = _like(text.lower())
    cols = {"from": [M.c.from_addr], "to": [M.c.to_addr, M.c.cc_addr], "subject": [M.c.subject],
            "all": [M.c.subject, M.c.from_addr, M.c.to_addr, M.c.cc_addr, M.c.preview], "body": [M.c.preview]}
    conds = [func.lower(c).like(pattern, escape="\\") for c in cols.get(field, cols["all"])]
    order = (M.c.internal_date.desc(), M.c.id.desc())
    if field not in ("body", "all"):
        with engine.connect() as conn:
            rows = conn.execute(select(M).where(scope, or_(*conds)).order_by(*order)
                                .offset(offset).limit(limit + 1)).all()
        infos = [message_info(r) for r in rows]
        return SearchResult(infos[:limit], len(infos) > limit)
    # Bodies: walk the scope newest first, matching headers in SQL and bodies by reading them.
    from mailserver.mime import extract_text

    needle = text.casefold()
    found: list[MessageInfo] = []
    scanned = 0
    last = None
    with engine.connect() as conn:
        while len(found) < offset + limit + 1 and scanned < MAX_BODY_SCAN:
            q = select(M).where(scope).order_by(*order).limit(200)
            if last is not None:
                q = q.where(or_(M.c.internal_date < last[0], and_(M.c.internal_date == last[0], M.c.id < last[1])))
            rows = conn.execute(q).all()
            if not rows:
                break
            for r in rows:
                scanned += 1
                info = message_info(r)
                hit = field == "all" and any(needle in (v or "").casefold() for v in (
                    r.subject, r.from_addr, r.to_addr, r.cc_addr))
                if not hit:
                    try:
                        raw = read_blob(r.blob_id)
                        bs = json.loads(r.bodystructure) if r.bodystructure else None
                        hit = needle in extract_text(raw, 2_000_000, bs).casefold()
                    except Exception:
                        hit = False
                if hit:
                    found.append(info)
                if scanned >= MAX_BODY_SCAN:
                    break
            last = (rows[-1].internal_date, rows[-1].id)
    return SearchResult(found[offset:offset + limit], len(found) > offset + limit, scanned < MAX_BODY_SCAN)


def conversation(engine: Engine, account_id: int, msg: MessageInfo) -> list[tuple[str, MessageInfo]]:
    """Messages of the account in the same conversation (References / In-Reply-To chain), oldest first."""
    ids = set((msg.references or "").split()) | set((msg.in_reply_to or "").split())
    if msg.message_id:
        ids.add(msg.message_id)
    ids = {i for i in ids if i.startswith("<") and len(i) < 1000}
    if not ids:
        return []
    # Indexed lookups only: the conversation id computed at delivery (storage.store.thread_key), plus the messages
    # this one names (which may predate thread ids or have been threaded under another root).
    conds = [M.c.message_id.in_(sorted(ids)[:100])]
    if msg.thread_id:
        conds.append(M.c.thread_id == msg.thread_id)
    q = (select(M, MB.c.name.label("mailbox_name")).join(MB, MB.c.id == M.c.mailbox_id)
         .where(MB.c.account_id == account_id, or_(*conds))
         .order_by(M.c.date_sent, M.c.internal_date).limit(MAX_THREAD))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [(r.mailbox_name, message_info(r)) for r in rows]


# --------------------------------------------------------------------------------------------- contacts


def record_contacts(engine: Engine, account_id: int, people: list[tuple[str, str]]) -> None:
    """Remember the recipients of a sent message (name, address)."""
    now = time.time()
    with _write(engine) as conn:
        try:
            with conn.begin():
                for name, addr in people:
                    addr = addr.strip().lower()[:320]
                    if not addr or "@" not in addr:
                        continue
                    res = conn.execute(update(C).where(C.c.account_id == account_id, C.c.address == addr).values(
                        last_used=now, use_count=C.c.use_count + 1, **({"name": name[:200]} if name else {})))
                    if res.rowcount == 0:
                        conn.execute(C.insert().values(account_id=account_id, address=addr, name=name[:200],
                                                       last_used=now, use_count=1))
        finally:
            conn.info.pop("sqlite_begin", None)


def suggest_contacts(engine: Engine, account_id: int, prefix: str = "", limit: int = 20) -> list[tuple[str, str]]:
    q = select(C.c.name, C.c.address).where(C.c.account_id == account_id)
    prefix = prefix.strip().lower()[:100]
    if prefix:
        q = q.where(or_(C.c.address.like(_like(prefix), escape="\\"),
                        func.lower(C.c.name).like(_like(prefix), escape="\\")))
    q = q.order_by(C.c.last_used.desc()).limit(limit)
    with engine.connect() as conn:
        return [(r.name, r.address) for r in conn.execute(q)]


# --------------------------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    address: str
    name: str
    signature: str


def identities(engine: Engine, store, account_id: int) -> list[Identity]:
    """One identity per address the account may send as (``store.addresses_of``), own address first."""
    acct = store.get_account_by_id(account_id)
    addresses = store.addresses_of(account_id)
    with engine.connect() as conn:
        rows = {r.address: r for r in conn.execute(select(ID).where(ID.c.account_id == account_id))}
    out = []
    for addr in addresses:
        r = rows.get(addr)
        if r is not None:
            out.append(Identity(addr, r.name, r.signature))
        elif acct is not None and addr == acct.address:
            out.append(Identity(addr, acct.display_name, acct.signature))
        else:
            out.append(Identity(addr, acct.display_name if acct else "", ""))
    return out


def save_identity(engine: Engine, account_id: int, address: str, name: str, signature: str) -> None:
    with _write(engine) as conn:
        try:
            with conn.begin():
                res = conn.execute(update(ID).where(ID.c.account_id == account_id, ID.c.address == address)
                                   .values(name=name, signature=signature))
                if res.rowcount == 0:
                    conn.execute(ID.insert().values(account_id=account_id, address=address, name=name,
                                                    signature=signature))
        finally:
            conn.info.pop("sqlite_begin", None)
