"""The per-recipient stages of the ingest pipeline and the verdict a check stage gives.

Every final recipient (a :class:`Target`: one account, or one remote address, after routing) runs these steps in
this order, which :data:`STAGE_ORDER` names:

1. ``routing``  - the envelope recipient becomes final recipients (accounts, aliases, relay, outgoing); a producer
   that chose a mailbox (:attr:`Request.exact_mailbox`) is its own route;
2. ``checks``   - the message checks (:class:`Stage`), each giving this recipient a :class:`Verdict`: refuse, defer,
   tag (headers, keywords, a mailbox), redirect or quarantine.  The first refusal or deferral ends the recipient's
   way; tags add up; a later redirect replaces an earlier one, and a redirect's targets are routed again and go on
   from step 3 with the tags.  A quarantine verdict marks the recipient (the first reason stays) and the checks
   go on, so the held copy records every check's result; a quarantined local recipient skips steps 3-5 and its
   copy is held in the quarantine (``storage/quarantine.py``) instead of a mailbox.  Every verdict may carry
   :class:`Fact`-s (a check's named result and score), which the held copy keeps;
3. ``filter``   - the recipient's own filter (``delivery/sieve_stage.py``: its Sieve script): a verdict as a check
   gives, and also ``discard`` (served, nothing stored), several ``copies`` (one per mailbox, each with its
   flags) and a ``form`` (this recipient's copy is another stored form: editheader);
4. ``quota``    - whether the account's quota applies (reports and Sent copies are exempt); it is enforced by the
   commit's admission, which counts every delivery of a batch, so concurrent deliveries cannot overshoot it;
5. ``mailbox``  - the mailbox: the producer's placement, else the one a check or the filter chose, else INBOX.

Then every recipient's copy is committed together (group commit) and outgoing recipients go to the queue.  Steps 2
and 3 are the *filter stages*: a request that targets an exact mailbox skips them, except checks that declare
``exact_mailbox = True`` (a virus scan that must see APPENDs too, for instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from mailserver.delivery.envelope import (
    DEFERRED,
    DELIVERED,
    FILTERED,
    REFUSED,
    ClientInfo,
    Envelope,
    Outcome,
    Recipient,
)

ROUTING, CHECKS, FILTER, QUOTA, MAILBOX = "routing", "checks", "filter", "quota", "mailbox"
#: The fixed order of a recipient's steps.
STAGE_ORDER = (ROUTING, CHECKS, FILTER, QUOTA, MAILBOX)

ACCEPT, REFUSE, DEFER, DISCARD, QUARANTINE = "accept", "refuse", "defer", "discard", "quarantine"


@dataclass(frozen=True)
class Fact:
    """One named result of a check, kept with a quarantined copy: ``Fact("rspamd", "BAYES_SPAM", score=5.1)``,
    ``Fact("spf", "result", "fail")``, ``Fact("clamd", "virus", "Eicar-Signature")``, ``Fact("dnsbl", "zone",
    "zen.example")``, ``Fact("classifier", "probability", score=0.97)``."""

    check: str
    name: str
    result: str = ""
    score: float | None = None
    detail: str = ""

    def as_json(self) -> dict:
        return {"check": self.check, "name": self.name, "result": self.result, "score": self.score,
                "detail": self.detail}


@dataclass(frozen=True)
class Copy:
    """One copy a filter asks for: into ``mailbox`` (missing: INBOX) with system ``flags`` bits and keywords."""

    mailbox: str
    flags: int = 0
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What a check decides for one recipient.  ``accept`` may carry tags and a redirect."""

    action: str = ACCEPT
    status: str = ""  # RFC 3463 code for refuse (5.x.x) / defer (4.x.x)
    text: str = ""
    add_headers: tuple[tuple[str, str], ...] = ()  # fields added at the top of this recipient's copy
    keywords: tuple[str, ...] = ()
    mailbox: str = ""
    redirect: tuple[str, ...] = ()  # replace this recipient by these addresses (routed again)
    #: The filter's copies (one delivery each, the first takes this recipient's place); () = one, as tagged.
    copies: tuple[Copy, ...] = ()
    #: This recipient's copy is this stored form (a delivery.body.Form: ref + parsed) rather than the message.
    form: Any = None
    reason: str = ""  # why refused/deferred (envelope.py's reasons, e.g. VIRUS); "" = a check's verdict (CHECKED)
    #: The check's named results (kept with a quarantined copy: the "why" a user and an admin are shown).
    facts: tuple[Fact, ...] = ()

    def __post_init__(self):
        if self.action not in (ACCEPT, REFUSE, DEFER, DISCARD, QUARANTINE):
            raise ValueError(f"unknown verdict {self.action!r}")
        if self.action == QUARANTINE and not self.reason:
            raise ValueError("a quarantine verdict needs a reason")
        if self.action in (REFUSE, DEFER) and self.status[:1] != ("5" if self.action == REFUSE else "4"):
            raise ValueError(f"a {self.action} verdict needs a {'5' if self.action == REFUSE else '4'}.x.x status")

    @classmethod
    def refuse(cls, status: str, text: str, *, reason: str = "") -> "Verdict":
        return cls(REFUSE, status, text, reason=reason)

    @classmethod
    def defer(cls, status: str, text: str, *, reason: str = "") -> "Verdict":
        return cls(DEFER, status, text, reason=reason)

    @classmethod
    def tag(cls, *, add_headers=(), keywords=(), mailbox: str = "") -> "Verdict":
        return cls(add_headers=tuple(add_headers), keywords=tuple(keywords), mailbox=mailbox)

    @classmethod
    def quarantine(cls, reason: str, text: str, facts=(), *, add_headers=()) -> "Verdict":
        """Hold this recipient's copy in the quarantine.  ``reason`` is a short code (``spam``, ``virus``, ``dmarc``,
        ...), ``text`` the plain words a user is shown ("A virus was found: Eicar-Signature"), ``facts`` the
        check's named results; ``add_headers`` go on the held copy (and on it when released)."""
        return cls(QUARANTINE, text=text, reason=reason, facts=tuple(facts), add_headers=tuple(add_headers))

    @classmethod
    def discard(cls, text: str = "Discarded by the recipient's filter") -> "Verdict":
        return cls(DISCARD, "2.0.0", text)

    @classmethod
    def redirect_to(cls, addresses) -> "Verdict":
        if not addresses:
            raise ValueError("a redirect needs addresses")
        return cls(redirect=tuple(addresses))


