"""The check hook interface: the point in the delivery pipeline, before the final reply, where checks decide.

A hook gets a :class:`MessageContext` (envelope, client facts, the durable blob of the message) once the body is
complete and written, and returns a :class:`HookResult` (or a Deferred / coroutine of one).  Verdicts:

* ``accept``  - nothing to do;
* ``reject``  - refuse the message with ``reply`` (5xx), nothing is delivered;
* ``tempfail`` - refuse with ``reply`` (4xx), the client retries;
* ``tag``     - deliver, adding ``add_headers`` at the top, ``keywords`` and/or filing local copies into ``mailbox``
  (e.g. a spam checker files into "Junk" with keyword "$Junk");
* ``redirect`` - replace the recipients with ``recipients`` (routed again, e.g. a quarantine address).

Hooks run in registration order; the first reject/tempfail wins and stops the chain; tags accumulate; a later
redirect replaces an earlier one.  Spam, virus and sender-authentication checks come later and plug in here
(``server.extra["smtp_hooks"]``: a list of hooks).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailserver.smtp.codes import Reply

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
    blob_id: str
    size: int
    read: Any = None  # callable(start=0, end=None) -> Deferred[bytes] reading the stored message


@dataclass(frozen=True)
class HookResult:
    action: str = ACCEPT
    reply: Reply | None = None
    add_headers: tuple[tuple[str, str], ...] = ()
    keywords: tuple[str, ...] = ()
    mailbox: str = ""
    recipients: tuple[str, ...] = ()


@dataclass
class Verdict:
    """The combined outcome of every hook."""

    action: str = ACCEPT  # ACCEPT (possibly tagged/redirected), REJECT or TEMPFAIL
    reply: Reply | None = None
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    mailbox: str = ""
    recipients: tuple[str, ...] | None = None  # None = unchanged


class CheckHook(Protocol):
    name: str

    def check(self, ctx: MessageContext) -> Any:  # HookResult | Deferred[HookResult] | Awaitable[HookResult]
        ...


async def run_hooks(hooks, ctx: MessageContext) -> Verdict:
    verdict = Verdict()
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
