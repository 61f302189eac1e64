"""What each HTTP connection may hold: a slot in the per-address cap, and a deadline for a request's headers.

twisted.web restarts its idle timer on every byte, so a client that sends one header byte every few seconds
(slowloris) keeps a connection for ever, and a thousand of them keep a thousand descriptors. So:

- a connection over ``limits.http_max_connections_per_ip`` for its address is aborted at once;
- from the moment a connection is open, and again after each response, the next request's headers must be complete
  within ``limits.http_header_timeout`` seconds, however the bytes trickle in, or the connection is aborted (an idle
  keep-alive connection ends the same way). A request whose headers arrived is not timed here: a long response such
  as the live-update stream is the application's business.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import directlyProvides, providedBy

from mailserver.connections import ConnectionLimiter

log = Logger()


class WebConnection(ProtocolWrapper):
    """Wraps the HTTP channel of one connection (see the module docstring)."""

    def __init__(self, inner, *, limiter: ConnectionLimiter, clock: IReactorTime, header_timeout: float):
        super().__init__(None, inner)
        self.limiter = limiter
        self.clock = clock
        self.header_timeout = header_timeout
        self.ip = ""
        self._counted = False
        self._deadline = None

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        self.transport = transport
        self.connected = 1
        self.ip = getattr(transport.getPeer(), "host", "") or ""
        if not self.limiter.acquire(self.ip):
            log.info("http connection from {ip} refused: too many connections from that address", ip=self.ip)
            transport.abortConnection()
            return
        self._counted = True
        self.awaiting_request()
        self.wrappedProtocol.makeConnection(self)

    def awaiting_request(self) -> None:
        """The next request's headers are due within the header timeout."""
        self._cancel()
        if self.connected:
            self._deadline = self.clock.callLater(self.header_timeout, self._expired)

    def headers_received(self) -> None:
        self._cancel()

    def dataReceived(self, data):
        if self._counted:
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason):
        self.connected = 0
        self._cancel()
        if self._counted:
            self._counted = False
            self.limiter.release(self.ip)
            self.wrappedProtocol.connectionLost(reason)

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        log.info("http connection from {ip} closed: no complete request within {t}s", ip=self.ip,
                 t=self.header_timeout)
        self.transport.abortConnection()


def connection_of(request) -> WebConnection | None:
    """The WebConnection a twisted.web request arrived on, if any."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    return transport if isinstance(transport, WebConnection) else None
