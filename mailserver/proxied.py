"""Listeners behind a TCP load balancer: ``[listen_proxied]`` addresses, where every connection begins with a PROXY
header (:mod:`mailserver.proxywire`) from an address in ``[proxy] trusted``.

:class:`ProxiedFactory` wraps a listener's factory (and, on an implicit-TLS listener, the TLS layer: the header comes
before the handshake, in the clear).  For each connection:

* a peer outside ``[proxy] trusted`` is closed at accept, before anything is read or written;
* the header must be complete within ``limits.proxy_header_timeout`` seconds (however slowly it trickles in) and be
  valid, or the connection is aborted without a greeting;
* only then is the protocol built, with ``getPeer()`` answering the client's address from the header, so the
  per-address caps, login throttling, logs, SMTP's Received field and the hooks all see the client.  The address is
  a :class:`~mailserver.proxywire.ProxiedHost`: never "loopback" for the plaintext policy.  ``getHost()`` answers the
  address the client reached on the balancer.  A ``LOCAL``/``UNKNOWN`` header (the balancer's health check) leaves
  the balancer's own address.

Twisted's ``twisted.protocols.haproxy`` was not usable here: it connects the wrapped protocol before the header is
read (our protocols take the peer and send their greeting in ``connectionMade``), drops a connection whose first
read is shorter than 8 or 16 bytes, has no deadline, accepts a v1 line over 107 bytes when its CRLF comes in the
same read, and passes unchecked bytes on as the address.
"""

from __future__ import annotations

from twisted.internet import address
from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import alsoProvides, directlyProvides, implementer, providedBy

from mailserver.proxywire import Networks, ProxiedHost, ProxyHeader, ProxyHeaderError, ProxyHeaderParser

log = Logger()


def _address(host: str, port: int):
    cls = address.IPv6Address if ":" in host else address.IPv4Address
    return cls("TCP", ProxiedHost(host), port)


class ProxiedConnection(ProtocolWrapper):
    """One connection of a proxied listener: reads the PROXY header, then becomes the transport of the protocol."""

    def __init__(self, factory: "ProxiedFactory"):
        super().__init__(factory, None)
        self.parser = ProxyHeaderParser()
        self._peer = None
        self._host = None
        self._deadline = None

    # -- before the header

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self):
        self.factory.pending.add(self)
        self._deadline = self.factory.clock.callLater(self.factory.header_timeout, self._expired)

    def dataReceived(self, data: bytes):
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        try:
            header = self.parser.feed(data)
        except ProxyHeaderError as e:
            self._refuse(str(e))
            return
        if header is not None:
            self._begin(header)

    def _expired(self) -> None:
        self._deadline = None
        self._refuse(f"no complete PROXY header within {self.factory.header_timeout}s")

    def _refuse(self, why: str) -> None:
        self._stop_waiting()
        log.info("{name}: connection from {ip} closed: {why}", name=self.factory.name,
                 ip=getattr(self.transport.getPeer(), "host", "?"), why=why)
        self.transport.abortConnection()

    def _stop_waiting(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self.factory.pending.discard(self)

    def _begin(self, header: ProxyHeader) -> None:
        self._stop_waiting()
        real = self.transport.getPeer()
        if header.source is not None:
            self._peer = _address(*header.source)
            self._host = _address(*header.destination)
        else:  # the balancer's own connection: its address, still not "loopback"
            self._peer = _address(getattr(real, "host", ""), getattr(real, "port", 0))
        inner = self.factory.wrappedFactory.buildProtocol(self._peer)
        if inner is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = inner
        inner.makeConnection(self)
        rest = self.parser.rest
        if rest:
            inner.dataReceived(rest)

    # -- the transport of the protocol

    def getPeer(self):
        return self._peer if self._peer is not None else self.transport.getPeer()

    def getHost(self):
        return self._host if self._host is not None else self.transport.getHost()

    def startTLS(self, *args, **kwargs):
        # STARTTLS: the TLS layer goes in below us and announces its handshake to us, to be passed on.  Declared
        # only now: the protocol copied our interfaces when it was connected, and must not claim this one itself.
        alsoProvides(self, IHandshakeListener)
        self.transport.startTLS(*args, **kwargs)

    def handshakeCompleted(self):
        listener = IHandshakeListener(self.wrappedProtocol, None)
        if listener is not None:
            listener.handshakeCompleted()

    def connectionLost(self, reason):
        self._stop_waiting()
        self.disconnecting = 1
        self.connected = 0
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
            self.wrappedProtocol = None


@implementer(IProtocolNegotiationFactory)
class ProxiedFactory(Factory):
    """Wraps a listener's factory (see the module docstring); ``pending`` are connections still awaiting a header."""

    noisy = False

    def __init__(self, wrapped, *, name: str, trusted: Networks, clock, header_timeout: float):
        self.wrappedFactory = wrapped
        self.name = name
        self.trusted = trusted
        self.clock = clock
        self.header_timeout = header_timeout
        self.pending: set[ProxiedConnection] = set()

    def doStart(self):
        self.wrappedFactory.doStart()
        super().doStart()

    def doStop(self):
        self.wrappedFactory.doStop()
        super().doStop()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if host not in self.trusted:
            # Closed at accept: nothing read, nothing written (a PROXY header from anyone else is refused).
            log.info("{name}: connection from {ip} refused: not a trusted proxy", name=self.name, ip=host)
            return None
        return ProxiedConnection(self)

    def acceptableProtocols(self):
        inner = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(inner.acceptableProtocols()) if inner is not None else []

    def abort_pending(self) -> None:
        """Abort the connections still waiting for their header (the server stops)."""
        for conn in list(self.pending):
            conn.transport.abortConnection()
        self.pending.clear()
