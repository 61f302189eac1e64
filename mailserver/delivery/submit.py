"""Submission of a complete message by a signed-in user outside SMTP (the webmail).

The same checks as SMTP submission: the envelope sender must be an address the account owns
(:meth:`Router.sender_allowed`, RFC 6409 6.1), every recipient is routed by the same :class:`Router` (aliases,
subaddressing, relay domains, outgoing), and the message goes through the one ingest pipeline (Received,
Message-ID/Date when missing, loop limit, checks, local delivery with group commit, the durable queue, where DKIM
signing happens at send time).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer

from mailserver.address import AddressError, parse_mailbox
from mailserver.delivery.envelope import WEBMAIL, ClientInfo, Envelope, IngestResult, Recipient, Request
from mailserver.delivery.router import LOCAL, OVER_QUOTA


class SubmitError(Exception):
    """The submission was refused; ``status`` is the RFC 3463 code, the message says why."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SubmitResult:
    queue_id: str
    delivered_locally: tuple[str, ...]
    queued: tuple[str, ...]
    result: IngestResult


def _normalize_crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def submit(services, account_id: int, mail_from: str, recipients: list[str], raw: bytes, *, client_ip: str = "",
           via: str = "webmail") -> defer.Deferred:
    """Submit ``raw`` as ``mail_from`` to ``recipients``; fires with a SubmitResult or fails with SubmitError."""
    return defer.ensureDeferred(_submit(services, account_id, mail_from, recipients, raw, client_ip, via))


async def _submit(services, account_id, mail_from, recipients, raw, client_ip, via) -> SubmitResult:
    pipeline = services.pipeline
    router, runner = pipeline.router, pipeline.runner
    try:
        sender = parse_mailbox(mail_from)
    except AddressError:
        raise SubmitError("5.1.7", f"bad sender address {mail_from!r}") from None
    allowed = await runner.read(router.sender_allowed, account_id, sender.address)
    if not allowed:
        raise SubmitError("5.7.1", f"you may not send as {mail_from}")
    if not recipients:
        raise SubmitError("5.5.2", "no recipients")
    limit = services.config.limits.smtp_max_recipients
    if len(recipients) > limit:
        raise SubmitError("5.5.3", f"at most {limit} recipients")
    raw = _normalize_crlf(raw)
    rcpts = []
    for rcpt in recipients:
        try:
            mailbox = parse_mailbox(rcpt.strip())
        except AddressError:
            raise SubmitError("5.1.3", f"bad recipient address {rcpt!r}") from None
        rr = await runner.read(router.route, mailbox.address, may_relay=True, size=len(raw))
        if not rr.ok:
            raise SubmitError("4.2.2" if rr.error == OVER_QUOTA else "5.1.1", f"{rcpt}: {rr.detail or rr.error}")
        rcpts.append(Recipient(mailbox, route=rr))
    smtputf8 = not sender.address.isascii() or any(not r.isascii() for r in recipients)
    envelope = Envelope(sender, tuple(rcpts), size=len(raw), body="8BITMIME" if not raw.isascii() else "",
                        smtputf8=smtputf8)
    account = await services.astore.get_account_by_id(account_id)
    client = ClientInfo(ip=client_ip or "127.0.0.1", helo=via, esmtp=True,
                        authenticated=account.address if account else "", account_id=account_id, submission=True)
    result = await pipeline.ingest(Request(WEBMAIL, envelope=envelope, client=client, log=True), raw)
    if not result.accepted:
        first = ([o for o in result.failed if o.temporary] or list(result.failed))[0]
        raise SubmitError(first.status, first.text)
    routes = [r for rc in rcpts for r in rc.route.routes]
    return SubmitResult(result.queue_id, tuple(r.address for r in routes if r.kind == LOCAL),
                        tuple(r.address for r in routes if r.kind != LOCAL), result)
