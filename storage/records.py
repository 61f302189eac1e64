"""What the store hands out and takes in: frozen dataclasses (never lazy ORM objects), usable on any thread.

Also the conversions from database rows to these records, and the stored spelling of IMAP keywords (one text
column, space separated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from storage.blobs import BlobRef
from storage.changes import Change

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
    #: Each reader keeps their own \\Seen here (a shared mailbox: storage/shared.py).
    seen_per_reader: bool = False
    #: The owner's name for the mailbox when ``name`` is how another reader sees it (``Shared/sales``); "" when
    #: ``name`` is the owner's own.
    stored_name: str = ""
    #: The reader these ``reader_rights`` (RFC 4314 letters the mailbox's ACL gives them) were read for; 0: none.
    reader: int = 0
    reader_rights: str = ""

    @property
    def local_name(self) -> str:
        """The name in the owner's namespace: what store methods taking (account, name) want."""
        return self.stored_name or self.name


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
    """One message's stored metadata.  The fields from ``envelope`` to ``has_attachment`` are the parsed columns
    (storage/parsed.py: PARSED_FIELDS, checked by tests/test_store_schema.py)."""

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


# --------------------------------------------------------------------------------------------- keywords


def split_keywords(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def join_keywords(keywords: Iterable[str]) -> str:
    """One stored text of ``keywords``: first spelling wins, case-insensitively unique, order kept."""
    seen: dict[str, None] = {}
    for k in keywords:
        if k.lower() not in (x.lower() for x in seen):
            seen[k] = None
    return " ".join(seen)


# --------------------------------------------------------------------------------------------- rows -> records


def mailbox_info(row) -> MailboxInfo:
    return MailboxInfo(row.id, row.account_id, row.name, row.special_use, bool(row.subscribed), row.uid_validity,
                       row.uid_next, row.highest_modseq, row.message_count, row.unseen_count, row.total_size,
                       split_keywords(row.keywords), bool(getattr(row, "seen_per_reader", False)))


def account_info(row) -> AccountInfo:
    return AccountInfo(row.id, row.address, row.domain_id, row.password_hash, row.display_name, row.quota_bytes,
                       row.used_bytes, bool(row.enabled), row.signature)


def message_info(row) -> MessageInfo:
    """A ``messages`` row (all columns) as a MessageInfo (positional: this runs per message of a FETCH 1:*)."""
    return MessageInfo(row.id, row.mailbox_id, row.uid, row.modseq, row.flags, split_keywords(row.keywords),
                       row.internal_date, row.size, row.blob_id, row.envelope, row.bodystructure, row.header_size,
                       row.subject, row.from_addr, row.to_addr, row.cc_addr, row.date_sent, row.message_id,
                       row.in_reply_to, row.references, row.preview, bool(row.has_attachment), row.thread_id)