@dataclass(frozen=True)
class MessageInfo:
    """The message as the stages see it: named by its content (``blob_id``) and parsed once (``parsed``, when it
    has a local recipient); ``read(start=0, end=None)`` returns a Deferred of its bytes.  A body of at most
    storage.blobs.SPOOL_IN_MEMORY is not stored yet while the stages run (the blob store answers reads by
    ``blob_id`` from memory: ``BlobStore.hold``); the copies are written once they have.  ``memo`` is the message's
    own scratch space, shared by every stage and recipient of this one message: work done once per message (a
    scan, a score card, the sender authentication results under ``senderauth``) is kept there under the stage's
    name, while the verdict may still differ per recipient; later stages (scoring) read it there.  ``offset`` is
    where the message as received starts in the stored bytes (after the trace fields we put in front: Return-Path,
    Delivered-To, Received)."""

    producer: str
    queue_id: str
    envelope: Envelope | None
    client: ClientInfo | None
    size: int
    blob_id: str
    parsed: dict | None
    read: Callable[..., Any]
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    offset: int = 0


@dataclass(eq=False, slots=True)
class Target:
    """One final recipient on its way through the stages (mutable: each stage records what it decided)."""

    route: Any  # router.Route
    recipient: Recipient | None = None  # the envelope recipient it came from (None: a placement or a redirect)
    mailbox: str = ""
    mailbox_id: int | None = None
    flags: int = 0
    keywords: list[str] = field(default_factory=list)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    internal_date: float | None = None
    check_quota: bool = True
    redirect: tuple[str, ...] = ()
    form: Any = None  # the filter's own form of this recipient's copy (editheader), else chosen by prefix
    more: tuple = ()  # further Copy-s the filter asked for (more_copies() makes them targets)
    outcome: Outcome | None = None  # set when a stage refused, deferred or discarded it
    #: Set by the first quarantine verdict: (reason, text); the copy is held instead of delivered.
    quarantine: tuple[str, str] | None = None
    facts: list[Fact] = field(default_factory=list)  # every check's named results, in order
    stages: list[str] = field(default_factory=list)  # what ran, in order

    @property
    def address(self) -> str:
        return self.route.address

    @property
    def open(self) -> bool:
        return self.outcome is None

    def more_copies(self) -> list["Target"]:
        """The further copies the filter asked for (after :meth:`apply`), as targets of their own."""
        more, self.more = self.more, ()
        out = []
        for c in more:
            t = Target(self.route, self.recipient, mailbox=c.mailbox, flags=c.flags,
                       keywords=list(c.keywords), add_headers=list(self.add_headers), form=self.form,
                       internal_date=self.internal_date, stages=list(self.stages))
            out.append(t)
        return out

    def apply(self, verdict: Verdict | None, *, reason: str) -> None:
        """Record ``verdict`` (None = accept); a refusal or deferral closes the recipient with ``reason``."""
        if verdict is not None:
            self.facts += list(verdict.facts)
        if verdict is not None and verdict.action == QUARANTINE:
            self.add_headers += list(verdict.add_headers)
            if self.quarantine is None:
                self.quarantine = (verdict.reason, verdict.text)
            return
        if verdict is None or verdict.action == ACCEPT:
            if verdict is not None:
                self.add_headers += list(verdict.add_headers)
                self.keywords += [k for k in verdict.keywords if k not in self.keywords]
                self.mailbox = verdict.mailbox or self.mailbox
                self.redirect = verdict.redirect or self.redirect
                self.form = verdict.form or self.form
                if verdict.copies:
                    first = verdict.copies[0]
                    self.mailbox, self.flags = first.mailbox, self.flags | first.flags
                    self.keywords += [k for k in first.keywords if k not in self.keywords]
                    self.more = verdict.copies[1:]
            return
        if verdict.action == DISCARD:
            self.outcome = Outcome(self.address, DELIVERED, verdict.status, verdict.text, FILTERED, self.recipient,
                                   stages=tuple(self.stages))
            return
        kind = REFUSED if verdict.action == REFUSE else DEFERRED
        self.outcome = Outcome(self.address, kind, verdict.status, verdict.text, verdict.reason or reason,
                               self.recipient,
                               stages=tuple(self.stages))


