"""The thin Twisted side of the SMTP client: one TCP (or TLS) connection driving one :class:`SmtpClientSession`.

:func:`run_session` connects to ``ip:port``, feeds server bytes to the session, carries out its actions and fires with
the session when the connection is over (its ``results`` then hold every recipient's outcome).  The body is streamed
from the blob store in :data:`BODY_CHUNK` pieces read in the blob thread pool, dot-stuffed on the way
(:class:`DotStuffer`), with the transport's flow control (a push producer): the message is never held in memory whole.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import BinaryIO, Callable

from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.delivery.client import Close, DotStuffer, Send, SendBody, SmtpClientSession, StartTls
from mailserver.threads import run_in

log = Logger()

#: Bytes read from the blob store per step while streaming a body.
BODY_CHUNK = 64 * 1024
#: Seconds to wait for a TCP connection (not in RFC 5321; a dead MX must not hold a slot for minutes).
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class TlsSettings:
    """How to start TLS: ``verify_host`` set = verify the certificate against ``ca_file`` (or the system roots)."""

    verify_host: str = ""
    ca_file: str = ""

    def options(self):
        if not self.verify_host:
            # RFC 7435 / RFC 3207 opportunistic TLS: encrypt, do not authenticate (MTA-STS/DANE decide later).
            return ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        if self.ca_file:
            with open(self.ca_file, "rb") as f:
                pem = f.read()
            certs = [ssl.Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + part)
                     for part in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]
            trust = ssl.trustRootFromCertificates(certs)
        else:
            trust = ssl.platformTrust()
        return ssl.optionsForClientTLS(self.verify_host, trustRoot=trust)


@implementer(IPushProducer)
class SmtpClientProtocol(Protocol):
    def __init__(self, session: SmtpClientSession, open_body: Callable[[], BinaryIO], blob_pool, clock,
                 tls: TlsSettings | None, prefix: bytes = b"", registry: set | None = None):
        self.session = session
        self.open_body = open_body
        self.blob_pool = blob_pool
        self.clock = clock
        self.tls = tls
        self.prefix = prefix
        self.finished: defer.Deferred = defer.Deferred()
        self._timer = None
        self._paused: defer.Deferred | None = None
        self._lost = False
        self.registry = registry

    # ----------------------------------------------------------------------------------------- timers

    def _arm(self, seconds: float | None = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self._lost:
            self._timer = self.clock.callLater(self.session.timeout if seconds is None else seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self._do(self.session.timed_out())

    # ----------------------------------------------------------------------------------------- protocol

    def connectionMade(self):  # noqa: N802
        if self.registry is not None:
            self.registry.add(self)
        self._arm()

    def dataReceived(self, data: bytes):  # noqa: N802
        self._do(self.session.receive(data))
        if not self._lost:
            self._arm()

    def connectionLost(self, reason):  # noqa: N802
        self._lost = True
        if self.registry is not None:
            self.registry.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._paused is not None:
            d, self._paused = self._paused, None
            d.callback(None)
        self.session.connection_lost(reason.getErrorMessage())
        if not self.finished.called:
            self.finished.callback(self.session)

    def _do(self, actions) -> None:
        for a in actions:
            if self._lost:
                return
            if isinstance(a, Send):
                self.transport.write(a.data)
            elif isinstance(a, StartTls):
                self.transport.startTLS((self.tls or TlsSettings()).options())
                self._do(self.session.tls_started())
            elif isinstance(a, SendBody):
                self._stream_body().addErrback(self._body_failed)
            elif isinstance(a, Close):
                self.transport.loseConnection()

    # ----------------------------------------------------------------------------------------- body

    def pauseProducing(self):  # noqa: N802
        if self._paused is None:
            self._paused = defer.Deferred()
            # RFC 5321 4.5.3.2.5: each send of data must complete within the data-block timeout.
            self._arm(self.session.policy.timeouts.data_block)

    def resumeProducing(self):  # noqa: N802
        if self._paused is not None:
            d, self._paused = self._paused, None
            d.callback(None)

    def stopProducing(self):  # noqa: N802
        self.resumeProducing()

    @defer.inlineCallbacks
    def _stream_body(self):
        stuffer = DotStuffer()
        self.transport.registerProducer(self, True)
        # One thread hop opens the body and reads its first chunk; a small message needs no other.
        f, chunk = yield run_in(self.clock, self.blob_pool, _open_and_read, self.open_body)
        try:
            if self.prefix:
                self.transport.write(stuffer.feed(self.prefix))
            while chunk and not self._lost:
                self.transport.write(stuffer.feed(chunk))
                self._arm(self.session.policy.timeouts.data_block)
                if self._paused is not None:
                    yield self._paused
                if f is None:
                    break
                chunk = yield run_in(self.clock, self.blob_pool, f.read, BODY_CHUNK)
        finally:
            if f is not None:
                yield run_in(self.clock, self.blob_pool, f.close)
        if self._lost:
            return
        self.transport.unregisterProducer()
        self.transport.write(stuffer.finish())
        self._do(self.session.body_sent())
        self._arm()

    def _body_failed(self, failure):
        log.failure("streaming a message body failed", failure)
        if not self._lost:
            self.transport.abortConnection()


def _open_and_read(open_body) -> tuple[BinaryIO | None, bytes]:
    """Open the body and read its first chunk; when that was all of it, close it and return (None, data)."""
    f = open_body()
    try:
        chunk = f.read(BODY_CHUNK)
        if len(chunk) < BODY_CHUNK:
            f.close()
            return None, chunk
        return f, chunk
    except BaseException:
        f.close()
        raise


def run_session(reactor, ip: str, port: int, session: SmtpClientSession, open_body: Callable[[], BinaryIO],
                blob_pool, *, tls: TlsSettings | None = None, implicit_tls: bool = False, prefix: bytes = b"",
                connect_timeout: float = CONNECT_TIMEOUT, registry: set | None = None) -> defer.Deferred:
    """Connect and run ``session``; fires with the session (a connection failure is recorded in its results)."""
    family6 = ipaddress.ip_address(ip).version == 6
    endpoint = (TCP6ClientEndpoint if family6 else TCP4ClientEndpoint)(reactor, ip, port, timeout=connect_timeout)
    if implicit_tls:
        endpoint = wrapClientTLS((tls or TlsSettings()).options(), endpoint)
    proto = SmtpClientProtocol(session, open_body, blob_pool, reactor, tls, prefix, registry)
    d = connectProtocol(endpoint, proto)

    def failed(failure):
        session.connection_lost(f"cannot connect to [{ip}]:{port}: {failure.getErrorMessage()}")
        return session

    d.addCallbacks(lambda _: proto.finished, failed)
    return d
