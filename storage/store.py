"""The mailbox store: synchronous units of work over SQLAlchemy Core.

Every public method is one transaction and returns plain frozen dataclasses (never lazy ORM objects), so callers can use
the results on any thread.  Methods that change mailboxes or messages return :class:`Changed` (``value`` and the
``changes`` they caused); the caller publishes the changes after the commit (``mailserver.asyncstore`` does it).

Call these methods from database thread pools only (``mailserver.asyncstore.AsyncStore``), never the reactor thread.

Invariants kept here (and tested in tests/test_store.py):

* UIDs in a mailbox are strictly ascending and never reused: ``uid_next`` only grows, under the mailbox row's write lock
  (``UPDATE … RETURNING``), so concurrent deliveries from several threads or processes cannot hand out one UID twice.
* ``uid_validity`` changes only when a mailbox name is (re-)created: it comes from a per-account sequence.
* ``highest_modseq`` rises on every change of a mailbox; each changed message carries the new modseq (RFC 7162).
* A message row only ever names a blob that is already durable (the blob store's ``finish()`` runs before the commit).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from sqlalchemy import and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from storage import changes as ch
from storage.blobs import BlobRef, BlobStore
from storage.changes import Change
from storage.db import is_sqlite
from storage.models import (
    FLAG_DELETED,
    FLAG_SEEN,
    Account,
    Alias,
    Blob,
    Domain,
    Expunged,
    Mailbox,
    Message,
    QueuedMessage,
    QueueRecipient,
    Subscription,
)
from storage.queueid import new_queue_id

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
_CHUNK = 500  # ids per IN (...) clause

# Columns of `messages` that come from the MIME parse (mailserver.mime.ParsedMessage.to_json()).
PARSED_COLUMNS = ("envelope", "bodystructure", "header_size", "subject", "from_addr", "to_addr", "cc_addr", "date_sent",
                  "message_id", "in_reply_to", "references", "preview", "has_attachment")


# --------------------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of the store's expected failures; ``code`` is a short machine-readable reason."""

    code = "error"


class NotFound(StoreError):
    code = "nonexistent"


class AlreadyExists(StoreError):
    code = "alreadyexists"


class QuotaExceeded(StoreError):
    code = "overquota"


class HasChildren(StoreError):
    code = "haschildren"


class Invalid(StoreError):
    code = "invalid"


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DomainInfo:
    id: int
    name: str
    mode: str
    relay_to: str


@dataclass(frozen=True)
class AccountInfo:
    id: int
    address: str
    domain_id: int
    password_hash: str
    display_name: str
    quota_bytes: int
    used_bytes: int
    enabled: bool
    signature: str


@dataclass(frozen=True)
class AliasInfo:
    address: str
    target: str


@dataclass(frozen=True)
class MailboxInfo:
    id: int
    account_id: int
    name: str
    special_use: str
    subscribed: bool
    uid_validity: int
    uid_next: int
    highest_modseq: int
    message_count: int
    unseen_count: int
    total_size: int
    keywords: tuple[str, ...]


class MessageMeta(NamedTuple):
    """What a SELECT needs per message: cheap to load for 100,000 messages (a tuple, so building one is cheap)."""

    uid: int
    modseq: int
    flags: int
    keywords: tuple[str, ...]
    size: int
    internal_date: float


@dataclass(frozen=True)
class MessageInfo:
    id: int
    mailbox_id: int
    uid: int
    modseq: int
    flags: int
    keywords: tuple[str, ...]
    internal_date: float
    size: int
    blob_id: str
    envelope: str
    bodystructure: str
    header_size: int
    subject: str
    from_addr: str
    to_addr: str
    cc_addr: str
    date_sent: float
    message_id: str
    in_reply_to: str
    references: str
    preview: str
    has_attachment: bool
    thread_id: int


@dataclass(frozen=True)
class Changed:
    """A mutation's result: its value and the change events to publish after commit."""

    value: Any
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """One message for one account, as handed to :meth:`Store.deliver_batch`."""

    account_id: int
    blob: BlobRef
    parsed: dict  # PARSED_COLUMNS -> values (mailserver.mime.ParsedMessage.to_json())
    mailbox: str = "INBOX"
    flags: int = 0
    keywords: tuple[str, ...] = ()
    internal_date: float | None = None
    check_quota: bool = True
    #: Exactly this mailbox (IMAP APPEND): no fall-back to INBOX; a missing one fails with "nonexistent".
    mailbox_id: int | None = None


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    mailbox_id: int = 0
    uid: int = 0
    error: str = ""  # "" | "overquota" | "nonexistent" (no such account or mailbox) | "error"
    uid_validity: int = 0


@dataclass(frozen=True)
class FlagUpdate:
    uid: int
    modseq: int
    flags: int
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class StoreFlagsResult:
    updated: list[FlagUpdate]
    #: UIDs not changed because their modseq was above UNCHANGEDSINCE (RFC 7162 3.1.3).
    modified: list[int]


@dataclass(frozen=True)
class CopyResult:
    uid_validity: int
    pairs: list[tuple[int, int]]  # (source uid, destination uid)


@dataclass(frozen=True)
class QueueRecipientSpec:
    recipient: str
    orcpt: str = ""
    notify: str = ""
    route: str = ""  # "" = MX lookup; "host:port" = relay


# --------------------------------------------------------------------------------------------- helpers

_ADDR_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^[^@\s]+@[A-Za-z0-9-]+$")


def normalize_address(address: str) -> str:
    return address.strip().lower()


