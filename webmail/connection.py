"""What each HTTP connection may hold: a slot in the per-address cap, and a deadline for a request's headers.

twisted.web restarts its idle timer on every byte, so a client that sends one header byte every few seconds
(slowloris) keeps a connection for ever, and a thousand of them keep a thousand descriptors. So:

- a connection over ``limits.http_max_connections_per_ip`` for its address is aborted at once;
- from the moment a connection is open, and again after each response, the next request's headers must be complete
  within ``limits.http_header_timeout`` seconds, however the bytes trickle in, or the connection is aborted (an idle
  keep-alive connection ends the same way). A request whose headers arrived is not timed here: a long response such
  as the live-update stream is the application's business;
- output flow control is the connection's :class:`~mailserver.connections.FlowControl`, as in every protocol: it
  is the transport's producer and tells the HTTP channel when output backs up and drains; input is handed to the
  channel in slices of :data:`FEED_SLICE` octets, at most :data:`REQUESTS_PER_TURN` requests or
  :data:`OCTETS_PER_TURN` octets per reactor turn, and none while output does not drain or the channel paused
  reading (twisted.web answers pipelined requests that finish at once in one go, and goes on reading while it
  answers one that does not: a client that pipelines ``GET /`` and never reads would make it buffer every reply,
  and one that reads would hold the reactor for a whole read's worth of requests); a peer that stops reading is
  dropped after ``limits.output_stall_timeout``.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import directlyProvides, providedBy

from mailserver.connections import ConnectionLimiter, FlowControl

log = Logger()

#: Octets of input handed to the HTTP channel at a time; between slices the output is checked.
FEED_SLICE = 256
#: Octets of a request body handed over at a time (no request can start inside a body).
BODY_SLICE = 16 * 1024
#: Requests whose headers may arrive in one reactor turn (the requests of one slice may pass it a little).
REQUESTS_PER_TURN = 4
#: Octets handed over per reactor turn (one read's worth; a request body goes on in the next turn).
OCTETS_PER_TURN = 64 * 1024
#: The reason to pause reading when the HTTP channel asks for it.
CHANNEL = "http-channel"


class WebConnection(ProtocolWrapper):
    """Wraps the HTTP channel of one connection (see the module docstring)."""

    def __init__(self, inner, *, limiter: ConnectionLimiter, clock: IReactorTime, header_timeout: float | None,
                 reactor=None, stall_timeout: float = 300.0):
        super().__init__(None, inner)
        self.limiter = limiter
        self.clock = clock
        self.header_timeout = header_timeout
        self.reactor = reactor if reactor is not None else clock
        self.stall_timeout = stall_timeout
        self.ip = ""
        self.flow: FlowControl | None = None
        self._counted = False
        self._deadline = None
        self._held = bytearray()  # input read and not yet handed to the channel
        self._requests = 0  # requests whose headers arrived in this turn
        self._channel_paused = False

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
        self.flow = FlowControl(self.reactor, self.clock, self.stall_timeout, peer=self.ip)
        self.flow.attach(transport)
        self.awaiting_request()
        self.wrappedProtocol.makeConnection(self)

    # -- what the HTTP channel calls on its transport ---------------------------------------------------------------
    def registerProducer(self, producer, streaming):
        # The channel registers itself; the transport's producer stays the flow control, which passes it on.
        if self.flow is not None:
            self.flow.downstream = producer

    def unregisterProducer(self):
        # The channel unregisters when it closes the connection: a TLS close waits until no producer is registered
        # on the transport, and needs reading.
        if self.flow is not None and not self.flow.stopped:
            self.flow.downstream = None
            self.flow.stop()
            self.transport.unregisterProducer()
            self.transport.resumeProducing()

    def loseConnection(self):
        self.unregisterProducer()
        super().loseConnection()

    def pauseProducing(self):
        self._channel_paused = True
        if self.flow is not None:
            self.flow.pause_reading(CHANNEL)

    def resumeProducing(self):
        self._channel_paused = False
        if self.flow is not None:
            self.flow.resume_reading(CHANNEL)
            if self._held:
                self.flow.next_turn(self._feed)

    def stopProducing(self):
        self.transport.stopProducing()

    def awaiting_request(self) -> None:
        """The next request's headers are due within the header timeout (None: no deadline)."""
        self._cancel()
        if self.connected and self.header_timeout is not None:
            self._deadline = self.clock.callLater(self.header_timeout, self._expired)

    def headers_received(self) -> None:
        self._cancel()
        self._requests += 1

    def dataReceived(self, data):
        if not self._counted:
            return
        self.flow.received()
        self._held += data
        if not self.flow.turn_pending:
            self._feed()

    def _feed(self) -> None:
        """Hand held input to the channel a slice at a time, while its replies drain and it wants input."""
        fed = 0
        self._requests = 0
        while self._held and self.connected and not self.disconnecting and not self._channel_paused:
            if self.flow.output_blocked or fed >= OCTETS_PER_TURN or self._requests >= REQUESTS_PER_TURN:
                self.flow.next_turn(self._feed)
                return
            size = self._slice()
            piece = bytes(self._held[:size])
            del self._held[:size]
            self.wrappedProtocol.dataReceived(piece)
            fed += len(piece)

    def _slice(self) -> int:
        """Small slices while the channel reads request lines and headers (each slice may hold whole pipelined
        requests, which it answers at once), large ones inside a body."""
        channel = getattr(self.wrappedProtocol, "_channel", self.wrappedProtocol)  # twisted.web's generic protocol
        return FEED_SLICE if getattr(channel, "line_mode", 1) else BODY_SLICE

    def connectionLost(self, reason):
        self.connected = 0
        if self.flow is not None:
            self.flow.stop()
        self._held.clear()
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
