"""Submission of a complete message by a signed-in user outside SMTP (the webmail).

Exactly the SMTP submission path: the envelope sender must be an address the account owns
(:meth:`Router.sender_allowed`), every recipient is routed by the same :class:`Router` (aliases, subaddressing,
relay domains, outgoing), and the message goes through :class:`IncomingMessage` (Received, Message-ID/Date when
missing, loop limit, check hooks, local delivery with group commit, the durable queue, where DKIM signing happens at
send time).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer

from mailserver.delivery.local import ClientInfo, IncomingMessage
from mailserver.delivery.router import LOCAL, router_for
from mailserver.smtp import codes
from mailserver.smtp.address import AddressError, MailParams, RcptParams, parse_mailbox
from mailserver.smtp.codes import Reply
from mailserver.smtp.session import Envelope, Recipient
from mailserver.threads import run_in


class SubmitError(Exception):
    """The submission was refused; ``reply`` is the SMTP reply it corresponds to."""

    def __init__(self, reply: Reply, message: str):
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class SubmitResult:
    message_id: str
    delivered_locally: tuple[str, ...]
    queued: tuple[str, ...]
    reply: Reply


def _normalize_crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def submit(server, account_id: int, mail_from: str, recipients: list[str], raw: bytes, *, client_ip: str = "",
           via: str = "webmail") -> defer.Deferred:
    """Submit ``raw`` as ``mail_from`` to ``recipients``; fires with a SubmitResult or fails with SubmitError."""
    return defer.ensureDeferred(_submit(server, account_id, mail_from, recipients, raw, client_ip, via))


async def _submit(server, account_id, mail_from, recipients, raw, client_ip, via) -> SubmitResult:
    router = router_for(server)
    reactor, pools = server.reactor, server.pools
    try:
        sender = parse_mailbox(mail_from)
    except AddressError:
        raise SubmitError(codes.BAD_SENDER_SYNTAX, f"bad sender address {mail_from!r}") from None
    allowed = await run_in(reactor, pools.db_read, router.sender_allowed, account_id, sender.address)
    if not allowed:
        raise SubmitError(codes.NOT_OWNED_SENDER, f"you may not send as {mail_from}")
    if not recipients:
        raise SubmitError(codes.SYNTAX, "no recipients")
    if len(recipients) > server.config.limits.smtp_max_recipients:
        raise SubmitError(codes.SYNTAX, f"at most {server.config.limits.smtp_max_recipients} recipients")
    raw = _normalize_crlf(raw)
    smtputf8 = not sender.address.isascii() or any(not r.isascii() for r in recipients)
    params = MailParams(size=len(raw), body="8BITMIME" if not raw.isascii() else "", smtputf8=smtputf8)
    envelope = Envelope(helo=via, esmtp=True, reverse_path=sender, mail_params=params)
    for rcpt in recipients:
        try:
            mailbox = parse_mailbox(rcpt.strip())
        except AddressError:
            raise SubmitError(codes.SYNTAX, f"bad recipient address {rcpt!r}") from None
        rr = await run_in(reactor, pools.db_read, router.route, mailbox.address, may_relay=True, size=len(raw))
        if not rr.ok:
            raise SubmitError(codes.TRANSACTION_FAILED, f"{rcpt}: {rr.detail or rr.error}")
        envelope.recipients.append(Recipient(mailbox, RcptParams(), rr))
    account = await server.astore.get_account_by_id(account_id)
    info = ClientInfo(ip=client_ip or "127.0.0.1", helo=via, esmtp=True, authenticated=account.address if account
                      else "", account_id=account_id, submission=True)
    message = IncomingMessage(server, router, info, envelope, hooks=server.extra.get("smtp_hooks", ()))
    message.start()
    message.write(raw)
    reply = await message.finish()
    if reply.is_error:
        raise SubmitError(reply, " ".join(reply.lines))
    routes = [r for rc in envelope.recipients for r in rc.route.routes]
    return SubmitResult(message.queue_id, tuple(r.address for r in routes if r.kind == LOCAL),
                        tuple(r.address for r in routes if r.kind != LOCAL), reply)
