"""SQLAlchemy 2.x models: the one schema every protocol shares.

Schema changes go through Alembic (``storage/migrations``); this module is what the migrations build.
Times are stored as UNIX seconds (float) so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.parsed import PARSED_FIELDS


class Base(DeclarativeBase):
    pass


# System flags as bits (RFC 9051 2.3.2); keywords are kept as text.
FLAG_SEEN = 1
FLAG_ANSWERED = 2
FLAG_FLAGGED = 4
FLAG_DELETED = 8
FLAG_DRAFT = 16
FLAG_RECENT = 32  # session-only in IMAP; stored bit used for "new since last select" bookkeeping
SYSTEM_FLAGS = {
    "\\seen": FLAG_SEEN,
    "\\answered": FLAG_ANSWERED,
    "\\flagged": FLAG_FLAGGED,
    "\\deleted": FLAG_DELETED,
    "\\draft": FLAG_DRAFT,
}
FLAG_NAMES = {FLAG_SEEN: "\\Seen", FLAG_ANSWERED: "\\Answered", FLAG_FLAGGED: "\\Flagged",
              FLAG_DELETED: "\\Deleted", FLAG_DRAFT: "\\Draft"}


class Domain(Base):
    __tablename__ = "domains"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    mode: Mapped[str] = mapped_column(String(16), default="local")  # local | relay
    relay_to: Mapped[str] = mapped_column(String(300), default="")
    created: Mapped[float] = mapped_column(Float)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased local@domain
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(Text, default="")
    display_name: Mapped[str] = mapped_column(String(200), default="")
    quota_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # 0 = unlimited
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    signature: Mapped[str] = mapped_column(Text, default="")
    #: Last UIDVALIDITY handed out to one of this account's mailboxes: a re-created name always gets a new one.
    uid_validity_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[float] = mapped_column(Float)
    #: Set for a shared mailbox's account (no person, owned by its domain, no login): its name in the "Shared/"
    #: namespace (storage/shared.py).
    shared_name: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True, default=None)


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("address", "target"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # lower-cased "local@domain", or "@domain" for a catch-all
    address: Mapped[str] = mapped_column(String(320), index=True)
    target: Mapped[str] = mapped_column(String(320))
    created: Mapped[float] = mapped_column(Float)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1000))  # UTF-8, "/" separated; "INBOX" upper-case
    special_use: Mapped[str] = mapped_column(String(32), default="")  # e.g. "\\Sent"
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    uid_validity: Mapped[int] = mapped_column(BigInteger)
    uid_next: Mapped[int] = mapped_column(BigInteger, default=1)
    highest_modseq: Mapped[int] = mapped_column(BigInteger, default=1)
    keywords: Mapped[str] = mapped_column(Text, default="")  # space-separated keywords ever used here
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    unseen_count: Mapped[int] = mapped_column(Integer, default=0)
    total_size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Each reader keeps their own \\Seen (``reader_seen``); the messages' own flags never hold it (shared mailboxes).
    seen_per_reader: Mapped[bool] = mapped_column(Boolean, default=False)


class Subscription(Base):
    """Subscribed mailbox names (RFC 9051 6.3.7): kept when the mailbox is deleted, moved when it is renamed."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1000))


class Blob(Base):
    """A message body, byte-exact as received, stored once per content (sha256)."""

    __tablename__ = "blobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex sha256
    size: Mapped[int] = mapped_column(BigInteger)
    refcount: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # "database" backend only
    created: Mapped[float] = mapped_column(Float)


_SQL_TYPES = {str: Text, int: Integer, float: Float, bool: Boolean}

#: The ``messages`` columns from the one MIME parse at delivery, made from storage.parsed.PARSED_FIELDS (their one
#: spelling): ENVELOPE and BODYSTRUCTURE as JSON texts, and the fields lists, sorting, threading and the webmail use.
ParsedColumns = type("ParsedColumns", (), {
    "__doc__": "Mixin: the parsed-message columns (storage/parsed.py).",
    **{f.name: mapped_column(_SQL_TYPES[f.type], default=f.default, doc=f.doc) for f in PARSED_FIELDS},
})


