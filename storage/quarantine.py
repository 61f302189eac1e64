"""The quarantine: held copies per recipient, sender rules, domain admins and used digest links.

Functions over an open transaction (``Store.transaction()``).  Invariants kept here (tests/test_quarantine_store.py):

* A held copy is a ``quarantine`` row naming a durable blob, holding one reference to it (``storage.blobrefs``): the
  recipients of one message share one blob.  It is never a ``messages`` row, so no IMAP or POP3 command can reach
  it and no mailbox quota counts it; the per-account cap (a count of rows) is checked when it is held.
* A release deletes the row and delivers its blob in the same transaction (:func:`release`): of two concurrent
  releases (two nodes on PostgreSQL) exactly one finds the row, the other gets ``NotFound``.  The message row takes
  the reference the quarantine row gave up, so the blob's count is unchanged.
* Expired rows (``expires`` passed) are removed by :func:`expire` (the server's periodic collector) and their blobs
  lose a reference, which the blob collector then removes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection

from storage import blobrefs, checkstate, messages
from storage.blobs import BlobRef
from storage.errors import Invalid, NotFound, QuotaExceeded
from storage.models import (
    Account,
    DomainAdmin,
    Quarantined,
    QuarantineDigest,
    QuarantineSender,
    QuarantineToken,
)
from storage.records import Changed, Delivery
from storage.sql import chunks

Q = Quarantined.__table__
S = QuarantineSender.__table__
DA = DomainAdmin.__table__
T = QuarantineToken.__table__
DG = QuarantineDigest.__table__
A = Account.__table__

ALLOW, BLOCK = "allow", "block"
_SQL_USE_TOKEN = text("INSERT INTO quarantine_tokens (id, used, expires) VALUES (:id, :used, :expires) "
                      "ON CONFLICT (id) DO NOTHING")
_SQL_DIGEST_ROW = text("INSERT INTO quarantine_digests (account_id, enabled, hour, last_sent) "
                       "VALUES (:id, NULL, NULL, 0) ON CONFLICT (account_id) DO NOTHING")
#: The longest search text (sender / subject) a listing takes.
MAX_SEARCH = 200
#: The longest sender rule pattern (an address).
MAX_PATTERN = 320


@dataclass(frozen=True)
class HoldSpec:
    """One recipient's copy to hold (what the pipeline knows at the end of the checks)."""

    account_id: int
    blob: BlobRef
    parsed: dict
    recipient: str
    sender: str
    envelope: dict
    client: dict
    reason: str
    reason_text: str
    facts: Sequence[dict]
    queue_id: str
    arrived: float
    expires: float


@dataclass(frozen=True)
class QuarantineItem:
    """A held copy as callers see it (``envelope``, ``client`` and ``facts`` decoded)."""

    id: int
    account_id: int
    account: str  # the account's address
    blob_id: str
    size: int
    recipient: str
    sender: str
    from_header: str
    subject: str
    reason: str
    reason_text: str
    facts: tuple[dict, ...]
    envelope: dict
    client: dict
    queue_id: str
    arrived: float
    expires: float
    parsed: dict

    @property
    def blob(self) -> BlobRef:
        return BlobRef(self.blob_id, self.size)


def _item(r) -> QuarantineItem:
    return QuarantineItem(r.id, r.account_id, r.address, r.blob_id, r.size, r.recipient, r.sender, r.from_header,
                          r.subject, r.reason, r.reason_text, tuple(json.loads(r.facts)), json.loads(r.envelope),
                          json.loads(r.client), r.queue_id, r.arrived, r.expires, json.loads(r.parsed))


def _select():
    return select(Q, A.c.address).join(A, A.c.id == Q.c.account_id)


# --------------------------------------------------------------------------------------------- held copies


