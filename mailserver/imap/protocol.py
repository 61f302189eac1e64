"""Twisted glue for :class:`mailserver.imap.session.ImapSession`: transport, TLS, compression, timers, limits.

``build_factory(services, listener_name)`` serves the ``imap`` (plain with STARTTLS) and ``imaps`` (implicit TLS,
RFC 8314) listeners of ``mailserver.service``. Everything IMAP is decided by the session; this module:

- carries bytes in and out through the connection's :class:`~mailserver.connections.FlowControl`: reading pauses
  while the session is not reading (a command waiting on the database holds pipelined input in the kernel, not in
  memory) and while output does not drain; large FETCH output and the next pipelined command wait
  (``writable()``) while the transport's buffer is full, and a peer that stops reading is dropped after
  ``limits.output_stall_timeout``;
- STARTTLS (``services.tls``) and COMPRESS=DEFLATE (RFC 4978: raw deflate both ways, a sync flush per write; inflated
  input is fed in bounded pieces, never more than the session will read);
- autologout after ``limits.imap_idle_timeout`` (30 minutes, RFC 9051 5.4) of inactivity; entering IDLE re-arms it;
- ``limits.imap_max_sessions_per_ip`` connections per client address (more get ``* BYE`` and are closed).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserver.clusterstate import RecentClaims
from mailserver.connections import SESSION, FlowControl, close_transport, refuse

from . import response as r
from .session import ImapSession

if TYPE_CHECKING:
    from mailserver.services import Services

log = Logger()

#: Octets of inflated input handed to the session per step (COMPRESS=DEFLATE).
INFLATE_STEP = 64 * 1024


class ImapProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: "ImapFactory"):
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin's timer (the idle autologout)
        self.session: ImapSession | None = None
        self.client_ip = ""
        self.flow: FlowControl | None = None
        self._deflate = None
        self._inflate = None
        self._inflate_tail = b""
        self._counted = False
        self._closing = None  # the pending abort of a close in progress
        self._gone = False  # connectionLost has run
        self._session_reading = True  # what the session last asked for (set_reading)

    # -- Connection (what the session calls) ------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(data)

    def start_tls(self) -> None:
        self.transport.startTLS(self.factory.services.tls)  # twisted moves the registered producer under TLS

    def start_compress(self) -> None:
        # RFC 4978 4: raw DEFLATE (RFC 1951), no zlib header.
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)

    def close(self) -> None:
        self.setTimeout(None)
        if self.flow is not None:
            self.flow.stop()
        if self._closing is None and not self._gone:
            self._closing = close_transport(self.transport, self.factory.services.reactor)

    def set_reading(self, on: bool) -> None:
        # The session says this after every command and every pump (mostly the same again): only a change is
        # passed on to the flow control.  A pause takes effect once input arrives (as SMTP's, FlowControl.
        # pause_on_input): a command that runs while its client waits for the reply (most of them: SELECT,
        # FETCH, STATUS... wait for the store) then costs no stop and start of reading (two epoll_ctl calls and
        # the reactor's bookkeeping); a client that pipelines has at most the one read that arrived taken in
        # (held in the reader, or as compressed input) before reading pauses.
        if on != self._session_reading:
            self._session_reading = on
            self.flow.set_reading(SESSION, on, on_input=True)

    def call_soon(self, f) -> None:
        """Run ``f`` in a later reactor turn (the session yields between batches of commands)."""
        self.factory.services.reactor.callLater(0, f)

    def writable(self) -> Deferred | None:
        return self.flow.writable() if self.flow is not None else None

    def activity(self, idle: bool = False) -> None:
        self.resetTimeout()

    # -- Twisted ----------------------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        factory = self.factory
        services = factory.services
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", "") or ""
        try:
            self.transport.setTcpNoDelay(True)
        except Exception:
            pass
        if not factory.limiter.acquire(self.client_ip):
            self._closing = refuse(self.transport, services.reactor,
                                   r.status_line("BYE", "too many connections from your address", "UNAVAILABLE"),
                                   tls_handshake_pending=factory.implicit_tls)
            return
        self._counted = True
        self.flow = FlowControl(services.reactor, factory.clock, factory.stall_timeout, peer=self.client_ip)
        self.flow.on_reading = self._feed_held_input
        self.flow.attach(self.transport)
        self.writable = self.flow.writable  # asked before every command: the flow control's own, one call
        self.session = ImapSession(services, self, client_ip=self.client_ip, tls_active=factory.implicit_tls,
                                   tls_available=(not factory.implicit_tls) and services.tls is not None,
                                   recent=factory.recent)
        self.setTimeout(factory.idle_timeout)
        self.session.greeting()

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            return
        self.flow.received()
        if self._inflate is not None:
            self._inflate_feed(data)
            return
        self.session.data_received(data)

    def _feed_held_input(self) -> None:
        """Reading resumed: inflate the compressed input that was held back meanwhile."""
        if self._inflate_tail:
            tail, self._inflate_tail = self._inflate_tail, b""
            self._inflate_feed(tail)

    def _inflate_feed(self, data: bytes) -> None:
        inflater = self._inflate
        while data and self.session is not None and not self.session.closed:
            self.flow.received()  # the last piece's replies may have filled the transport's buffer
            if not self.flow.reading:
                self._inflate_tail += data
                return
            try:
                out = inflater.decompress(data, INFLATE_STEP)
            except zlib.error:
                self.write(r.status_line("BYE", "invalid compressed data"))
                self.close()
                return
            data = inflater.unconsumed_tail
            if out:
                self.session.data_received(out)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.setTimeout(None)
        if self.flow is not None:
            self.flow.stop()
        self._gone = True
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.client_ip)
        if self.session is not None:
            self.session.connection_lost()

    def timeoutConnection(self) -> None:
        session = self.session
        if session is not None and session.busy and session._line_waiter is None:
            self.resetTimeout()  # a command is running: not idle
            return
        # RFC 9051 5.4: autologout after at least 30 minutes of inactivity.
        log.info("imap autologout of {ip}", ip=self.client_ip)
        self.write(r.status_line("BYE", "autologout: idle for too long"))
        self.close()

    def server_shutdown(self) -> None:
        if self.session is not None:
            self.session.server_shutdown()


class ImapFactory(protocol.Factory):
    def __init__(self, services: Services, listener_name: str):
        self.services = services
        self.listener_name = listener_name
        self.implicit_tls = listener_name == "imaps"
        limits = services.config.limits
        self.idle_timeout = limits.imap_idle_timeout
        self.stall_timeout = limits.output_stall_timeout
        #: The clock of the idle and stall timers (tests pass a ``task.Clock``).
        self.clock = services.reactor
        # Shared by every IMAP listener of the server: per-IP counts and \Recent bookkeeping (the cluster state's,
        # shared with other processes on a PostgreSQL database).
        self.limiter = services.state.limiter("imap", limits.imap_max_sessions_per_ip)
        self.recent: RecentClaims = services.cluster.recent

    def buildProtocol(self, addr) -> ImapProtocol:
        return ImapProtocol(self)


def build_factory(services: Services, listener_name: str) -> ImapFactory:
    """The factory for the ``imap`` or ``imaps`` listener (``services`` from ``mailserver.service.MailServer``)."""
    if listener_name not in ("imap", "imaps"):
        raise ValueError(f"not an IMAP listener: {listener_name}")
    state = services.state
    if state.imap_preload is None:
        from twisted.internet.defer import ensureDeferred

        from .cmd_mailbox import preload_snapshots

        def preload():
            if not services.running():  # stopped before we got to it
                return
            d = ensureDeferred(preload_snapshots(services))
            d.addErrback(lambda f: log.failure("preloading mailbox listings failed", f))
            state.imap_preload = d

        state.imap_preload = services.reactor.callLater(0.5, preload)
    return ImapFactory(services, listener_name)
