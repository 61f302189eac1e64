"""The delivery vocabulary: what a producer hands in (envelope, recipients, request) and what comes out (outcomes).

These types know no protocol.  The SMTP session converts its own parsing types to an :class:`Envelope` when the
message starts; the webmail, IMAP APPEND, reports and the CLI build a :class:`Request` directly.  Each producer maps
the :class:`Outcome` of every recipient to its own answer (an SMTP reply, a tagged IMAP response, a page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailserver.address import Mailbox

# --------------------------------------------------------------------------------------------- producers

#: Who hands a message to the pipeline (the mail log and the queue's ``source`` name them).
SMTP = "smtp"  # the smtp, submission and submissions listeners
WEBMAIL = "webmail"  # a message sent from the webmail
DRAFT = "webmail-draft"  # a draft saved in the webmail
SENT_COPY = "webmail-sent"  # the copy of a sent message in Sent
APPEND = "imap-append"  # IMAP APPEND and MULTIAPPEND
REPORT = "report"  # delivery status reports (RFC 3464) to their sender
IMPORT = "cli-import"  # `mailserver mail import`
SIEVE = "sieve"  # a Sieve redirect or vacation reply (delivery/sieve_stage.py)
LOCAL = "local"  # other local producers (tests, benchmarks)


# --------------------------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class Recipient:
    """One envelope recipient (RFC 5321 RCPT TO) with its DSN parameters (RFC 3461) and its route."""

    mailbox: Mailbox
    orcpt: str = ""  # RFC 3461 4.2 "addr-type;xtext" as received
    notify: tuple[str, ...] = ()  # RFC 3461 4.1: () = not given, ("NEVER",) or some of SUCCESS/FAILURE/DELAY
    route: Any = None  # the router's RouteResult when the producer routed it already (SMTP RCPT); None = not yet

    @property
    def address(self) -> str:
        return self.mailbox.address


@dataclass(frozen=True)
class Envelope:
    """One mail transaction: reverse path, recipients and the MAIL parameters delivery needs."""

    reverse_path: Mailbox | None  # None = the null reverse-path "<>" (reports)
    recipients: tuple[Recipient, ...] = ()
    size: int | None = None  # RFC 1870 SIZE as declared
    body: str = ""  # "7BIT" | "8BITMIME" (RFC 6152) | "" when not given
    smtputf8: bool = False  # RFC 6531
    envid: str = ""  # RFC 3461 4.4 ENVID (xtext as received)
    ret: str = ""  # RFC 3461 4.3 RET: "FULL" | "HDRS" | ""

    @property
    def sender(self) -> str:
        """The reverse path as text, "" for the null path."""
        return self.reverse_path.address if self.reverse_path is not None else ""


@dataclass(frozen=True)
class ClientInfo:
    """The client a message was received from, for its trace fields (RFC 5321 4.4) and the checks."""

    ip: str
    helo: str
    esmtp: bool
    tls_version: str = ""  # e.g. "TLSv1.3"
    tls_cipher: str = ""
    authenticated: str = ""  # the account address, "" when not authenticated
    account_id: int | None = None
    submission: bool = False  # RFC 6409 message submission (Message-ID/Date may be added)
    trusted: bool = False  # the client is in ``smtp.trusted_networks``


@dataclass(frozen=True)
class Placement:
    """An exact mailbox the producer chose (APPEND, drafts, Sent copies, an import into a named mailbox)."""

    account_id: int
    mailbox: str = "INBOX"  # by name (a missing one falls back to INBOX, as Store.deliver_batch does)...
    mailbox_id: int | None = None  # ...or by id (APPEND: a missing one is an error)
    flags: int = 0
    keywords: tuple[str, ...] = ()
    internal_date: float | None = None


@dataclass(frozen=True)
class Request:
    """What a producer asks of the pipeline for one message.

    ``client`` set: the message was received from a client and gets trace fields (Received, Return-Path,
    Delivered-To; Message-ID/Date on submission) and the loop check.  ``placement`` set: the producer chose the
    mailbox, so routing is the placement itself and the filter stages are skipped (:attr:`exact_mailbox`).
    """

    producer: str
    envelope: Envelope | None = None
    client: ClientInfo | None = None
    placement: Placement | None = None
    check_quota: bool = True  # False: reports and Sent copies must not be lost to a full mailbox
    may_relay: bool = False  # recipients the pipeline routes (``route`` None) may be remote (reports)
    log: bool = False  # one mail-log line per recipient
    #: The address of ours forwarding this message (a Sieve redirect's account): its copies for other domains get
    #: SRS and an ARC set (``delivery/forward.py``).
    forwarded_by: str = ""

    def __post_init__(self):
        if (self.envelope is None) == (self.placement is None):
            raise ValueError("a request has either an envelope or a placement")

    @property
    def exact_mailbox(self) -> bool:
        """The flag that makes the pipeline skip the filter stages (checks that are filters, the user's filter)."""
        return self.placement is not None


# --------------------------------------------------------------------------------------------- outcomes

DELIVERED, QUEUED, DEFERRED, REFUSED = "delivered", "queued", "deferred", "refused"

# Why a recipient was not served (Outcome.reason); each producer words it its own way.
OVERQUOTA = "overquota"  # the account's quota
NONEXISTENT = "nonexistent"  # the account or mailbox is gone
LOOP = "loop"  # too many Received fields (RFC 5321 6.3)
CHECKED = "check"  # a check stage's verdict
VIRUS = "virus"  # the virus scanner found malware (a check stage's verdict)
NO_ROUTE = "no-route"  # the address (or a redirect target) leads nowhere
QUARANTINED = "quarantined"  # a check held the copy in the quarantine (the outcome is ok: it is stored)
FILTERED = "filtered"  # the recipient's filter discarded it (the outcome is ok: nothing stored, nothing owed)
ERROR = "error"  # a local error (logged); the client may retry


@dataclass(frozen=True)
class Outcome:
    """What became of one final recipient: delivered to a mailbox (with its UID), queued, deferred or refused.

    ``status`` is the RFC 3463 enhanced status code and ``text`` a short explanation; ``reason`` is one of the
    constants above when the recipient was not served.
    """

    address: str  # the final recipient: an account address, or the remote address queued
    kind: str
    status: str = "2.0.0"
    text: str = ""
    reason: str = ""
    recipient: Recipient | None = None  # the envelope recipient it came from (DSN NOTIFY/ORCPT)
    mailbox_id: int | None = None
    uid: int | None = None
    uid_validity: int | None = None
    stages: tuple[str, ...] = ()  # the stages that ran for this recipient, in order

    @property
    def ok(self) -> bool:
        return self.kind in (DELIVERED, QUEUED)

    @property
    def temporary(self) -> bool:
        return self.kind == DEFERRED


@dataclass(frozen=True)
class IngestResult:
    """The outcome of every final recipient of one message, and the queue id it was taken in under."""

    queue_id: str
    size: int
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Every recipient has the message."""
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    @property
    def accepted(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.ok)

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)