def hold(conn: Connection, specs: Sequence[HoldSpec], cap: int) -> list[int | None]:
    """Hold each copy; its id, or None where the account already holds ``cap`` copies (0 = no cap)."""
    counts: dict[int, int] = {}
    if cap:
        ids = sorted({s.account_id for s in specs})
        counts = dict(conn.execute(select(Q.c.account_id, func.count()).where(Q.c.account_id.in_(ids))
                                   .group_by(Q.c.account_id)).all())
    out: list[int | None] = []
    for s in specs:
        if cap and counts.get(s.account_id, 0) >= cap:
            out.append(None)
            continue
        counts[s.account_id] = counts.get(s.account_id, 0) + 1
        blobrefs.ref(conn, s.blob)
        res = conn.execute(insert(Q).values(
            account_id=s.account_id, blob_id=s.blob.id, size=s.blob.size, parsed=json.dumps(s.parsed),
            recipient=s.recipient, sender=s.sender, from_header=str(s.parsed.get("from_addr") or ""),
            subject=str(s.parsed.get("subject") or ""), envelope=json.dumps(s.envelope), client=json.dumps(s.client),
            reason=s.reason, reason_text=s.reason_text, facts=json.dumps(list(s.facts)), queue_id=s.queue_id,
            arrived=s.arrived, expires=s.expires, digested=False).returning(Q.c.id))
        out.append(res.scalar_one())
    return out


def get(conn: Connection, item_id: int) -> QuarantineItem | None:
    r = conn.execute(_select().where(Q.c.id == item_id)).first()
    return _item(r) if r is not None else None


def _scope(account_ids: Sequence[int] | None, domain_ids: Sequence[int] | None):
    """Copies of these accounts or of these domains' accounts (either; None = no limit)."""
    conds = []
    if account_ids is not None:
        conds.append(Q.c.account_id.in_(list(account_ids)))
    if domain_ids is not None:
        conds.append(A.c.domain_id.in_(list(domain_ids)))
    return [or_(*conds)] if len(conds) == 2 else conds


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def list_items(conn: Connection, *, account_ids: Sequence[int] | None = None,
               domain_ids: Sequence[int] | None = None, text: str = "", offset: int = 0, limit: int = 50
               ) -> tuple[int, list[QuarantineItem]]:
    """Held copies in scope (these accounts' or these domains', or all), newest first; ``text`` matches the envelope sender,
    the From field or the subject without case.  Returns (how many match, this page)."""
    if len(text) > MAX_SEARCH:
        raise Invalid("search text too long")
    conds = _scope(account_ids, domain_ids)
    if text:
        pattern = _like(text)
        conds.append(or_(*(func.lower(c).like(pattern, escape="\\") for c in (Q.c.sender, Q.c.from_header,
                                                                              Q.c.subject))))
    where = and_(*conds) if conds else None
    count_q = select(func.count()).select_from(Q.join(A, A.c.id == Q.c.account_id))
    page_q = _select().order_by(Q.c.arrived.desc(), Q.c.id.desc()).offset(max(0, offset)).limit(max(1, limit))
    if where is not None:
        count_q, page_q = count_q.where(where), page_q.where(where)
    total = conn.execute(count_q).scalar_one()
    return total, [_item(r) for r in conn.execute(page_q)]


def count(conn: Connection, account_id: int) -> int:
    return conn.execute(select(func.count()).where(Q.c.account_id == account_id)).scalar_one()


def _remove_rows(conn: Connection, rows) -> list[QuarantineItem]:
    items = [_item(r) for r in rows]
    for chunk in chunks([i.id for i in items]):
        conn.execute(delete(Q).where(Q.c.id.in_(chunk)))
    blobrefs.unref(conn, blobrefs.count(i.blob_id for i in items))
    return items


def delete_items(conn: Connection, item_ids: Sequence[int]) -> list[QuarantineItem]:
    """Remove these held copies (those still there); returns what was removed."""
    out = []
    for chunk in chunks(list(item_ids)):
        rows = conn.execute(_select().where(Q.c.id.in_(chunk))).all()
        out += _remove_rows(conn, rows)
    return out


def expire(conn: Connection, now: float) -> list[QuarantineItem]:
    """Remove every held copy whose retention ended; returns them (the collector logs them)."""
    conn.execute(delete(T).where(T.c.expires < now))  # used links of expired copies can no longer matter
    return _remove_rows(conn, conn.execute(_select().where(Q.c.expires <= now)).all())


def forget_account(conn: Connection, account_id: int) -> None:
    """An account is removed: its held copies go (their blobs lose a reference), and its rules."""
    _remove_rows(conn, conn.execute(_select().where(Q.c.account_id == account_id)).all())
    conn.execute(delete(S).where(S.c.account_id == account_id))
    conn.execute(delete(DA).where(DA.c.account_id == account_id))
    conn.execute(delete(DG).where(DG.c.account_id == account_id))


