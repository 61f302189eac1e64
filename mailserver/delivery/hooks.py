"""Message-level check hooks, run as one check stage of the pipeline (:mod:`mailserver.delivery.stages`).

A hook gets a :class:`MessageContext` (envelope, client facts, the blob id of the message) once the body is
complete, and returns a :class:`HookResult` (or a Deferred / coroutine of one).  Verdicts:

* ``accept``  - nothing to do;
* ``reject``  - refuse the message with ``reply`` (5xx): every recipient is refused;
* ``tempfail`` - refuse with ``reply`` (4xx): every recipient is deferred, the client retries;
* ``tag``     - deliver, adding ``add_headers`` at the top, ``keywords`` and/or filing local copies into ``mailbox``
  (e.g. a spam checker files into "Junk" with keyword "$Junk");
* ``redirect`` - replace the recipients with ``recipients`` (routed again, e.g. a quarantine address).

``reply`` is any reply-like object with ``code``, ``enhanced`` (RFC 3463) and ``lines`` (an SMTP reply constant
fits); only its enhanced code and first line reach the outcome.  Hooks run in registration order; the first
reject/tempfail wins and stops the chain; tags accumulate; a later redirect replaces an earlier one.  The hooks of
``Pipeline.hooks`` (``services.pipeline.hooks``) run once per message, for every producer that is not placing into an exact mailbox;
a check that decides per recipient is a :class:`~mailserver.delivery.stages.Stage` instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailserver.delivery.stages import CHECKS, MessageInfo, Target, Verdict

ACCEPT, REJECT, TEMPFAIL, TAG, REDIRECT = "accept", "reject", "tempfail", "tag", "redirect"


@dataclass(frozen=True)
class MessageContext:
    client_ip: str
    helo: str
    sender: str  # "" = null reverse-path
    recipients: tuple[str, ...]
    authenticated: str  # the account address, "" if none
    submission: bool
    tls: str  # "TLSv1.3 TLS_AES_256_GCM_SHA384" or ""
    #: A body of at most storage.blobs.SPOOL_IN_MEMORY is not stored yet while the checks run: the blob store's
    #: ``read``/``open`` by this id answer from memory (``BlobStore.hold``), but no file exists for it.
    blob_id: str
    size: int
    read: Any = None  # callable(start=0, end=None) -> Deferred[bytes] reading the message


@dataclass(frozen=True)
class HookResult:
    action: str = ACCEPT
    reply: Any = None  # reply-like: .code, .enhanced, .lines
    add_headers: tuple[tuple[str, str], ...] = ()
    keywords: tuple[str, ...] = ()
    mailbox: str = ""
    recipients: tuple[str, ...] = ()


@dataclass
class HookVerdict:
    """The combined outcome of every hook."""

    action: str = ACCEPT  # ACCEPT (possibly tagged/redirected), REJECT or TEMPFAIL
    reply: Any = None
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    mailbox: str = ""
    recipients: tuple[str, ...] | None = None  # None = unchanged

    def for_recipient(self) -> Verdict:
        """The stage verdict every recipient of the message gets."""
        if self.action in (REJECT, TEMPFAIL):
            status = self.reply.enhanced or ("5.0.0" if self.action == REJECT else "4.0.0")
            text = self.reply.lines[0] if self.reply.lines else ""
            return Verdict.refuse(status, text) if self.action == REJECT else Verdict.defer(status, text)
        return Verdict(add_headers=tuple(self.add_headers), keywords=tuple(self.keywords), mailbox=self.mailbox,
                       redirect=self.recipients or ())


class CheckHook(Protocol):
    name: str

    def check(self, ctx: MessageContext) -> Any:  # HookResult | Deferred[HookResult] | Awaitable[HookResult]
        ...


async def run_hooks(hooks, ctx: MessageContext) -> HookVerdict:
    verdict = HookVerdict()
    for hook in hooks:
        result = hook.check(ctx)
        if inspect.isawaitable(result) or hasattr(result, "addCallback"):
            result = await result
        if result is None or result.action == ACCEPT:
            continue
        if result.action in (REJECT, TEMPFAIL):
            if result.reply is None or (result.action == REJECT) != (result.reply.code >= 500):
                raise ValueError(f"hook {getattr(hook, 'name', hook)!r}: {result.action} needs a matching reply")
            verdict.action, verdict.reply = result.action, result.reply
            return verdict
        if result.action == TAG:
            verdict.add_headers += list(result.add_headers)
            verdict.keywords += [k for k in result.keywords if k not in verdict.keywords]
            verdict.mailbox = result.mailbox or verdict.mailbox
        elif result.action == REDIRECT:
            if not result.recipients:
                raise ValueError(f"hook {getattr(hook, 'name', hook)!r}: redirect needs recipients")
            verdict.recipients = tuple(result.recipients)
        else:
            raise ValueError(f"hook {getattr(hook, 'name', hook)!r}: unknown action {result.action!r}")
    return verdict


class HookStage:
    """The hooks as one check stage: run once for the message, their verdict given to each recipient.

    One instance serves one message (the pipeline makes a new one per message), so it can keep the verdict.
    """

    name = CHECKS + ":hooks"
    exact_mailbox = False

    def __init__(self, hooks):
        self.hooks = list(hooks)
        self._verdict: Verdict | None = None

    async def check(self, message: MessageInfo, target: Target) -> Verdict:
        if self._verdict is None:
            self._verdict = (await run_hooks(self.hooks, context(message))).for_recipient()
        return self._verdict


def context(message: MessageInfo) -> MessageContext:
    """The hooks' view of a message."""
    client, env = message.client, message.envelope
    return MessageContext(
        client_ip=client.ip if client else "", helo=client.helo if client else "",
        sender=env.sender if env else "", recipients=tuple(r.address for r in env.recipients) if env else (),
        authenticated=client.authenticated if client else "", submission=client.submission if client else False,
        tls=f"{client.tls_version} {client.tls_cipher}".strip() if client else "", blob_id=message.blob_id,
        size=message.size, read=message.read)
