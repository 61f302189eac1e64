"""The per-recipient stages of the ingest pipeline and the verdict a check stage gives.

Every final recipient (a :class:`Target`: one account, or one remote address, after routing) runs these steps in
this order, which :data:`STAGE_ORDER` names:

1. ``routing``  - the envelope recipient becomes final recipients (accounts, aliases, relay, outgoing); a producer
   that chose a mailbox (:attr:`Request.exact_mailbox`) is its own route;
2. ``checks``   - the message checks (:class:`Stage`), each giving this recipient a :class:`Verdict`: refuse, defer,
   tag (headers, keywords, a mailbox) or redirect.  The first refusal or deferral ends the recipient's way; tags
   add up; a later redirect replaces an earlier one, and a redirect's targets are routed again and go on from
   step 3 with the tags;
3. ``filter``   - the recipient's own filter (Sieve comes in a later issue: :class:`NoFilter` stands in its place);
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

from mailserver.delivery.envelope import DEFERRED, REFUSED, ClientInfo, Envelope, Outcome, Recipient

ROUTING, CHECKS, FILTER, QUOTA, MAILBOX = "routing", "checks", "filter", "quota", "mailbox"
#: The fixed order of a recipient's steps.
STAGE_ORDER = (ROUTING, CHECKS, FILTER, QUOTA, MAILBOX)

ACCEPT, REFUSE, DEFER = "accept", "refuse", "defer"


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

    def __post_init__(self):
        if self.action not in (ACCEPT, REFUSE, DEFER):
            raise ValueError(f"unknown verdict {self.action!r}")
        if self.action != ACCEPT and self.status[:1] != ("5" if self.action == REFUSE else "4"):
            raise ValueError(f"a {self.action} verdict needs a {'5' if self.action == REFUSE else '4'}.x.x status")

    @classmethod
    def refuse(cls, status: str, text: str) -> "Verdict":
        return cls(REFUSE, status, text)

    @classmethod
    def defer(cls, status: str, text: str) -> "Verdict":
        return cls(DEFER, status, text)

    @classmethod
    def tag(cls, *, add_headers=(), keywords=(), mailbox: str = "") -> "Verdict":
        return cls(add_headers=tuple(add_headers), keywords=tuple(keywords), mailbox=mailbox)

    @classmethod
    def redirect_to(cls, addresses) -> "Verdict":
        if not addresses:
            raise ValueError("a redirect needs addresses")
        return cls(redirect=tuple(addresses))


@dataclass(frozen=True)
class MessageInfo:
    """The message as the stages see it: stored once (``blob_id``) and parsed once (``parsed``, when it has a local
    recipient); ``read(start=0, end=None)`` returns a Deferred of the stored bytes.

    ``offset`` is where the message as received starts in the stored bytes (after the trace fields we put in
    front: Return-Path, Delivered-To, Received); ``facts`` is shared by the stages of this one message: what a
    check learnt (``senderauth``: the sender authentication results) for later checks and scoring.
    """

    producer: str
    queue_id: str
    envelope: Envelope | None
    client: ClientInfo | None
    size: int
    blob_id: str
    parsed: dict | None
    read: Callable[..., Any]
    offset: int = 0
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
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
    outcome: Outcome | None = None  # set when a stage refused or deferred it
    stages: list[str] = field(default_factory=list)  # what ran, in order

    @property
    def address(self) -> str:
        return self.route.address

    @property
    def open(self) -> bool:
        return self.outcome is None

    def apply(self, verdict: Verdict | None, *, reason: str) -> None:
        """Record ``verdict`` (None = accept); a refusal or deferral closes the recipient with ``reason``."""
        if verdict is None or verdict.action == ACCEPT:
            if verdict is not None:
                self.add_headers += list(verdict.add_headers)
                self.keywords += [k for k in verdict.keywords if k not in self.keywords]
                self.mailbox = verdict.mailbox or self.mailbox
                self.redirect = verdict.redirect or self.redirect
            return
        kind = REFUSED if verdict.action == REFUSE else DEFERRED
        self.outcome = Outcome(self.address, kind, verdict.status, verdict.text, reason, self.recipient,
                               stages=tuple(self.stages))


class Stage(Protocol):
    """A message check: called once per open recipient, in registration order.

    ``check`` returns a :class:`Verdict`, None (accept), or a Deferred/awaitable of one.  It runs on the reactor
    thread: anything blocking goes to a thread pool.  A stage may also have ``applies(message) -> bool``: where it
    is false the stage does not run for that message (and is not recorded among the recipient's stages).
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
    """The recipient's own filter; Sieve (a later issue) takes this place.  Accepts everything."""

    name = FILTER

    def check(self, message: MessageInfo, target: Target) -> Verdict | None:
        return None