def split_keywords(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def join_keywords(keywords: Iterable[str]) -> str:
    seen: dict[str, None] = {}
    for k in keywords:
        if k.lower() not in (x.lower() for x in seen):
            seen[k] = None
    return " ".join(seen)


def normalize_mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 5.1); strip leading/trailing separators."""
    name = name.strip(SEPARATOR)
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX" + SEPARATOR):
        return "INBOX" + name[5:]
    return name


def check_mailbox_name(name: str) -> str:
    name = normalize_mailbox_name(name)
    if not name or len(name.encode()) > MAX_MAILBOX_NAME:
        raise Invalid("mailbox name empty or too long")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_MAILBOX_DEPTH or any(p == "" for p in parts):
        raise Invalid("mailbox name has empty or too many levels")
    if any(c in name for c in "\r\n\0*%") or any(ord(c) < 0x20 for c in name):
        raise Invalid("mailbox name contains a forbidden character")
    return name


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
    import hashlib

    return int.from_bytes(hashlib.blake2b(root.strip().lower().encode("utf-8", "replace"), digest_size=7).digest(),
                          "big") or 1


def _chunks(seq: Sequence[int], n: int = _CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _mailbox_info(row) -> MailboxInfo:
    return MailboxInfo(row.id, row.account_id, row.name, row.special_use, bool(row.subscribed), row.uid_validity,
                       row.uid_next, row.highest_modseq, row.message_count, row.unseen_count, row.total_size,
                       split_keywords(row.keywords))


def _account_info(row) -> AccountInfo:
    return AccountInfo(row.id, row.address, row.domain_id, row.password_hash, row.display_name, row.quota_bytes,
                       row.used_bytes, bool(row.enabled), row.signature)


def _message_info(row) -> MessageInfo:
    return MessageInfo(row.id, row.mailbox_id, row.uid, row.modseq, row.flags, split_keywords(row.keywords),
                       row.internal_date, row.size, row.blob_id, row.envelope, row.bodystructure, row.header_size,
                       row.subject, row.from_addr, row.to_addr, row.cc_addr, row.date_sent, row.message_id,
                       row.in_reply_to, row.references, row.preview, bool(row.has_attachment), row.thread_id)


# Hot-path statements (delivery), prepared once: building SQLAlchemy constructs per message costs more than the SQL.
_SQL_ACCOUNTS = text("SELECT id, used_bytes, quota_bytes FROM accounts WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True))
_SQL_MAILBOXES = text("SELECT id, account_id, name FROM mailboxes WHERE account_id IN :ids").bindparams(
    bindparam("ids", expanding=True))
_SQL_BUMP_ADD = text(
    "UPDATE mailboxes SET uid_next = uid_next + :n, highest_modseq = highest_modseq + 1, "
    "message_count = message_count + :n, unseen_count = unseen_count + :unseen, total_size = total_size + :size "
    "WHERE id = :id RETURNING uid_next, highest_modseq, uid_validity")
_SQL_BLOB_UPSERT = text(
    "INSERT INTO blobs (id, size, refcount, data, created) VALUES (:id, :size, :n, NULL, :now) "
    "ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + excluded.refcount, created = excluded.created")
_SQL_ACCOUNT_USED = text("UPDATE accounts SET used_bytes = used_bytes + :size WHERE id = :id")

_SQL_LIST_MESSAGES = {
    True: "SELECT uid, modseq, flags, keywords, size, internal_date FROM messages WHERE mailbox_id = ? ORDER BY uid",
    False: "SELECT uid, modseq, flags, keywords, size, internal_date FROM messages WHERE mailbox_id = %s ORDER BY uid",
}

SUB = Subscription.__table__
M = Message.__table__
MB = Mailbox.__table__
A = Account.__table__
B = Blob.__table__


class Store:
    def __init__(self, engine: Engine, blobs: BlobStore):
        self.engine = engine
        self.blobs = blobs
        self.sqlite = is_sqlite(str(engine.url))

    # ----------------------------------------------------------------------------------------- transactions

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        """One transaction.  Methods that commit metadata naming new blobs call ``blobs.ensure_synced`` first."""
        with self.engine.connect() as conn:
            if self.sqlite and write:
                conn.info["sqlite_begin"] = "IMMEDIATE"
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("sqlite_begin", None)

    def _read(self):
        return self._tx(write=False)

    def _blob_ref(self, conn: Connection, blob: BlobRef, n: int = 1) -> None:
        """Count ``n`` more references to ``blob`` (creating its row for the file backend)."""
        res = conn.execute(update(B).where(B.c.id == blob.id).values(refcount=B.c.refcount + n, created=time.time()))
        if res.rowcount == 0:
            conn.execute(insert(B).values(id=blob.id, size=blob.size, refcount=n, data=None, created=time.time()))

    def _blob_unref(self, conn: Connection, counts: dict[str, int]) -> None:
        for blob_id, n in counts.items():
            conn.execute(update(B).where(B.c.id == blob_id).values(refcount=B.c.refcount - n))

    # ----------------------------------------------------------------------------------------- domains

    def add_domain(self, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
        name = name.strip().lower().rstrip(".")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", name):
            raise Invalid(f"not a valid domain name: {name!r}")
        if mode not in ("local", "relay"):
            raise Invalid("mode must be local or relay")
        if mode == "relay" and not relay_to:
            raise Invalid("a relay domain needs relay_to")
        with self._tx() as conn:
            if conn.execute(select(Domain.id).where(Domain.name == name)).first():
                raise AlreadyExists(f"domain {name} exists")
            did = conn.execute(insert(Domain).values(name=name, mode=mode, relay_to=relay_to,
                                                     created=time.time())).inserted_primary_key[0]
        return DomainInfo(did, name, mode, relay_to)

    def ensure_domain(self, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
        """Create or update a domain declared in the config."""
        name = name.strip().lower().rstrip(".")
        with self._tx() as conn:
            row = conn.execute(select(Domain).where(Domain.name == name)).first()
            if row is not None:
                conn.execute(update(Domain).where(Domain.id == row.id).values(mode=mode, relay_to=relay_to))
                return DomainInfo(row.id, name, mode, relay_to)
        return self.add_domain(name, mode, relay_to)

    def get_domain(self, name: str) -> DomainInfo | None:
        with self._read() as conn:
            row = conn.execute(select(Domain).where(Domain.name == name.strip().lower().rstrip("."))).first()
        return DomainInfo(row.id, row.name, row.mode, row.relay_to) if row else None

    def list_domains(self) -> list[DomainInfo]:
        with self._read() as conn:
            rows = conn.execute(select(Domain).order_by(Domain.name)).all()
        return [DomainInfo(r.id, r.name, r.mode, r.relay_to) for r in rows]

    def remove_domain(self, name: str) -> None:
        name = name.strip().lower()
        with self._tx() as conn:
            row = conn.execute(select(Domain.id).where(Domain.name == name)).first()
            if row is None:
                raise NotFound(f"no domain {name}")
            n = conn.execute(select(func.count()).select_from(A).where(A.c.domain_id == row.id)).scalar()
            if n:
                raise Invalid(f"domain {name} still has {n} account(s); remove them first")
            conn.execute(delete(Alias).where(Alias.address.like(f"%@{name}")))
            conn.execute(delete(Domain).where(Domain.id == row.id))

    # ----------------------------------------------------------------------------------------- accounts

    def add_account(self, address: str, password_hash: str, display_name: str = "", quota_bytes: int = 0
                    ) -> AccountInfo:
        address = normalize_address(address)
        if not _ADDR_RE.match(address) or len(address) > 320:
            raise Invalid(f"malformed address: {address!r}")
        local, domain = address.rsplit("@", 1)
        now = time.time()
        with self._tx() as conn:
            drow = conn.execute(select(Domain.id, Domain.mode).where(Domain.name == domain)).first()
            if drow is None:
                raise NotFound(f"unknown domain {domain} (add it first: mailserver domain add {domain})")
            if conn.execute(select(A.c.id).where(A.c.address == address)).first():
                raise AlreadyExists(f"account {address} exists")
            aid = conn.execute(insert(A).values(address=address, domain_id=drow.id, password_hash=password_hash,
                                                display_name=display_name, quota_bytes=quota_bytes, used_bytes=0,
                                                enabled=True, signature="", uid_validity_seq=0,
                                                created=now)).inserted_primary_key[0]
            for name, special in DEFAULT_MAILBOXES:
                self._create_mailbox_row(conn, aid, name, special)
            row = conn.execute(select(A).where(A.c.id == aid)).first()
        return _account_info(row)

    def get_account(self, address: str) -> AccountInfo | None:
        with self._read() as conn:
            row = conn.execute(select(A).where(A.c.address == normalize_address(address))).first()
        return _account_info(row) if row else None

    def get_account_by_id(self, account_id: int) -> AccountInfo | None:
        with self._read() as conn:
            row = conn.execute(select(A).where(A.c.id == account_id)).first()
        return _account_info(row) if row else None

    def list_accounts(self, domain: str | None = None) -> list[AccountInfo]:
        q = select(A).order_by(A.c.address)
        if domain:
            q = q.where(A.c.address.like(f"%@{domain.lower()}"))
        with self._read() as conn:
            return [_account_info(r) for r in conn.execute(q).all()]

    def remove_account(self, address: str) -> None:
        address = normalize_address(address)
        with self._tx() as conn:
            row = conn.execute(select(A.c.id).where(A.c.address == address)).first()
            if row is None:
                raise NotFound(f"no account {address}")
            counts = self._blob_counts(conn, select(M.c.blob_id).join(MB, MB.c.id == M.c.mailbox_id)
                                       .where(MB.c.account_id == row.id))
            self._blob_unref(conn, counts)
            mids = [r.id for r in conn.execute(select(MB.c.id).where(MB.c.account_id == row.id))]
            for chunk in _chunks(mids):
                conn.execute(delete(M).where(M.c.mailbox_id.in_(chunk)))
                conn.execute(delete(Expunged).where(Expunged.mailbox_id.in_(chunk)))
            conn.execute(delete(MB).where(MB.c.account_id == row.id))
            conn.execute(delete(A).where(A.c.id == row.id))

    def set_password_hash(self, account_id: int, password_hash: str) -> None:
        with self._tx() as conn:
            conn.execute(update(A).where(A.c.id == account_id).values(password_hash=password_hash))

    def update_account(self, account_id: int, **values) -> AccountInfo:
        allowed = {"display_name", "signature", "quota_bytes", "enabled", "password_hash"}
        bad = set(values) - allowed
        if bad:
            raise Invalid(f"cannot update {sorted(bad)}")
        with self._tx() as conn:
            conn.execute(update(A).where(A.c.id == account_id).values(**values))
            row = conn.execute(select(A).where(A.c.id == account_id)).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return _account_info(row)

    def set_quota(self, address: str, quota_bytes: int) -> AccountInfo:
        acct = self.get_account(address)
        if acct is None:
            raise NotFound(f"no account {address}")
        return self.update_account(acct.id, quota_bytes=quota_bytes)

    # ----------------------------------------------------------------------------------------- aliases

    def add_alias(self, address: str, target: str) -> AliasInfo:
        address, target = normalize_address(address), target.strip()
        if not (address.startswith("@") or _ADDR_RE.match(address)):
            raise Invalid(f"malformed alias address: {address!r}")
        if not _ADDR_RE.match(target):
            raise Invalid(f"malformed target address: {target!r}")
        domain = address.rsplit("@", 1)[1]
        with self._tx() as conn:
            if conn.execute(select(Domain.id).where(Domain.name == domain)).first() is None:
                raise NotFound(f"unknown domain {domain}")
            if conn.execute(select(Alias.id).where(Alias.address == address, Alias.target == target)).first():
                raise AlreadyExists(f"alias {address} -> {target} exists")
            conn.execute(insert(Alias).values(address=address, target=target, created=time.time()))
        return AliasInfo(address, target)

    def remove_alias(self, address: str, target: str | None = None) -> int:
        q = delete(Alias).where(Alias.address == normalize_address(address))
        if target:
            q = q.where(Alias.target == target.strip())
        with self._tx() as conn:
            n = conn.execute(q).rowcount
        if not n:
            raise NotFound(f"no alias {address}" + (f" -> {target}" if target else ""))
        return n

    def list_aliases(self, domain: str | None = None) -> list[AliasInfo]:
        q = select(Alias.address, Alias.target).order_by(Alias.address, Alias.target)
        if domain:
            q = q.where(Alias.address.like(f"%@{domain.lower()}"))
        with self._read() as conn:
            return [AliasInfo(r.address, r.target) for r in conn.execute(q)]

    def alias_targets(self, address: str) -> list[str]:
        """Targets of the alias ``address`` (exact match; pass "@domain" for the catch-all)."""
        with self._read() as conn:
            return [r.target for r in conn.execute(select(Alias.target).where(
                Alias.address == normalize_address(address)).order_by(Alias.id))]

    def addresses_of(self, account_id: int) -> list[str]:
        """The account's own address and every alias that points only at it (the identities it may send as)."""
        with self._read() as conn:
            row = conn.execute(select(A.c.address).where(A.c.id == account_id)).first()
            if row is None:
                return []
            own = row.address
            aliases = [r.address for r in conn.execute(select(Alias.address).where(Alias.target == own))
                       if not r.address.startswith("@")]
        return [own] + sorted(set(aliases))

    # ----------------------------------------------------------------------------------------- mailboxes

    def _next_uid_validity(self, conn: Connection, account_id: int) -> int:
        row = conn.execute(select(A.c.uid_validity_seq).where(A.c.id == account_id)).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        value = max(int(time.time()), (row.uid_validity_seq or 0) + 1)
        value = min(value, 2**32 - 1)  # RFC 9051: nz-number fits in 32 bits
        conn.execute(update(A).where(A.c.id == account_id).values(uid_validity_seq=value))
        return value

    def _subscribe(self, conn: Connection, account_id: int, name: str) -> None:
        if conn.execute(select(SUB.c.id).where(SUB.c.account_id == account_id, SUB.c.name == name)).first() is None:
            conn.execute(insert(SUB).values(account_id=account_id, name=name))

    def _create_mailbox_row(self, conn: Connection, account_id: int, name: str, special_use: str = "",
                            subscribed: bool = True) -> int:
        uv = self._next_uid_validity(conn, account_id)
        if subscribed:
            self._subscribe(conn, account_id, name)
        else:  # a name subscribed before (and deleted since) is still subscribed
            subscribed = conn.execute(select(SUB.c.id).where(SUB.c.account_id == account_id,
                                                             SUB.c.name == name)).first() is not None
        return conn.execute(insert(MB).values(account_id=account_id, name=name, special_use=special_use,
                                              subscribed=subscribed, uid_validity=uv, uid_next=1, highest_modseq=1,
                                              keywords="", message_count=0, unseen_count=0,
                                              total_size=0)).inserted_primary_key[0]

    def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        with self._read() as conn:
            rows = conn.execute(select(MB).where(MB.c.account_id == account_id).order_by(MB.c.name)).all()
        return [_mailbox_info(r) for r in rows]

    def large_mailboxes(self, min_messages: int, limit: int) -> list[MailboxInfo]:
        """The largest mailboxes of every account (at least ``min_messages`` messages), largest first."""
        with self._read() as conn:
            rows = conn.execute(select(MB).where(MB.c.message_count >= min_messages)
                                .order_by(MB.c.message_count.desc()).limit(limit)).all()
        return [_mailbox_info(r) for r in rows]

    def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        with self._read() as conn:
            row = conn.execute(select(MB).where(MB.c.account_id == account_id,
                                                MB.c.name == normalize_mailbox_name(name))).first()
        return _mailbox_info(row) if row else None

    def get_mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None:
        with self._read() as conn:
            row = conn.execute(select(MB).where(MB.c.id == mailbox_id)).first()
        return _mailbox_info(row) if row else None

    def create_mailbox(self, account_id: int, name: str, special_use: str = "", *,
                       subscribed: bool = True) -> Changed:
        """Create ``name`` and any missing parents (RFC 9051 6.3.4).  ``value`` is the MailboxInfo.

        ``subscribed`` applies to the new mailbox and to the parents created with it: IMAP CREATE passes False
        (RFC 9051 6.3.4 creates, it does not subscribe); webmail and default folders keep the default."""
        name = check_mailbox_name(name)
        changes = []
        with self._tx() as conn:
            if conn.execute(select(MB.c.id).where(MB.c.account_id == account_id, MB.c.name == name)).first():
                raise AlreadyExists(f"mailbox {name} exists")
            if special_use and conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                                  MB.c.special_use == special_use)).first():
                raise AlreadyExists(f"a mailbox with {special_use} exists")
            parts = name.split(SEPARATOR)
            for i in range(1, len(parts)):
                parent = SEPARATOR.join(parts[:i])
                if not conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                          MB.c.name == parent)).first():
                    pid = self._create_mailbox_row(conn, account_id, parent, subscribed=subscribed)
                    changes.append(Change(ch.MAILBOX_CREATE, account_id, pid, name=parent))
            mid = self._create_mailbox_row(conn, account_id, name, special_use, subscribed=subscribed)
            changes.append(Change(ch.MAILBOX_CREATE, account_id, mid, name=name))
            row = conn.execute(select(MB).where(MB.c.id == mid)).first()
        return Changed(_mailbox_info(row), changes)

    def delete_mailbox(self, account_id: int, name: str) -> Changed:
        """Delete a mailbox and its messages.  INBOX cannot be deleted; a mailbox with children raises HasChildren."""
        name = normalize_mailbox_name(name)
        if name == "INBOX":
            raise Invalid("INBOX cannot be deleted")  # RFC 9051 6.3.5
        with self._tx() as conn:
            row = conn.execute(select(MB).where(MB.c.account_id == account_id, MB.c.name == name)).first()
            if row is None:
                raise NotFound(f"no mailbox {name}")
            if conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                  MB.c.name.like(_like_prefix(name + SEPARATOR), escape="\\"))
                            ).first():
                raise HasChildren(f"mailbox {name} has children")
            counts = self._blob_counts(conn, select(M.c.blob_id).where(M.c.mailbox_id == row.id))
            self._blob_unref(conn, counts)
            conn.execute(update(A).where(A.c.id == account_id).values(
                used_bytes=func.max(A.c.used_bytes - row.total_size, 0) if self.sqlite
                else func.greatest(A.c.used_bytes - row.total_size, 0)))
            conn.execute(delete(M).where(M.c.mailbox_id == row.id))
            conn.execute(delete(Expunged).where(Expunged.mailbox_id == row.id))
            conn.execute(delete(MB).where(MB.c.id == row.id))
        return Changed(None, [Change(ch.MAILBOX_DELETE, account_id, row.id, name=name)])

    def rename_mailbox(self, account_id: int, old: str, new: str) -> Changed:
        """Rename ``old`` (and its children) to ``new``.

        RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox and leaves INBOX empty (and existing).
        """
        old = normalize_mailbox_name(old)
        new = check_mailbox_name(new)
        if new == "INBOX":
            raise AlreadyExists("INBOX exists")
        changes: list[Change] = []
        with self._tx() as conn:
            src = conn.execute(select(MB).where(MB.c.account_id == account_id, MB.c.name == old)).first()
            if src is None:
                raise NotFound(f"no mailbox {old}")
            if conn.execute(select(MB.c.id).where(MB.c.account_id == account_id, MB.c.name == new)).first():
                raise AlreadyExists(f"mailbox {new} exists")
            if new.startswith(old + SEPARATOR):
                raise Invalid("cannot rename a mailbox into its own child")
            # Missing parents of the new name are created.
            parts = new.split(SEPARATOR)
            for i in range(1, len(parts)):
                parent = SEPARATOR.join(parts[:i])
                if not conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                          MB.c.name == parent)).first():
                    pid = self._create_mailbox_row(conn, account_id, parent)
                    changes.append(Change(ch.MAILBOX_CREATE, account_id, pid, name=parent))
            if old == "INBOX":
                dst_id = self._create_mailbox_row(conn, account_id, new)
                # Move every message: same UIDs are fine in the new mailbox, which has its own UIDVALIDITY.
                conn.execute(update(M).where(M.c.mailbox_id == src.id).values(mailbox_id=dst_id))
                conn.execute(update(MB).where(MB.c.id == dst_id).values(
                    uid_next=src.uid_next, highest_modseq=src.highest_modseq, message_count=src.message_count,
                    unseen_count=src.unseen_count, total_size=src.total_size, keywords=src.keywords))
                new_modseq = src.highest_modseq + 1
                uids = [r.uid for r in conn.execute(select(M.c.uid).where(M.c.mailbox_id == dst_id))]
                conn.execute(update(MB).where(MB.c.id == src.id).values(
                    message_count=0, unseen_count=0, total_size=0, highest_modseq=new_modseq))
                for uid in uids:
                    conn.execute(insert(Expunged).values(mailbox_id=src.id, uid=uid, modseq=new_modseq))
                    changes.append(Change(ch.EXPUNGE, account_id, src.id, uid=uid, modseq=new_modseq))
                changes.append(Change(ch.MAILBOX_CREATE, account_id, dst_id, name=new))
                return Changed(None, changes)
            children = conn.execute(select(MB.c.id, MB.c.name).where(
                MB.c.account_id == account_id,
                MB.c.name.like(_like_prefix(old + SEPARATOR), escape="\\"))).all()
            for _cid, cname in children:
                target = new + cname[len(old):]
                if conn.execute(select(MB.c.id).where(MB.c.account_id == account_id, MB.c.name == target)).first():
                    raise AlreadyExists(f"mailbox {target} exists")
            conn.execute(update(MB).where(MB.c.id == src.id).values(name=new))
            self._move_subscription(conn, account_id, old, new)
            changes.append(Change(ch.MAILBOX_RENAME, account_id, src.id, name=new, old_name=old))
            for cid, cname in children:
                target = new + cname[len(old):]
                conn.execute(update(MB).where(MB.c.id == cid).values(name=target))
                self._move_subscription(conn, account_id, cname, target)
                changes.append(Change(ch.MAILBOX_RENAME, account_id, cid, name=target, old_name=cname))
        return Changed(None, changes)

    def _move_subscription(self, conn: Connection, account_id: int, old: str, new: str) -> None:
        if conn.execute(select(SUB.c.id).where(SUB.c.account_id == account_id, SUB.c.name == old)).first():
            conn.execute(delete(SUB).where(SUB.c.account_id == account_id, SUB.c.name == new))
            conn.execute(update(SUB).where(SUB.c.account_id == account_id, SUB.c.name == old).values(name=new))

    def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> Changed:
        """SUBSCRIBE / UNSUBSCRIBE ``name``; the mailbox need not exist (RFC 9051 6.3.7)."""
        name = check_mailbox_name(name)
        with self._tx() as conn:
            if subscribed:
                self._subscribe(conn, account_id, name)
            else:
                conn.execute(delete(SUB).where(SUB.c.account_id == account_id, SUB.c.name == name))
            row = conn.execute(select(MB.c.id).where(MB.c.account_id == account_id, MB.c.name == name)).first()
            if row is not None:
                conn.execute(update(MB).where(MB.c.id == row.id).values(subscribed=subscribed))
        return Changed(None, [Change(ch.MAILBOX_SUBSCRIBE, account_id, row.id if row else 0, name=name,
                                     flags=1 if subscribed else 0)])

    def list_subscriptions(self, account_id: int) -> list[str]:
        """Every subscribed name, whether or not its mailbox exists."""
        with self._read() as conn:
            return [r.name for r in conn.execute(select(SUB.c.name).where(SUB.c.account_id == account_id)
                                                 .order_by(SUB.c.name))]

    # ----------------------------------------------------------------------------------------- messages: reads

    def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        """Every message of the mailbox in UID order (what SELECT needs)."""
        with self._read() as conn:
            # Driver-level fetch: for 100,000 rows SQLAlchemy's per-row processing costs more than the query.
            rows = conn.exec_driver_sql(_SQL_LIST_MESSAGES[self.sqlite], (mailbox_id,)).fetchall()
        empty: tuple[str, ...] = ()
        return [MessageMeta(u, ms, f, tuple(k.split()) if k else empty, sz, d) for u, ms, f, k, sz, d in rows]

    def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageInfo]:
        """Full metadata of the given UIDs (missing ones are left out), in UID order."""
        out: list[MessageInfo] = []
        with self._read() as conn:
            for chunk in _chunks(sorted(set(uids))):
                out.extend(_message_info(r) for r in conn.execute(
                    select(M).where(M.c.mailbox_id == mailbox_id, M.c.uid.in_(chunk))))
        out.sort(key=lambda m: m.uid)
        return out

    def page_messages(self, mailbox_id: int, *, offset: int = 0, limit: int = 50, order: str = "date",
                      descending: bool = True) -> tuple[int, list[MessageInfo]]:
        """One page of a mailbox for lists (webmail): (total count, messages) using the (mailbox, date) index."""
        cols = {"date": M.c.internal_date, "uid": M.c.uid, "size": M.c.size, "subject": M.c.subject,
                "from": M.c.from_addr}
        col = cols.get(order, M.c.internal_date)
        with self._read() as conn:
            total = conn.execute(select(MB.c.message_count).where(MB.c.id == mailbox_id)).scalar() or 0
            q = select(M).where(M.c.mailbox_id == mailbox_id).order_by(
                col.desc() if descending else col.asc(), M.c.uid.desc() if descending else M.c.uid.asc()
            ).offset(offset).limit(limit)
            rows = [_message_info(r) for r in conn.execute(q)]
        return total, rows

    def changes_since(self, mailbox_id: int, modseq: int) -> tuple[list[MessageMeta], list[int]]:
        """Messages changed after ``modseq`` and UIDs expunged after it (RFC 7162 CHANGEDSINCE / VANISHED)."""
        with self._read() as conn:
            changed = [MessageMeta(r[0], r[1], r[2], split_keywords(r[3]), r[4], r[5]) for r in conn.execute(
                select(M.c.uid, M.c.modseq, M.c.flags, M.c.keywords, M.c.size, M.c.internal_date).where(
                    M.c.mailbox_id == mailbox_id, M.c.modseq > modseq).order_by(M.c.uid))]
            vanished = sorted({r[0] for r in conn.execute(select(Expunged.uid).where(
                Expunged.mailbox_id == mailbox_id, Expunged.modseq > modseq))})
        return changed, vanished

    def quota(self, account_id: int) -> tuple[int, int]:
        """(used bytes, limit bytes; 0 = unlimited)."""
        with self._read() as conn:
            row = conn.execute(select(A.c.used_bytes, A.c.quota_bytes).where(A.c.id == account_id)).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return row.used_bytes, row.quota_bytes

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        return self.blobs.read(blob_id, start, end)

    # ----------------------------------------------------------------------------------------- messages: writes

    def _bump(self, conn: Connection, mailbox_id: int, n_uids: int) -> tuple[int, int, int]:
        """Reserve ``n_uids`` UIDs and one new modseq: returns (first uid, modseq, uid_validity)."""
        row = conn.execute(update(MB).where(MB.c.id == mailbox_id).values(
            uid_next=MB.c.uid_next + n_uids, highest_modseq=MB.c.highest_modseq + 1
        ).returning(MB.c.uid_next, MB.c.highest_modseq, MB.c.uid_validity)).first()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return row[0] - n_uids, row[1], row[2]

    def _check_quota(self, conn: Connection, account_id: int, extra: int) -> None:
        row = conn.execute(select(A.c.used_bytes, A.c.quota_bytes).where(A.c.id == account_id)).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        if row.quota_bytes and row.used_bytes + extra > row.quota_bytes:
            raise QuotaExceeded("mailbox full")

    def _insert_message(self, conn: Connection, mailbox_id: int, uid: int, modseq: int, blob: BlobRef,
                        parsed: dict, flags: int, keywords: tuple[str, ...], internal_date: float) -> None:
        values = {k: parsed.get(k, "") for k in PARSED_COLUMNS}
        values["header_size"] = int(values["header_size"] or 0)
        values["date_sent"] = float(values["date_sent"] or 0.0)
        values["has_attachment"] = bool(values["has_attachment"])
        conn.execute(insert(M).values(mailbox_id=mailbox_id, uid=uid, modseq=modseq, flags=flags,
                                      keywords=join_keywords(keywords), internal_date=internal_date, size=blob.size,
                                      blob_id=blob.id, thread_id=thread_key(parsed), **values))

    def _account_mailboxes_after_add(self, conn: Connection, mailbox_id: int, account_id: int, n: int, size: int,
                                     unseen: int, keywords: Iterable[str]) -> None:
        vals = {"message_count": MB.c.message_count + n, "unseen_count": MB.c.unseen_count + unseen,
                "total_size": MB.c.total_size + size}
        kws = [k for k in keywords]
        if kws:
            cur = conn.execute(select(MB.c.keywords).where(MB.c.id == mailbox_id)).scalar() or ""
            merged = join_keywords(split_keywords(cur) + tuple(kws))
            if merged != cur:
                vals["keywords"] = merged
        conn.execute(update(MB).where(MB.c.id == mailbox_id).values(**vals))
        conn.execute(update(A).where(A.c.id == account_id).values(used_bytes=A.c.used_bytes + size))

    def deliver_batch(self, deliveries: Sequence[Delivery]) -> Changed:
        """Deliver many messages in one transaction (group commit).  ``value`` is a list of DeliveryResult.

        A delivery that cannot be made (no such account, over quota) gets ``ok=False`` without affecting the others.
        An unexpected database error raises for the whole batch (the caller retries the deliveries one by one).

        Set-based on purpose: the statements per batch grow with the number of distinct mailboxes, accounts and
        blobs, not with the number of messages; messages of one batch in one mailbox share one new modseq.
        """
        now = time.time()
        results: list[DeliveryResult | None] = [None] * len(deliveries)
        changes: list[Change] = []
        self.blobs.ensure_synced([d.blob for d in deliveries])  # durable before the metadata commits
        with self._tx() as conn:
            account_ids = sorted({d.account_id for d in deliveries})
            accounts = {r.id: [r.used_bytes, r.quota_bytes] for r in conn.execute(
                _SQL_ACCOUNTS, {"ids": account_ids})}
            boxes: dict[tuple[int, str], int] = {}
            owner: dict[int, int] = {}
            for r in conn.execute(_SQL_MAILBOXES, {"ids": account_ids}):
                boxes[(r.account_id, r.name)] = r.id
                owner[r.id] = r.account_id
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
                name = normalize_mailbox_name(d.mailbox)
                mid = boxes.get((d.account_id, name)) or boxes.get((d.account_id, "INBOX"))
                if mid is None:  # INBOX was never created (legacy data): create it now
                    mid = self._create_mailbox_row(conn, d.account_id, "INBOX")
                    boxes[(d.account_id, "INBOX")] = mid
                    changes.append(Change(ch.MAILBOX_CREATE, d.account_id, mid, name="INBOX"))
                per_box.setdefault(mid, []).append(i)
            rows: list[dict] = []
            blob_counts: dict[str, list] = {}
            used: dict[int, int] = {}
            for mid, idxs in per_box.items():
                size = sum(deliveries[i].blob.size for i in idxs)
                unseen = sum(0 if deliveries[i].flags & FLAG_SEEN else 1 for i in idxs)
                r = conn.execute(_SQL_BUMP_ADD, {"id": mid, "n": len(idxs), "size": size, "unseen": unseen}).first()
                first_uid, modseq, uid_validity = r[0] - len(idxs), r[1], r[2]
                kws = [k for i in idxs for k in deliveries[i].keywords]
                if kws:
                    cur = conn.execute(select(MB.c.keywords).where(MB.c.id == mid)).scalar() or ""
                    merged = join_keywords(split_keywords(cur) + tuple(kws))
                    if merged != cur:
                        conn.execute(update(MB).where(MB.c.id == mid).values(keywords=merged))
                for k, i in enumerate(idxs):
                    d = deliveries[i]
                    uid = first_uid + k
                    values = {c: d.parsed.get(c, "") for c in PARSED_COLUMNS}
                    values["header_size"] = int(values["header_size"] or 0)
                    values["date_sent"] = float(values["date_sent"] or 0.0)
                    values["has_attachment"] = bool(values["has_attachment"])
                    values.update(mailbox_id=mid, uid=uid, modseq=modseq, flags=d.flags,
                                  keywords=join_keywords(d.keywords), internal_date=d.internal_date or now,
                                  size=d.blob.size, blob_id=d.blob.id, thread_id=thread_key(d.parsed))
                    rows.append(values)
                    entry = blob_counts.setdefault(d.blob.id, [d.blob.size, 0])
                    entry[1] += 1
                    used[d.account_id] = used.get(d.account_id, 0) + d.blob.size
                    results[i] = DeliveryResult(True, mid, uid, uid_validity=uid_validity)
                    changes.append(Change(ch.EXISTS, d.account_id, mid, uid=uid, modseq=modseq, flags=d.flags,
                                          keywords=tuple(d.keywords), size=d.blob.size))
            if rows:
                blob_params = [{"id": b, "size": v[0], "n": v[1], "now": now} for b, v in blob_counts.items()]
                conn.execute(_SQL_BLOB_UPSERT, blob_params)
                conn.execute(insert(M), rows)
                conn.execute(_SQL_ACCOUNT_USED, [{"id": a, "size": n} for a, n in used.items()])
        return Changed(results, changes)

    def append(self, account_id: int, mailbox_id: int, blob: BlobRef, parsed: dict, flags: int = 0,
               keywords: tuple[str, ...] = (), internal_date: float | None = None) -> Changed:
        """APPEND one message; ``value`` is (uid_validity, uid).  Raises QuotaExceeded / NotFound."""
        changed = self.append_many(account_id, mailbox_id, [(blob, parsed, flags, keywords, internal_date)])
        uv, uids = changed.value
        return Changed((uv, uids[0]), changed.changes)

    def append_many(self, account_id: int, mailbox_id: int, messages: Sequence[tuple]) -> Changed:
        """APPEND several messages all-or-nothing (RFC 3502 MULTIAPPEND): ``messages`` are (blob, parsed, flags,
        keywords, internal_date); ``value`` is (uid_validity, [uids]).  Raises QuotaExceeded / NotFound."""
        if not messages:
            raise Invalid("nothing to append")
        self.blobs.ensure_synced([m[0] for m in messages])
        total = sum(m[0].size for m in messages)
        changes: list[Change] = []
        with self._tx() as conn:
            owner = conn.execute(select(MB.c.account_id).where(MB.c.id == mailbox_id)).scalar()
            if owner != account_id:
                raise NotFound("no such mailbox")
            self._check_quota(conn, account_id, total)
            first, modseq, uv = self._bump(conn, mailbox_id, len(messages))
            now = time.time()
            unseen = 0
            all_keywords: list[str] = []
            for k, (blob, parsed, flags, keywords, internal_date) in enumerate(messages):
                self._blob_ref(conn, blob)
                self._insert_message(conn, mailbox_id, first + k, modseq, blob, parsed, flags, keywords,
                                     internal_date or now)
                unseen += 0 if flags & FLAG_SEEN else 1
                all_keywords.extend(keywords)
                changes.append(Change(ch.EXISTS, account_id, mailbox_id, uid=first + k, modseq=modseq, flags=flags,
                                      keywords=tuple(keywords), size=blob.size))
            self._account_mailboxes_after_add(conn, mailbox_id, account_id, len(messages), total, unseen,
                                              dict.fromkeys(all_keywords))
        return Changed((uv, list(range(first, first + len(messages)))), changes)

    def set_flags(self, mailbox_id: int, uids: Sequence[int], mode: str, flags: int,
                  keywords: Sequence[str] = (), unchanged_since: int | None = None) -> Changed:
        """STORE: ``mode`` is "add", "remove" or "replace".  ``value`` is a StoreFlagsResult.

        Only messages whose flags really change get a new modseq (RFC 7162 3.1.3 lets unchanged ones keep theirs);
        with ``unchanged_since`` messages with a higher modseq are left alone and reported in ``modified``.
        """
        if mode not in ("add", "remove", "replace"):
            raise Invalid("bad STORE mode")
        kw_lower = {k.lower(): k for k in keywords}
        updated: list[FlagUpdate] = []
        modified: list[int] = []
        changes: list[Change] = []
        with self._tx() as conn:
            mb = conn.execute(select(MB.c.account_id, MB.c.highest_modseq, MB.c.keywords).where(
                MB.c.id == mailbox_id)).first()
            if mb is None:
                raise NotFound("no such mailbox")
            rows = []
            for chunk in _chunks(sorted(set(uids))):
                rows.extend(conn.execute(select(M.c.id, M.c.uid, M.c.modseq, M.c.flags, M.c.keywords).where(
                    M.c.mailbox_id == mailbox_id, M.c.uid.in_(chunk))).all())
            rows.sort(key=lambda r: r.uid)
            new_modseq = mb.highest_modseq + 1
            unseen_delta = 0
            for r in rows:
                if unchanged_since is not None and r.modseq > unchanged_since:
                    modified.append(r.uid)
                    continue
                old_kw = split_keywords(r.keywords)
                if mode == "add":
                    nf = r.flags | flags
                    nk = join_keywords(old_kw + tuple(keywords))
                elif mode == "remove":
                    nf = r.flags & ~flags
                    nk = join_keywords(k for k in old_kw if k.lower() not in kw_lower)
                else:
                    nf = flags
                    nk = join_keywords(keywords)
                if nf == r.flags and nk == r.keywords:
                    if unchanged_since is not None:
                        # RFC 7162 3.1.3: still reported with its (unchanged) modseq
                        updated.append(FlagUpdate(r.uid, r.modseq, r.flags, old_kw))
                    continue
                conn.execute(update(M).where(M.c.id == r.id).values(flags=nf, keywords=nk, modseq=new_modseq))
                unseen_delta += (0 if nf & FLAG_SEEN else 1) - (0 if r.flags & FLAG_SEEN else 1)
                fu = FlagUpdate(r.uid, new_modseq, nf, split_keywords(nk))
                updated.append(fu)
                changes.append(Change(ch.FLAGS, mb.account_id, mailbox_id, uid=r.uid, modseq=new_modseq, flags=nf,
                                      keywords=fu.keywords))
            if changes:
                vals = {"highest_modseq": new_modseq, "unseen_count": MB.c.unseen_count + unseen_delta}
                if keywords and mode != "remove":
                    merged = join_keywords(split_keywords(mb.keywords) + tuple(keywords))
                    if merged != mb.keywords:
                        vals["keywords"] = merged
                conn.execute(update(MB).where(MB.c.id == mailbox_id).values(**vals))
        return Changed(StoreFlagsResult(updated, modified), changes)

    def _remove_messages(self, conn: Connection, mailbox_id: int, account_id: int, rows) -> list[Change]:
        """Delete the given message rows, leave tombstones, fix counters; returns EXPUNGE changes."""
        if not rows:
            return []
        _, modseq, _ = self._bump(conn, mailbox_id, 0)
        counts: dict[str, int] = {}
        size = unseen = 0
        for r in rows:
            counts[r.blob_id] = counts.get(r.blob_id, 0) + 1
            size += r.size
            unseen += 0 if r.flags & FLAG_SEEN else 1
        ids = [r.id for r in rows]
        for chunk in _chunks(ids):
            conn.execute(delete(M).where(M.c.id.in_(chunk)))
        conn.execute(insert(Expunged), [{"mailbox_id": mailbox_id, "uid": r.uid, "modseq": modseq} for r in rows])
        self._blob_unref(conn, counts)
        conn.execute(update(MB).where(MB.c.id == mailbox_id).values(
            message_count=MB.c.message_count - len(rows), unseen_count=MB.c.unseen_count - unseen,
            total_size=MB.c.total_size - size))
        conn.execute(update(A).where(A.c.id == account_id).values(used_bytes=A.c.used_bytes - size))
        return [Change(ch.EXPUNGE, account_id, mailbox_id, uid=r.uid, modseq=modseq) for r in
                sorted(rows, key=lambda r: r.uid)]

    def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> Changed:
        """Remove messages flagged \\Deleted (only among ``uids`` when given: UID EXPUNGE).  ``value``: expunged UIDs."""
        with self._tx() as conn:
            account_id = conn.execute(select(MB.c.account_id).where(MB.c.id == mailbox_id)).scalar()
            if account_id is None:
                raise NotFound("no such mailbox")
            q = select(M.c.id, M.c.uid, M.c.blob_id, M.c.size, M.c.flags).where(
                M.c.mailbox_id == mailbox_id, M.c.flags.op("&")(FLAG_DELETED) != 0)
            rows = []
            if uids is None:
                rows = conn.execute(q).all()
            else:
                for chunk in _chunks(sorted(set(uids))):
                    rows.extend(conn.execute(q.where(M.c.uid.in_(chunk))).all())
            changes = self._remove_messages(conn, mailbox_id, account_id, rows)
        return Changed([c.uid for c in changes], changes)

    def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> Changed:
        """Remove the given messages whatever their flags (POP3 UPDATE state, webmail delete)."""
        with self._tx() as conn:
            account_id = conn.execute(select(MB.c.account_id).where(MB.c.id == mailbox_id)).scalar()
            if account_id is None:
                raise NotFound("no such mailbox")
            rows = []
            for chunk in _chunks(sorted(set(uids))):
                rows.extend(conn.execute(select(M.c.id, M.c.uid, M.c.blob_id, M.c.size, M.c.flags).where(
                    M.c.mailbox_id == mailbox_id, M.c.uid.in_(chunk))).all())
            changes = self._remove_messages(conn, mailbox_id, account_id, rows)
        return Changed([c.uid for c in changes], changes)

    def copy(self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *, move: bool = False) -> Changed:
        """COPY (or MOVE, RFC 6851: atomic copy + expunge) messages; ``value`` is a CopyResult."""
        with self._tx() as conn:
            src = conn.execute(select(MB.c.account_id).where(MB.c.id == src_mailbox_id)).first()
            dst = conn.execute(select(MB.c.account_id).where(MB.c.id == dst_mailbox_id)).first()
            if src is None or dst is None or src.account_id != dst.account_id:
                raise NotFound("no such mailbox")
            account_id = src.account_id
            rows = []
            for chunk in _chunks(sorted(set(uids))):
                rows.extend(conn.execute(select(M).where(M.c.mailbox_id == src_mailbox_id,
                                                         M.c.uid.in_(chunk))).all())
            rows.sort(key=lambda r: r.uid)
            if not rows:
                uv = conn.execute(select(MB.c.uid_validity).where(MB.c.id == dst_mailbox_id)).scalar()
                return Changed(CopyResult(uv, []), [])
            total = sum(r.size for r in rows)
            if not move and src_mailbox_id != dst_mailbox_id:
                self._check_quota(conn, account_id, total)
            first_uid, modseq, uv = self._bump(conn, dst_mailbox_id, len(rows))
            pairs = []
            changes: list[Change] = []
            skip = {"id", "mailbox_id", "uid", "modseq"}
            new_rows = []
            keywords: list[str] = []
            unseen = 0
            for i, r in enumerate(rows):
                vals = {k: v for k, v in r._mapping.items() if k not in skip}
                vals.update(mailbox_id=dst_mailbox_id, uid=first_uid + i, modseq=modseq)
                new_rows.append(vals)
                pairs.append((r.uid, first_uid + i))
                keywords.extend(split_keywords(r.keywords))
                unseen += 0 if r.flags & FLAG_SEEN else 1
                changes.append(Change(ch.EXISTS, account_id, dst_mailbox_id, uid=first_uid + i, modseq=modseq,
                                      flags=r.flags, keywords=split_keywords(r.keywords), size=r.size))
            conn.execute(insert(M), new_rows)
            counts: dict[str, int] = {}
            for r in rows:
                counts[r.blob_id] = counts.get(r.blob_id, 0) + 1
            for blob_id, n in counts.items():
                conn.execute(update(B).where(B.c.id == blob_id).values(refcount=B.c.refcount + n))
            self._account_mailboxes_after_add(conn, dst_mailbox_id, account_id, len(rows), total, unseen,
                                              dict.fromkeys(keywords))
            if move:
                changes = self._remove_messages(conn, src_mailbox_id, account_id, rows) + changes
        return Changed(CopyResult(uv, pairs), changes)

    def collect_blobs(self, grace: float = 3600.0) -> int:
        """Delete blobs no message or queue entry references any more (older than ``grace`` seconds)."""
        cutoff = time.time() - grace
        with self._tx() as conn:
            ids = [r.id for r in conn.execute(select(B.c.id).where(B.c.refcount <= 0, B.c.created < cutoff))]
            for chunk in _chunks(ids):
                conn.execute(delete(B).where(B.c.id.in_(chunk), B.c.refcount <= 0))
        self.blobs.remove(ids, grace)
        return len(ids)

    def _blob_counts(self, conn: Connection, q) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (blob_id,) in conn.execute(q):
            counts[blob_id] = counts.get(blob_id, 0) + 1
        return counts

    # ----------------------------------------------------------------------------------------- outbound queue

    def enqueue(self, sender: str, blob: BlobRef, recipients: Sequence[QueueRecipientSpec], *, envid: str = "",
                ret: str = "", smtputf8: bool = False, body_8bit: bool = False, account_id: int | None = None,
                source: str = "submission", next_attempt: float | None = None, queue_id: str | None = None) -> str:
        """Put a message into the durable outbound queue; returns its public queue id (storage/queueid.py).

        ``queue_id`` is the id the message got when it was taken in (SMTP), so one id follows it from the SMTP log
        line and its Received field to the delivery log lines; a new one is made if none is given.
        """
        if not recipients:
            raise Invalid("no recipients")
        public_id = queue_id or new_queue_id()
        now = time.time()
        self.blobs.ensure_synced([blob])
        with self._tx() as conn:
            self._blob_ref(conn, blob)
            qid = conn.execute(insert(QueuedMessage).values(
                public_id=public_id, sender=sender, blob_id=blob.id, size=blob.size, created=now, envid=envid, ret=ret,
                smtputf8=smtputf8, body_8bit=body_8bit, account_id=account_id, source=source)).inserted_primary_key[0]
            conn.execute(insert(QueueRecipient), [
                {"queue_id": qid, "recipient": r.recipient, "domain": r.recipient.rsplit("@", 1)[-1].lower(),
                 "orcpt": r.orcpt, "notify": r.notify, "status": "pending", "attempts": 0,
                 "next_attempt": next_attempt if next_attempt is not None else now, "last_reply": "",
                 "remote_mta": "", "route": r.route, "delay_warned": False, "claimed_until": 0.0}
                for r in recipients])
        return public_id

    def integrity_problems(self) -> list[str]:
        """Rows naming a blob that is not readable (used by the durability test and `mailserver check-store`)."""
        problems = []
        with self._read() as conn:
            ids = {r[0] for r in conn.execute(select(M.c.blob_id).distinct())}
            ids |= {r[0] for r in conn.execute(select(QueuedMessage.blob_id).distinct())}
        for blob_id in sorted(ids):
            if not self.blobs.exists(blob_id):
                problems.append(f"missing blob {blob_id}")
        return problems


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_ = and_  # used by callers composing queries
