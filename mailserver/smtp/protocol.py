"""Twisted glue for the SMTP session: transport, TLS, timers, and the checks the session asks for.

The session (``session.py``) decides everything about the protocol; this module only carries out its actions:
replies are written, STARTTLS starts TLS on the transport, checks run in thread pools (router, authenticator,
delivery) and their answers go back through ``session.resolve``.  While a check is pending, reading from the socket
is paused once input arrives (the one read that arrived is kept; :meth:`FlowControl.pause_on_input`: a client that
waits for the reply, as almost all do, costs no stop and restart of reading), so a client cannot make us buffer
without bound; the same holds while replies do not drain, and the session
handles at most :data:`~mailserver.connections.COMMANDS_PER_TURN` commands per reactor turn (the connection's
:class:`~mailserver.connections.FlowControl`).

At MessageStart the session's envelope becomes a delivery :class:`~mailserver.delivery.envelope.Envelope` and the
body streams into the ingest pipeline; at the end, :func:`reply_for` turns the recipients' outcomes into the reply.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserver import login as login_mod
from mailserver.auth import is_loopback
from mailserver.config import IMPLICIT_TLS
from mailserver.connections import COMMANDS_PER_TURN, SESSION, FlowControl, close_transport, refuse
from mailserver.delivery import callout
from mailserver.delivery import envelope as ev
from mailserver.delivery import router as router_mod
from mailserver.delivery.pipeline import Ingest
from mailserver.login import Login
from mailserver.smtp import codes
from mailserver.smtp.session import (
    AuthResult,
    CheckAuth,
    CheckMail,
    CheckRcpt,
    Close,
    Identity,
    MessageAbort,
    MessageData,
    MessageEnd,
    MessageStart,
    Peer,
    RcptResult,
    Send,
    SessionConfig,
    SmtpSession,
    StartTlsNow,
)
from mailserver.threads import run_in

if TYPE_CHECKING:
    from mailserver.services import Services

log = Logger()

_ROUTE_ERRORS = {
    router_mod.UNKNOWN: codes.UNKNOWN_USER,  # RFC 5321 3.3: 550 at RCPT, never a later bounce
    router_mod.RELAY_DENIED: codes.RELAY_DENIED,
    router_mod.LOOP: codes.Reply(550, "5.4.6", "Alias loop detected"),
    router_mod.TOO_MANY_TARGETS: codes.Reply(550, "5.5.3", "Alias expands to too many recipients"),
}


class SmtpFactory(Factory):
    def __init__(self, services: Services, listener: str):
        self.services = services
        self.listener = listener
        self.submission = listener in ("submission", "submissions")
        self.implicit_tls = listener in IMPLICIT_TLS
        cfg = services.config
        self.session_config = SessionConfig.from_config(cfg, listener, tls_available=services.tls is not None)
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in cfg.smtp.trusted_networks]
        self.router = services.router
        self.pipeline = services.pipeline
        # Sessions per client IP, shared by every SMTP listener of this server.
        self.limiter = services.state.limiter("smtp", cfg.limits.smtp_max_sessions_per_ip)
        self.stall_timeout = cfg.limits.output_stall_timeout
        #: The clock of the stall timer (tests pass a ``task.Clock``).
        self.clock = services.reactor

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self.trusted)

    def buildProtocol(self, addr):
        p = SmtpProtocol(self)
        return p


def build_factory(services: Services, listener_name: str) -> SmtpFactory:
    """The listener registry entry point (mailserver.service.LISTENERS)."""
    return SmtpFactory(services, listener_name)


class SmtpProtocol(Protocol, TimeoutMixin):
    def __init__(self, factory: SmtpFactory):
        self.factory = factory
        self.services = factory.services
        self.session: SmtpSession | None = None
        self.message: Ingest | None = None
        self.ip = ""
        self.flow: FlowControl | None = None
        self._counted = False
        self._closing = None  # the pending abort of a close in progress
        self._gone = False  # connectionLost has run

    # ------------------------------------------------------------------ connection

    def connectionMade(self):
        # Replies to pipelined commands leave one by one as checks finish: without TCP_NODELAY, Nagle's algorithm
        # meets the client's delayed ACK and each such reply waits ~40 ms.
        try:
            self.transport.setTcpNoDelay(True)
        except Exception:
            pass
        peer = self.transport.getPeer()
        self.ip = getattr(peer, "host", "") or ""
        f = self.factory
        if not f.limiter.acquire(self.ip):
            self._closing = refuse(self.transport, self.services.reactor, codes.TOO_MANY_CONNECTIONS.encode(),
                                   tls_handshake_pending=f.implicit_tls)
            return
        self._counted = True
        self.flow = FlowControl(self.services.reactor, f.clock, f.stall_timeout, peer=self.ip)
        self.flow.attach(self.transport)
        self.session = SmtpSession(f.session_config, Peer(self.ip, getattr(peer, "port", 0), is_loopback(self.ip),
                                                          f.is_trusted(self.ip)), tls=f.implicit_tls,
                                   max_commands=COMMANDS_PER_TURN)
        self._apply(self.session.start())

    def connectionLost(self, reason=None):
        self.setTimeout(None)
        if self.flow is not None:
            self.flow.stop()
        self._gone = True
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.ip)
        if self.session is not None:
            self._apply(self.session.connection_lost())

    def dataReceived(self, data: bytes):
        if self.session is None:
            return
        self.flow.received()
        self.resetTimeout()
        self._apply(self.session.receive(data))

    def _next_turn(self) -> None:
        if self.session is not None and not self.session.closed:
            self._apply(self.session.proceed())

    def timeoutConnection(self):
        if self.session is not None:
            self._apply(self.session.timeout())

    def server_shutdown(self):
        """Called by MailServer.stopService: 421 to an idle session, let a busy one finish."""
        if self.session is not None and not self.session.waiting and self.message is None:
            self._apply(self.session.shutdown())

    # ------------------------------------------------------------------ actions

    def _apply(self, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.transport.write(a.reply.encode())
            elif isinstance(a, MessageData):
                if self.message is not None:
                    self.message.write(a.data)
            elif isinstance(a, MessageStart):
                self._message_start(a.envelope)
            elif isinstance(a, MessageAbort):
                if self.message is not None:
                    self.message.abort()
                    self.message = None
            elif isinstance(a, StartTlsNow):
                self.transport.startTLS(self.services.tls)
            elif isinstance(a, Close):
                self._close()
            elif isinstance(a, CheckMail):
                self._run_check(self._check_mail(a), codes.LOCAL_ERROR)
            elif isinstance(a, CheckRcpt):
                self._run_check(self._check_rcpt(a), RcptResult(codes.LOCAL_ERROR))
            elif isinstance(a, CheckAuth):
                self._run_check(self._check_auth(a), AuthResult(None, codes.AUTH_TEMPFAIL))
            elif isinstance(a, MessageEnd):
                self._run_check(self._message_end(), codes.LOCAL_ERROR)
        if self.session is None or self.session.closed:
            # The session may have closed while reading was paused for a check (the final "." and QUIT in one
            # write): the close itself must still read (TLS close_notify, the peer's FIN), so make sure it runs.
            self.setTimeout(None)
            self._close()
            return
        self.setTimeout(self.session.current_timeout())
        self.flow.set_reading(SESSION, not self.session.waiting, on_input=True)
        if self.session.yielded:
            self.flow.next_turn(self._next_turn)  # the rest of the burst in a later turn, once replies drained

    def _close(self) -> None:
        """End the connection: cleanly if the peer lets us, aborted after a grace period otherwise."""
        if self.flow is not None:
            self.flow.stop()
        if self._closing is None and not self._gone:
            self._closing = close_transport(self.transport, self.services.reactor)

    def _run_check(self, d: defer.Deferred, on_error) -> None:
        def failed(f):
            log.failure("smtp check failed", f)
            return on_error

        def resolved(result):
            if self.session is not None:
                self._apply(self.session.resolve(result))

        d.addErrback(failed).addCallback(resolved).addErrback(lambda f: log.failure("smtp glue error", f))

    # ------------------------------------------------------------------ checks

    def _tls_info(self) -> tuple[str, str]:
        if self.session is None or not self.session.tls:
            return "", ""
        try:
            conn = self.transport.getHandle()
            return conn.get_protocol_version_name() or "", conn.get_cipher_name() or ""
        except Exception:
            return "TLS", ""

    def _may_relay(self) -> bool:
        s = self.session
        return s.peer.trusted or (self.factory.submission and s.identity is not None)

    def _check_mail(self, a: CheckMail) -> defer.Deferred:
        s = self.session
        sender = a.envelope.reverse_path
        if not self.factory.submission or s.identity is None:
            return defer.succeed(None)
        if sender is None:
            return defer.succeed(codes.NOT_OWNED_SENDER)

        def check():
            return self.factory.router.sender_allowed(s.identity.account_id, sender.address)

        d = run_in(self.services.reactor, self.services.pools.db_read, check)
        return d.addCallback(lambda ok: None if ok else codes.NOT_OWNED_SENDER)  # 553 5.7.1

    def _check_rcpt(self, a: CheckRcpt) -> defer.Deferred:
        size = a.envelope.mail_params.size or 0
        router = self.factory.router
        address, may_relay = a.recipient.mailbox.address, self._may_relay()
        hit = router.route_cached(address, may_relay=may_relay, size=size)
        if hit is not None:
            d = defer.succeed(hit)  # answered from recent lookups: no trip to a database thread
        else:
            d = run_in(self.services.reactor, self.services.pools.db_read, router.route, address, may_relay=may_relay,
                       size=size)

        def decide(rr: router_mod.RouteResult):
            if rr.error == router_mod.OVER_QUOTA:
                perm = self.services.config.smtp.over_quota_permanent
                return RcptResult(codes.OVER_QUOTA_PERM if perm else codes.OVER_QUOTA_TEMP)
            if rr.error:
                log.info("smtp rcpt <{rcpt}> from {ip} refused: {error}", rcpt=address, ip=self.ip, error=rr.error)
                return RcptResult(_ROUTE_ERRORS[rr.error])
            verifier = self.services.verifier
            relay = [r for r in rr.routes if r.kind == router_mod.RELAY and r.address.lower() == address.lower()]
            if verifier is not None and relay and verifier.applies(a.recipient.mailbox.domain):
                return verifier.verify(address, relay[0].relay_to).addCallback(verified, rr)
            return accepted(rr)

        def accepted(rr: router_mod.RouteResult):
            # Greylisting last: unknown recipients are refused (550) before a triplet is kept for them.
            if self._greylisted():
                return defer.ensureDeferred(self._greylist(a, rr))
            return RcptResult(None, rr)

        def verified(answer: str, rr: router_mod.RouteResult) -> RcptResult:
            # Gateway mode: the host behind us knows its users; refuse unknown ones now, not with a bounce later.
            if answer == callout.VALID:
                return accepted(rr)
            log.info("smtp rcpt <{rcpt}> from {ip} refused: recipient verification {answer}", rcpt=address,
                     ip=self.ip, answer=answer)
            return RcptResult(codes.UNKNOWN_USER if answer == callout.INVALID else codes.VERIFY_TEMPFAIL)

        return d.addCallback(decide)

    def _greylisted(self) -> bool:
        """Whether this RCPT goes through greylisting: on, at RCPT, the MX listener, a client neither
        authenticated nor trusted (``inbound/greylist.py``)."""
        g, s = self.services.greylist, self.session
        return (g is not None and g.at_rcpt and not self.factory.submission and s.identity is None
                and not s.peer.trusted)

    async def _greylist(self, a: CheckRcpt, rr: router_mod.RouteResult) -> RcptResult:
        g = self.services.greylist
        sender = a.envelope.reverse_path
        result = await g.check(self.ip, sender.address if sender is not None else "", a.recipient.mailbox.address)
        if g.deferred(result):
            return RcptResult(codes.Reply(451, "4.7.1", g.text()))  # RFC 6647 2.1
        return RcptResult(None, rr)

    def _check_auth(self, a: CheckAuth) -> defer.Deferred:
        def done(attempt: Login) -> AuthResult:
            if attempt.ok:
                res = attempt.result
                return AuthResult(Identity(res.address, res.account_id, res.address))
            if attempt.outcome == login_mod.INVALID:
                return AuthResult(None, codes.AUTH_INVALID)  # never says whether the account exists
            return AuthResult(None, codes.AUTH_TEMPFAIL)  # throttled, tempfail: RFC 4954 6, 454 4.7.0

        return login_mod.login(self.services.auth, a.username, a.password, self.ip, "smtp").addCallback(done)

    def _message_start(self, envelope) -> None:
        s = self.session
        version, cipher = self._tls_info()
        ident = s.identity
        info = ev.ClientInfo(ip=self.ip, helo=s.helo or "", esmtp=s.esmtp, tls_version=version, tls_cipher=cipher,
                             authenticated=ident.address if ident else "",
                             account_id=ident.account_id if ident else None, submission=self.factory.submission,
                             trusted=s.peer.trusted)
        request = ev.Request(ev.SMTP, envelope=delivery_envelope(envelope), client=info, log=True)
        self.message = self.factory.pipeline.begin(request)

    def _message_end(self) -> defer.Deferred:
        msg, self.message = self.message, None
        if msg is None:
            return defer.succeed(codes.LOCAL_ERROR)
        return msg.finish().addCallback(reply_for)


def delivery_envelope(envelope) -> ev.Envelope:
    """The session's envelope (its parsing types) as delivery's :class:`~mailserver.delivery.envelope.Envelope`."""
    p = envelope.mail_params
    return ev.Envelope(envelope.reverse_path,
                       tuple(ev.Recipient(r.mailbox, r.params.orcpt, r.params.notify, r.route)
                             for r in envelope.recipients),
                       size=p.size, body=p.body, smtputf8=p.smtputf8, envid=p.envid, ret=p.ret)


#: Why a recipient was not served -> the reply (RFC 5321 4.2.2, RFC 3463).
_REASON_REPLIES = {
    ev.NONEXISTENT: codes.UNKNOWN_USER,
    ev.LOOP: codes.LOOP_DETECTED,  # RFC 5321 6.3
    ev.ERROR: codes.LOCAL_ERROR,
}


def outcome_reply(o: ev.Outcome) -> codes.Reply:
    """The reply for one recipient's outcome."""
    if o.ok:
        return codes.QUEUED
    if o.reason == ev.OVERQUOTA:
        return codes.OVER_QUOTA_PERM if o.kind == ev.REFUSED else codes.OVER_QUOTA_TEMP
    reply = _REASON_REPLIES.get(o.reason)
    if reply is not None:
        return reply
    if o.reason in (ev.NO_ROUTE, ev.VIRUS):
        return codes.Reply(554, o.status, o.text)  # RFC 5321 4.2.3: transaction failed
    # A check's verdict: 550 for a refusal (policy, RFC 5321 4.2.3), 451 for a deferral.
    return codes.Reply(550 if o.kind == ev.REFUSED else 451, o.status, o.text)


def reply_for(result: ev.IngestResult) -> codes.Reply:
    """The reply after the end of data: 250 when every recipient has the message, the failure when none has, and
    250 naming the failed recipients when only some could be served (each recipient is all-or-nothing; the sender
    was sent a failure report for them before this reply)."""
    if not result.outcomes:
        return codes.LOCAL_ERROR
    ok, failed = result.accepted, result.failed
    if not failed:
        return codes.QUEUED.with_text(f"Message accepted as {result.queue_id}")
    replies = [outcome_reply(o) for o in failed]
    if not ok:
        return ([r for r in replies if r.is_temporary] or replies)[0]
    detail = "; ".join(f"{o.address}: {r.code} {r.enhanced} {r.lines[0]}" for o, r in zip(failed, replies,
                                                                                          strict=True))
    return codes.QUEUED.with_text(f"Message accepted as {result.queue_id} for {len(ok)} of {len(result.outcomes)} "
                                  f"recipients; not delivered: {detail}")
