"""clamd: every received message is scanned once with the INSTREAM protocol, streamed from the stored blob.

The wire: ``zINSTREAM\\0``, then chunks ``<uint32 big-endian length><data>`` read from the blob one at a time
(:data:`CHUNK`, paced by the socket: the transport pauses us when clamd reads slowly), then a zero length; clamd
answers ``stream: OK\\0``, ``stream: <name> FOUND\\0`` or ``<text> ERROR\\0`` (e.g. its StreamMaxLength).  The reply
is input like any other: at most :data:`MAX_REPLY` bytes, anything but those three forms is an error.  clamd is
reached at ``[antivirus] clamd``: "HOST:PORT" or a Unix socket path.

The verdict (:class:`VirusCheck`, the same for every recipient of the message):

* a virus: ``[antivirus] action`` "refuse" (554 5.7.1 at the end of DATA, the default) or "quarantine" (held:
  ``Verdict.quarantine("virus", ...)`` with the virus name as a fact, and ``X-Virus: <name>`` on the copy);
* clamd unreachable, slower than ``[antivirus] timeout`` or answering nonsense: ``[antivirus] on_error``
  "tempfail" (451 4.7.0, the default: the sending server retries, nothing unscanned gets in) or "accept" (the
  copy says ``X-Virus-Status: unchecked``);
* a message larger than ``[antivirus] max_size`` is not scanned (accepted, ``X-Virus-Status: unchecked (too
  large)``): keep it at clamd's StreamMaxLength.

Every received message is scanned, authenticated submission and webmail sending included (a user's infected
machine must not spread through us); what a user places into their own mailbox (IMAP APPEND, drafts, Sent
copies, imports) only with ``[antivirus] scan_append = true``: nobody else receives it, and refusing an APPEND
would break a client's synchronisation of mail it already has.  Our own delivery reports are not scanned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import TimeoutError as TwistedTimeout
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.config import parse_address
from mailserver.delivery import envelope as ev
from mailserver.delivery.stages import Fact, MessageInfo, Target, Verdict
from mailserver.inbound import policy

log = Logger()

#: Bytes read from the blob and sent as one INSTREAM chunk.
CHUNK = 1024 * 1024
#: The longest reply accepted from clamd (a virus name is short); one byte more is an error.
MAX_REPLY = 4096
#: The longest virus name kept (headers and replies).
MAX_NAME = 100


class ClamdError(Exception):
    """clamd could not give a verdict."""


@dataclass(frozen=True)
class ScanResult:
    virus: str = ""  # "" = clean

    @property
    def clean(self) -> bool:
        return not self.virus


def parse_reply(data: bytes) -> ScanResult:
    """One INSTREAM reply (without its NUL): clean, a virus name, or ClamdError."""
    if len(data) > MAX_REPLY:
        raise ClamdError("reply too long")
    text = data.decode("ascii", "replace").strip()
    if not text.startswith("stream: "):
        if text.endswith(" ERROR"):
            raise ClamdError(policy.clean_text(text, MAX_NAME))
        raise ClamdError("unexpected reply")
    rest = text[len("stream: "):]
    if rest == "OK":
        return ScanResult()
    if rest.endswith(" FOUND"):
        name = policy.clean_text(rest[: -len(" FOUND")], MAX_NAME)
        if name:
            return ScanResult(name)
    if rest.endswith(" ERROR"):
        raise ClamdError(policy.clean_text(rest, MAX_NAME))
    raise ClamdError("unexpected reply")


def endpoint_for(reactor, address: str, timeout: float):
    """A client endpoint for "HOST:PORT", "[v6]:PORT" or a Unix socket path."""
    if address.startswith("/"):
        return UNIXClientEndpoint(reactor, address, timeout=timeout)
    a = parse_address(address)
    cls = TCP6ClientEndpoint if ":" in a.host else TCP4ClientEndpoint
    return cls(reactor, a.host, a.port, timeout=timeout)


@implementer(IPushProducer)
class InStream(protocol.Protocol):
    """One INSTREAM scan: streams ``read(start, end)`` (a Deferred of bytes; short = the end) and fires ``result``
    with a ScanResult or a ClamdError; cancelling ``result`` aborts the connection."""

    def __init__(self, read):
        self.read = read
        self.buffer = b""
        self.result = defer.Deferred(self._cancel)
        self._paused: defer.Deferred | None = None
        self._gone = False

    def _cancel(self, d):
        self._gone = True
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        defer.ensureDeferred(self._feed()).addErrback(self._feed_failed)

    async def _feed(self) -> None:
        self.transport.write(b"zINSTREAM\0")
        offset = 0
        while not self._gone and not self.result.called:
            if self._paused is not None:
                await self._paused
                continue
            data = await self.read(offset, offset + CHUNK)
            if self._gone or self.result.called:
                return
            if data:
                self.transport.write(struct.pack(">I", len(data)) + data)
                offset += len(data)
            if len(data) < CHUNK:
                break
        if not self._gone and not self.result.called:
            self.transport.write(b"\0\0\0\0")

    def _feed_failed(self, f):
        self._finish(failure=ClamdError(f"reading the message failed: {f.getErrorMessage()}"))

    # IPushProducer: the transport's buffer is full / drained.
    def pauseProducing(self):
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self):
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self):
        self._gone = True
        self.resumeProducing()

    def dataReceived(self, data: bytes):
        if self.result.called:
            return
        self.buffer += data
        end = self.buffer.find(b"\0")
        if end >= 0:
            self._finish(self.buffer[:end])
        elif len(self.buffer) > MAX_REPLY:
            self._finish(failure=ClamdError("reply too long"))

    def connectionLost(self, reason=protocol.connectionDone):
        self._gone = True
        self.resumeProducing()
        if not self.result.called:
            if self.buffer:
                self._finish(self.buffer)  # clamd may close without the NUL
            else:
                self._finish(failure=ClamdError("connection closed without a reply"))

    def _finish(self, reply: bytes | None = None, failure: Exception | None = None):
        if self.result.called:
            return
        if failure is None:
            try:
                outcome = parse_reply(reply)
            except ClamdError as e:
                failure = e
        if self.transport is not None and not self._gone:
            self._gone = True
            self.transport.unregisterProducer()
            self.transport.loseConnection()
        if failure is not None:
            self.result.errback(failure)
        else:
            self.result.callback(outcome)


def _timed_out(result, timeout):
    raise ClamdError("timed out")


class ClamdClient:
    """``scan(read)`` fires with a ScanResult or fails with ClamdError, within ``timeout`` seconds on ``clock``."""

    def __init__(self, reactor, address: str, *, timeout: float, clock=None):
        self.reactor = reactor
        self.clock = clock or reactor
        self.timeout = timeout
        self.endpoint = endpoint_for(reactor, address, timeout)

    def scan(self, read) -> defer.Deferred:
        d = defer.ensureDeferred(self._scan(read))
        d.addTimeout(self.timeout, self.clock, onTimeoutCancel=_timed_out)
        return d.addErrback(self._error)

    async def _scan(self, read) -> ScanResult:
        proto = InStream(read)
        await connectProtocol(self.endpoint, proto)
        return await proto.result

    @staticmethod
    def _error(f):
        if f.check(ClamdError):
            return f
        if f.check(TwistedTimeout):
            raise ClamdError("connection timed out")
        raise ClamdError(f.getErrorMessage() or f.type.__name__)


class VirusCheck:
    """The check stage: one scan per message (kept in ``message.memo``), one verdict for every recipient."""

    name = "virus-scan"

    def __init__(self, reactor, config, *, clock=None):
        cfg = config.antivirus
        self.cfg = cfg
        self.exact_mailbox = cfg.scan_append
        self.client = ClamdClient(reactor, cfg.clamd, timeout=cfg.timeout, clock=clock)

    @staticmethod
    def applies(message: MessageInfo) -> bool:
        return message.producer not in (ev.REPORT, ev.DIGEST)  # our own mail

    async def check(self, message: MessageInfo, target: Target) -> Verdict | None:
        if self.name not in message.memo:
            message.memo[self.name] = await self._scan(message)
        return message.memo[self.name]

    async def _scan(self, message: MessageInfo) -> Verdict | None:
        cfg = self.cfg
        if message.size > cfg.max_size:
            return Verdict.tag(add_headers=[("X-Virus-Status", "unchecked (too large)")])
        try:
            result = await self.client.scan(message.read)
        except ClamdError as e:
            log.warn("virus scan of {qid} failed: {error}", qid=message.queue_id, error=str(e))
            if cfg.on_error == "tempfail":
                return Verdict.defer("4.7.0", "Virus scanner unavailable, try again later")
            return Verdict.tag(add_headers=[("X-Virus-Status", "unchecked")])
        if result.clean:
            return None
        log.info("virus scan of {qid}: {virus} found", qid=message.queue_id, virus=result.virus)
        if cfg.action == "quarantine":
            return Verdict.quarantine("virus", policy.clean_text(f"A virus was found: {result.virus}"),
                                      [Fact(self.name, "virus", policy.clean_text(result.virus))],
                                      add_headers=[("X-Virus", result.virus)])
        return Verdict.refuse("5.7.1", f"Message refused: virus found ({result.virus})", reason=ev.VIRUS)