class Message(ParsedColumns, Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uid"),
        Index("ix_messages_mailbox_modseq", "mailbox_id", "modseq"),
        Index("ix_messages_mailbox_date", "mailbox_id", "internal_date"),
        Index("ix_messages_thread", "thread_id"),
        Index("ix_messages_message_id", "message_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    keywords: Mapped[str] = mapped_column(Text, default="")  # space-separated
    internal_date: Mapped[float] = mapped_column(Float)
    size: Mapped[int] = mapped_column(BigInteger)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), index=True)
    # The parsed columns (envelope … has_attachment) come from ParsedColumns: storage/parsed.py spells them.
    thread_id: Mapped[int] = mapped_column(BigInteger, default=0)


class Expunged(Base):
    """Tombstones of expunged UIDs, for QRESYNC VANISHED (RFC 7162)."""

    __tablename__ = "expunged"
    __table_args__ = (Index("ix_expunged_mailbox_modseq", "mailbox_id", "modseq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)


class QueuedMessage(Base):
    """Outgoing mail waiting for delivery (outbound queue).

    ``public_id`` is the queue id shown outside (logs, Received, CLI; see storage/queueid.py); ``id`` is internal and,
    like ``queue_recipients.id``, never reused (AUTOINCREMENT on SQLite: without it SQLite hands the highest deleted
    rowid out again, so a runner still holding a deleted row's id could update another message's row).
    """

    __tablename__ = "queue"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    sender: Mapped[str] = mapped_column(String(320), default="")  # "" = null reverse-path
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[float] = mapped_column(Float)
    envid: Mapped[str] = mapped_column(String(100), default="")
    ret: Mapped[str] = mapped_column(String(8), default="")  # FULL | HDRS | ""
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    body_8bit: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # submitting account
    source: Mapped[str] = mapped_column(String(32), default="submission")  # submission|alias|relay|bounce


class QueueRecipient(Base):
    __tablename__ = "queue_recipients"
    __table_args__ = (Index("ix_queue_recipients_due", "status", "next_attempt"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253))
    orcpt: Mapped[str] = mapped_column(String(500), default="")
    notify: Mapped[str] = mapped_column(String(40), default="")  # e.g. "FAILURE,DELAY"
    # pending | deferred | delivered | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[float] = mapped_column(Float, default=0.0)
    last_reply: Mapped[str] = mapped_column(Text, default="")
    remote_mta: Mapped[str] = mapped_column(String(300), default="")
    route: Mapped[str] = mapped_column(String(300), default="")  # "" = MX, or "host:port" for relay domains
    delay_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_until: Mapped[float] = mapped_column(Float, default=0.0)


# --------------------------------------------------------------------------------------------- webmail
# (migration: storage/migrations/versions/0003_webmail.py)


class WebmailSession(Base):
    """A signed-in browser.  ``id`` is the SHA-256 of the cookie value: a database leak yields no usable cookie."""

    __tablename__ = "webmail_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")


class WebmailContact(Base):
    """A recent correspondent of an account (address suggestions in compose)."""

    __tablename__ = "webmail_contacts"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    last_used: Mapped[float] = mapped_column(Float)
    use_count: Mapped[int] = mapped_column(Integer, default=1)


class WebmailIdentity(Base):
    """Display name and signature of one of the addresses an account may send as (its own or an alias)."""

    __tablename__ = "webmail_identities"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    signature: Mapped[str] = mapped_column(Text, default="")


# --------------------------------------------------------------------------------------------- sieve
# (migration: storage/migrations/versions/sieve_7c2e51a09d4f.py; functions: storage/sieve.py)


class SieveScript(Base):
    """A Sieve script of an account (``scope`` "account") or a domain's global script (``scope`` "domain": names
    "before" and "after" run around every user's script, any other name is for ``include :global``)."""

    __tablename__ = "sieve_scripts"
    __table_args__ = (UniqueConstraint("scope", "owner_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # account | domain
    owner_id: Mapped[int] = mapped_column(Integer, index=True)  # accounts.id or domains.id
    name: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[float] = mapped_column(Float)


class SieveVacationReply(Base):
    """RFC 5230 4.2 / RFC 3834: the last vacation reply an account sent to a sender, per handle."""

    __tablename__ = "sieve_vacation"
    __table_args__ = (UniqueConstraint("account_id", "handle", "sender"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    handle: Mapped[str] = mapped_column(String(64))  # sha256 hex of the vacation handle
    sender: Mapped[str] = mapped_column(String(320))
    replied_at: Mapped[float] = mapped_column(Float)


class SieveDuplicate(Base):
    """RFC 7352: ids the duplicate test has seen for an account, until ``expires``."""

    __tablename__ = "sieve_duplicates"
    __table_args__ = (UniqueConstraint("account_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    expires: Mapped[float] = mapped_column(Float)


# --------------------------------------------------------------------------------------------- quarantine
# (migration: storage/migrations/versions/quarantine_3b8f1e6c2d90.py; functions: storage/quarantine.py)


class Quarantined(Base):
    """One recipient's held copy: its body is a blob (one reference per row, the same blob for every recipient of
    the message), never a ``messages`` row, so IMAP and POP3 cannot see it and no mailbox quota counts it."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    blob_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    parsed: Mapped[str] = mapped_column(Text)  # JSON: storage/parsed.py's columns, for the delivery on release
    recipient: Mapped[str] = mapped_column(String(320))  # the final recipient address
    sender: Mapped[str] = mapped_column(String(320), default="")  # the envelope's reverse path ("" = null)
    from_header: Mapped[str] = mapped_column(Text, default="")  # as shown (decoded display form)
    subject: Mapped[str] = mapped_column(Text, default="")
    envelope: Mapped[str] = mapped_column(Text, default="{}")  # JSON: sender, recipients, MAIL parameters
    client: Mapped[str] = mapped_column(Text, default="{}")  # JSON: ip, helo, TLS, authenticated
    reason: Mapped[str] = mapped_column(String(32))  # spam | virus | dmarc | ...
    reason_text: Mapped[str] = mapped_column(Text, default="")
    facts: Mapped[str] = mapped_column(Text, default="[]")  # JSON: every check's named result and score
    queue_id: Mapped[str] = mapped_column(String(32), default="")
    arrived: Mapped[float] = mapped_column(Float, index=True)
    expires: Mapped[float] = mapped_column(Float, index=True)
    digested: Mapped[bool] = mapped_column(Boolean, default=False)  # listed in a digest already


class QuarantineSender(Base):
    """An account's own sender rules: ``allow`` (never quarantined as spam) or ``block``."""

    __tablename__ = "quarantine_senders"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))  # lower-cased
    rule: Mapped[str] = mapped_column(String(8))  # allow | block
    created: Mapped[float] = mapped_column(Float)


class DomainAdmin(Base):
    """The domain-admin role: this account sees and acts on its domain's quarantine."""

    __tablename__ = "domain_admins"
    __table_args__ = (UniqueConstraint("account_id", "domain_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)


class QuarantineToken(Base):
    """A digest link used once (its HMAC's digest): a second use of the same link is refused."""

    __tablename__ = "quarantine_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    used: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)


class BayesToken(Base):
    """The built-in classifier: in how many messages trained as spam / ham a token was (``storage/bayes.py``)."""

    __tablename__ = "bayes_tokens"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 63-bit hash of the token's text
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)
    touched: Mapped[float] = mapped_column(Float)  # last trained


class BayesTotal(Base):
    """Messages trained per account as spam and as ham."""

    __tablename__ = "bayes_totals"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)


class BayesTrained(Base):
    """What a message (its blob id, or a trained file's sha256) was trained as: no double training."""

    __tablename__ = "bayes_trained"
    __table_args__ = (UniqueConstraint("account_id", "blob_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    blob_id: Mapped[str] = mapped_column(String(64))
    klass: Mapped[str] = mapped_column(String(4))  # spam | ham
    trained: Mapped[float] = mapped_column(Float)


class BayesJob(Base):
    """Training the store recorded with the user's action, for the trainer to do off the reactor."""

    __tablename__ = "bayes_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    blob_id: Mapped[str] = mapped_column(String(64))
    klass: Mapped[str] = mapped_column(String(4))
    created: Mapped[float] = mapped_column(Float)


class BayesSender(Base):
    """An address the account sent mail to or replied to (its correspondents: not spam)."""

    __tablename__ = "bayes_senders"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))  # lower-cased
    count: Mapped[int] = mapped_column(Integer, default=1)
    last: Mapped[float] = mapped_column(Float)


class CheckVersion(Base):
    """Versions of an account's data that the inbound checks cache (``storage/checkstate.py``): its sender rules,
    its correspondents and its classifier training.  Each is moved on in the transaction that changes that data,
    so a process that read a version before the data knows its copy is current while the version is unchanged.
    No row: that data never changed (none exists)."""

    __tablename__ = "check_versions"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    rules: Mapped[int] = mapped_column(BigInteger, default=0)
    senders: Mapped[int] = mapped_column(BigInteger, default=0)
    training: Mapped[int] = mapped_column(BigInteger, default=0)


# --------------------------------------------------------------------------------------------- send grants
# (migration: storage/migrations/versions/sendgrants_9a4d27c1e5b3.py; functions: storage/sendgrants.py)


class SendGrant(Base):
    """An account may submit mail under ``address`` that is not its own: ``kind`` "send-as" (From and MAIL FROM)
    or "send-on-behalf" (From, with ``Sender:`` naming the account). One grant per account and address."""

    __tablename__ = "send_grants"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Float)


class CalloutAnswer(Base):
    """Gateway mode: a relay host's answer to our RCPT probe for one address, until ``expires`` (shared by nodes)."""

    __tablename__ = "callout_cache"
    address: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-cased
    valid: Mapped[bool] = mapped_column(Boolean)
    expires: Mapped[float] = mapped_column(Float, index=True)


class ServerSecret(Base):
    """A key made once for the whole cluster (``srs``: the SRS hash key)."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created: Mapped[float] = mapped_column(Float)


class QuarantineDigest(Base):
    """An account's digest setting (NULL = its domain's / the server's) and when its last digest was sent."""

    __tablename__ = "quarantine_digests"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    enabled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    hour: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0..23, UTC
    last_sent: Mapped[float] = mapped_column(Float, default=0.0)


class GreylistTriplet(Base):
    """One greylisting triplet (RFC 6647 4.2): the client's network, the envelope sender and recipient.
    ``passed`` is None until a retry came after the delay; ``expires`` ends the retry window, or a passed
    triplet's life (``storage/greylist.py``)."""

    __tablename__ = "greylist"
    __table_args__ = (UniqueConstraint("network", "sender", "recipient"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network: Mapped[str] = mapped_column(String(64))  # "192.0.2.0/24", "2001:db8::/64"
    sender: Mapped[str] = mapped_column(String(320))  # lower-cased; "" = the null reverse path
    recipient: Mapped[str] = mapped_column(String(320))  # lower-cased
    first_seen: Mapped[float] = mapped_column(Float)
    passed: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires: Mapped[float] = mapped_column(Float, index=True)


class GreylistClient(Base):
    """A client network's passed triplets (automatic whitelisting after ``[antispam.greylist] auto_whitelist``)."""

    __tablename__ = "greylist_clients"
    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    passes: Mapped[int] = mapped_column(Integer)
    expires: Mapped[float] = mapped_column(Float, index=True)


# --------------------------------------------------------------------------------------------- shared mailboxes, ACL
# (migration: storage/migrations/versions/shared_acl_8d1f4b2c6a57.py; functions: storage/shared.py)


class MailboxAcl(Base):
    """RFC 4314: the rights one identifier (an account's address, ``anyone`` or ``$group``) has on one mailbox."""

    __tablename__ = "mailbox_acl"
    __table_args__ = (UniqueConstraint("mailbox_id", "identifier"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    identifier: Mapped[str] = mapped_column(String(330), index=True)
    rights: Mapped[str] = mapped_column(String(32))  # RFC 4314 letters, "lrswipkxtea" order


class AccountGroup(Base):
    """A named group of accounts, an ACL identifier as ``$name`` (as Dovecot writes them)."""

    __tablename__ = "account_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "account_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("account_groups.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)


class ReaderSeen(Base):
    """One reader's \\Seen on one message of a ``seen_per_reader`` mailbox (as Dovecot's per-user seen)."""

    __tablename__ = "reader_seen"
    __table_args__ = (UniqueConstraint("mailbox_id", "account_id", "uid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    uid: Mapped[int] = mapped_column(BigInteger)


class ReaderRecent(Base):
    """RFC 3501 2.3.2 \\Recent per reader of a ``seen_per_reader`` mailbox: the highest UID one of the reader's
    sessions has taken as \\Recent (of that UIDVALIDITY)."""

    __tablename__ = "reader_recent"
    __table_args__ = (UniqueConstraint("mailbox_id", "account_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    uid_validity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