def forget_domain(conn: Connection, domain_id: int) -> None:
    conn.execute(delete(DA).where(DA.c.domain_id == domain_id))


def release(conn: Connection, item_id: int, mailbox: str = "INBOX", *, check_quota: bool = True) -> Changed:
    """Deliver a held copy into the account's ``mailbox`` and remove it, in this one transaction; ``value`` is
    (QuarantineItem, DeliveryResult).  Raises NotFound when it is no longer held (released or deleted, here or by
    another node) and QuotaExceeded when the mailbox quota has no room (the copy stays held)."""
    r = conn.execute(_select().where(Q.c.id == item_id)).first()
    if r is None:
        raise NotFound("no such quarantined message")
    # The DELETE is the claim: a concurrent release waits for this row lock and then deletes nothing.
    if conn.execute(delete(Q).where(Q.c.id == item_id)).rowcount != 1:
        raise NotFound("no such quarantined message")
    item = _item(r)
    changed = messages.deliver_batch(conn, [Delivery(item.account_id, item.blob, item.parsed, mailbox,
                                                     check_quota=check_quota)])
    result = changed.value[0]
    if not result.ok:
        if result.error == "overquota":
            raise QuotaExceeded("mailbox full")
        raise NotFound("the account is gone")
    blobrefs.unref(conn, {item.blob_id: 1})  # the message row holds the reference the quarantine row gave up
    return Changed((item, result), changed.changes)


def referenced(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(select(Q.c.blob_id).distinct())}


# --------------------------------------------------------------------------------------------- digests


def pending_digest(conn: Connection, account_ids: Sequence[int] | None = None) -> dict[int, list[QuarantineItem]]:
    """Held copies not yet listed in a digest, by account (all, or these accounts), newest first."""
    q = _select().where(Q.c.digested.is_(False))
    if account_ids is not None:
        q = q.where(Q.c.account_id.in_(list(account_ids)))
    out: dict[int, list[QuarantineItem]] = {}
    for r in conn.execute(q.order_by(Q.c.arrived.desc(), Q.c.id.desc())):
        out.setdefault(r.account_id, []).append(_item(r))
    return out


@dataclass(frozen=True)
class DigestSetting:
    """An account's own digest setting: ``enabled``/``hour`` None = its domain's or the server's."""

    account_id: int
    enabled: bool | None = None
    hour: int | None = None
    last_sent: float = 0.0


def digest_settings(conn: Connection, account_ids: Sequence[int]) -> dict[int, DigestSetting]:
    """The stored settings of these accounts (an account without a row has the defaults)."""
    out = {i: DigestSetting(i) for i in account_ids}
    for chunk in chunks(list(account_ids)):
        for r in conn.execute(select(DG).where(DG.c.account_id.in_(chunk))):
            out[r.account_id] = DigestSetting(r.account_id, r.enabled, r.hour, r.last_sent)
    return out


def _digest_row(conn: Connection, account_id: int) -> None:
    """Make sure the account has its ``quarantine_digests`` row (concurrent callers: one inserts, none fails)."""
    conn.execute(_SQL_DIGEST_ROW, {"id": account_id})


def set_digest_setting(conn: Connection, account_id: int, enabled: bool | None, hour: int | None) -> None:
    if hour is not None and not 0 <= hour <= 23:
        raise Invalid("the digest hour is 0 to 23")
    _digest_row(conn, account_id)
    conn.execute(update(DG).where(DG.c.account_id == account_id).values(enabled=enabled, hour=hour))


def claim_digest(conn: Connection, account_id: int, item_ids: Sequence[int], now: float, since: float) -> bool:
    """Claim this account's digest run: True (and ``last_sent`` = now, the items marked digested) unless a digest
    was sent at or after ``since`` (another node, or an earlier run, already did it).  The conditional UPDATE is the
    claim: of two nodes at once, the second waits for the first's row lock and then finds ``last_sent`` moved."""
    _digest_row(conn, account_id)
    n = conn.execute(update(DG).where(DG.c.account_id == account_id, DG.c.last_sent < since)
                     .values(last_sent=now)).rowcount
    if n != 1:
        return False
    mark_digested(conn, item_ids)
    return True