class Stage(Protocol):
    """A message check: called once per open recipient, in registration order.

    ``check`` returns a :class:`Verdict`, None (accept), or a Deferred/awaitable of one.  It runs on the reactor
    thread: anything blocking goes to a thread pool.  A stage may also have ``applies(message) -> bool``: where it
    is false the stage does not run for that message (and is not recorded among the recipient's stages).

    And ``prefetch(message) -> (key, f, args) | None``: a short blocking read the stage will want, made in the
    worker thread that stores and parses the message (the trip the message makes anyway, after its data ended);
    ``f(*args)`` lands in ``message.memo[key]`` (nothing when it raised: the stage then reads on its own).  One
    per key for the message, however many stages name it.
    """

    name: str
    exact_mailbox: bool  # also run for requests that target an exact mailbox (APPEND, drafts, Sent copies)

    def check(self, message: MessageInfo, target: Target) -> Any:
        ...


class Transform(Protocol):
    """A change to received mail while it streams in, before it is stored (e.g. removing header fields that claim
    to come from us).  Registered with ``Pipeline.add_transform``; ``start`` gives a sans-IO filter for one message
    (``feed(bytes) -> bytes``, ``finish() -> bytes``).  It sees the message as the client sent it, before the trace
    fields, and only requests with a ``client`` (mail received from a client) go through it.
    """

    name: str

    def applies(self, request) -> bool:
        ...

    def start(self, request) -> Any:
        ...


class NoFilter:
    """A filter that accepts everything (tools and tests; servers run ``delivery/sieve_stage.py``)."""

    name = FILTER

    def check(self, message: MessageInfo, target: Target) -> Verdict | None:
        return None