def mark_digested(conn: Connection, item_ids: Sequence[int]) -> None:
    for chunk in chunks(list(item_ids)):
        conn.execute(update(Q).where(Q.c.id.in_(chunk)).values(digested=True))


def use_token(conn: Connection, token_id: str, expires: float) -> bool:
    """Record a digest link's use; False when it was used before (each link acts once)."""
    res = conn.execute(_SQL_USE_TOKEN, {"id": token_id, "used": time.time(), "expires": expires})
    return res.rowcount == 1


# --------------------------------------------------------------------------------------------- sender rules


def check_sender_pattern(text: str) -> str:
    """A sender rule's pattern, lower-cased: an address ``local@domain`` or a whole domain ``@domain``."""
    address = text.strip().lower()
    local, at, domain = address.rpartition("@")
    if (not at or not domain or len(address) > MAX_PATTERN or "." not in domain.strip(".")
            or any(c.isspace() or c in "<>,;\"()[]" for c in address) or "@" in local):
        raise Invalid("expected an address (name@example.com) or a domain (@example.com)")
    return address


def rule_for(rules: dict[str, str], address: str) -> str | None:
    """The rule that applies to ``address``: its own, else its domain's (``@domain``), else None."""
    address = address.lower()
    if address in rules:
        return rules[address]
    return rules.get("@" + address.rpartition("@")[2]) if "@" in address else None


def set_sender_rule(conn: Connection, account_id: int, address: str, rule: str | None) -> None:
    """Allow or block ``address`` (or a whole domain, ``@example.com``) for this account (None: forget the rule)."""
    if rule not in (ALLOW, BLOCK, None):
        raise Invalid(f"unknown sender rule {rule!r}")
    address = address.strip().lower() if rule is None else check_sender_pattern(address)
    if not address or len(address) > MAX_PATTERN:
        raise Invalid("bad sender address")
    conn.execute(delete(S).where(S.c.account_id == account_id, S.c.address == address))
    if rule is not None:
        conn.execute(insert(S).values(account_id=account_id, address=address, rule=rule, created=time.time()))
    checkstate.bump(conn, account_id, checkstate.RULES)  # every process's copy of the rules is old now


def sender_rules(conn: Connection, account_id: int, addresses: Sequence[str] | None = None) -> dict[str, str]:
    """The account's rules (address or ``@domain`` -> allow/block): all, or those that apply to these addresses
    (their own and their domains'; :func:`rule_for` picks the one that wins)."""
    if addresses is not None:
        wanted = {a.lower() for a in addresses}
        wanted |= {"@" + a.rpartition("@")[2] for a in wanted if "@" in a}
        # One statement built once (the inbound spam policy asks this for every recipient of every message).
        return dict(conn.execute(_RULES_OF, {"account": account_id, "wanted": sorted(wanted)}).all())
    return dict(conn.execute(select(S.c.address, S.c.rule).where(S.c.account_id == account_id)).all())


_RULES_OF = select(S.c.address, S.c.rule).where(S.c.account_id == bindparam("account"),
                                                 S.c.address.in_(bindparam("wanted", expanding=True)))


# --------------------------------------------------------------------------------------------- domain admins


def set_domain_admin(conn: Connection, account_id: int, domain_id: int, admin: bool) -> None:
    conn.execute(delete(DA).where(DA.c.account_id == account_id, DA.c.domain_id == domain_id))
    if admin:
        conn.execute(insert(DA).values(account_id=account_id, domain_id=domain_id))


def domain_admins(conn: Connection, domain_id: int | None = None) -> list[tuple[str, int]]:
    """(account address, domain id) of every domain admin (of one domain)."""
    q = select(A.c.address, DA.c.domain_id).join(A, A.c.id == DA.c.account_id)
    if domain_id is not None:
        q = q.where(DA.c.domain_id == domain_id)
    return [(r[0], r[1]) for r in conn.execute(q.order_by(A.c.address))]


def admin_domains(conn: Connection, account_id: int) -> list[int]:
    """The domains (ids) this account administers."""
    return [r[0] for r in conn.execute(select(DA.c.domain_id).where(DA.c.account_id == account_id))]
