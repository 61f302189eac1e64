"""rspamd: one ``POST /checkv2`` per message; its score, action and symbols go to the message's score card.

The request carries the envelope facts as rspamd's HTTP protocol names them (``IP``, ``Helo``, ``From``, one
``Rcpt`` per recipient, ``Queue-Id``, ``MTA-Name``) and the message as stored (our Received field included) as its
body.  The reply is JSON: ``score``, ``required_score``, ``action`` (``no action``, ``greylist``, ``add header``,
``rewrite subject``, ``soft reject``, ``reject``) and ``symbols``; :func:`parse_reply` checks every field it uses
(the reply of a process on the network is input like any other: at most :data:`MAX_REPLY` bytes, types checked,
names cleaned) and raises :class:`RspamdError` for anything else.

rspamd's score is the card's engine score, its symbols the "why" (``X-Spam-Symbols``), and its action is honoured
(:data:`FORCED`): reject -> refuse, soft reject / greylist -> defer, add header / rewrite subject -> at least a
tag.  The request runs on the reactor (``twisted.web.client.Agent``, persistent connections) with a time limit
(``[antispam] timeout``); rspamd unreachable, too slow or answering nonsense is ``[antispam] on_error``: "accept"
(the copy says ``X-Spam-Status: unchecked (rspamd)``, the default: a spam filter's outage should not stop the mail)
or "tempfail" (451 4.7.0, the sending server retries).  A message larger than ``[antispam] max_size`` is not sent
(accepted as unchecked).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from mailserver.delivery.stages import MessageInfo, Target, Verdict
from mailserver.inbound import policy

log = Logger()

#: The largest reply read from rspamd (a normal one is a few KiB); one byte more is an error.
MAX_REPLY = 1024 * 1024
#: Symbols taken from one reply (the rest are dropped; the score stays rspamd's).
MAX_SYMBOLS = 200

#: rspamd's action -> ours (the more severe of it and the thresholds' wins).
FORCED = {
    "reject": policy.REFUSE,
    "discard": policy.REFUSE,  # we never drop mail silently: refusing tells the sender
    "soft reject": policy.DEFER,
    "greylist": policy.DEFER,
    "quarantine": policy.QUARANTINE,
    "rewrite subject": policy.TAG,  # the subject is left as it is: the tag says it
    "add header": policy.TAG,
    "no action": policy.ACCEPT,
}


class RspamdError(Exception):
    """rspamd could not give a verdict (unreachable, too slow, a reply that is not one)."""


@dataclass(frozen=True)
class RspamdResult:
    action: str
    score: float
    required_score: float
    symbols: tuple[policy.Symbol, ...]
    message: str = ""  # rspamd's smtp_message, if any


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RspamdError(f"{what} is not a number")
    return float(value)


def parse_reply(body: bytes) -> RspamdResult:
    """rspamd's /checkv2 JSON reply, checked; RspamdError for anything that is not a reply."""
    if len(body) > MAX_REPLY:
        raise RspamdError("reply too large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: a reply nested thousands deep
        raise RspamdError("reply is not JSON") from None
    if not isinstance(data, dict):
        raise RspamdError("reply is not a JSON object")
    action = data.get("action")
    if not isinstance(action, str):
        raise RspamdError("reply has no action")
    score = _number(data.get("score"), "score")
    required = data.get("required_score", 0.0)
    required = _number(required, "required_score")
    symbols = []
    raw_symbols = data.get("symbols", {})
    if not isinstance(raw_symbols, dict):
        raise RspamdError("symbols is not an object")
    for name, sym in list(raw_symbols.items())[:MAX_SYMBOLS]:
        if not isinstance(sym, dict):
            continue
        try:
            weight = _number(sym.get("score", 0.0), "symbol score")
        except RspamdError:
            continue
        options = sym.get("options")
        detail = ""
        if isinstance(options, list):
            detail = ", ".join(str(o) for o in options[:10] if isinstance(o, (str, int, float)))
        symbols.append(policy.Symbol(policy.clean_name(name), weight,
                                     policy.clean_text(detail, policy.MAX_SYMBOL_DETAIL), "rspamd"))
    messages = data.get("messages")
    text = ""
    if isinstance(messages, dict) and isinstance(messages.get("smtp_message"), str):
        text = policy.clean_text(messages["smtp_message"])
    return RspamdResult(action.lower(), score, required, tuple(symbols), text)


def _value(text: str) -> bytes:
    """A request header value: no CR, LF or NUL (header injection), UTF-8 (SMTPUTF8 addresses)."""
    return "".join(c for c in text if c not in "\r\n\0").encode("utf-8")


def request_headers(message: MessageInfo, hostname: str) -> Headers:
    """rspamd's envelope headers for one message."""
    h = Headers()
    client, env = message.client, message.envelope
    if client is not None:
        if client.ip:
            h.addRawHeader(b"IP", _value(client.ip))
        if client.helo:
            h.addRawHeader(b"Helo", _value(client.helo))
        if client.authenticated:
            h.addRawHeader(b"User", _value(client.authenticated))
    if env is not None:
        if env.sender:
            h.addRawHeader(b"From", _value(env.sender))
        for r in env.recipients:
            h.addRawHeader(b"Rcpt", _value(r.address))
    h.addRawHeader(b"Queue-Id", _value(message.queue_id))
    h.addRawHeader(b"MTA-Name", _value(hostname))
    h.addRawHeader(b"Content-Type", b"message/rfc822")
    return h


@implementer(IBodyProducer)
class _Bytes:
    """The message as the request body (read from the blob once, at most max_size bytes)."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Collect(protocol.Protocol):
    """Collects a response body up to ``limit`` bytes; more stops the transfer with an error."""

    def __init__(self, limit: int, declared=UNKNOWN_LENGTH):
        self.limit = limit
        self.declared = declared  # the response's Content-Length, if it has one
        self.parts: list[bytes] = []
        self.size = 0
        self.done = defer.Deferred(self._cancel)

    def connectionMade(self):
        if self.declared is not UNKNOWN_LENGTH and self.declared > self.limit:
            self.transport.stopProducing()  # refused before a byte of it is read
            self.done.errback(RspamdError("reply too large"))

    def _cancel(self, d):
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes):
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            self.done.errback(RspamdError("reply too large"))
            return
        self.parts.append(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):  # PotentialDataLoss: no length, ended by closing
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(RspamdError(f"reply cut off: {reason.getErrorMessage()}"))


def _timed_out(result, timeout):
    raise RspamdError("timed out")


class RspamdClient:
    """``check(message)`` fires with an :class:`RspamdResult` or fails with :class:`RspamdError` (never later than
    ``timeout`` seconds on ``clock``)."""

    def __init__(self, reactor, url: str, *, timeout: float, hostname: str, clock=None, max_size: int):
        self.reactor = reactor
        self.clock = clock or reactor
        self.url = (url.rstrip("/") + "/checkv2").encode("ascii")
        self.timeout = timeout
        self.hostname = hostname
        self.max_size = max_size
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.pool.cachedConnectionTimeout = 60
        self.agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)

    def check(self, message: MessageInfo) -> defer.Deferred:
        d = defer.ensureDeferred(self._check(message))
        d.addTimeout(self.timeout, self.clock, onTimeoutCancel=_timed_out)
        return d.addErrback(self._error)

    async def _check(self, message: MessageInfo) -> RspamdResult:
        body = await message.read(0, None)  # the stage sends nothing larger than max_size
        headers = request_headers(message, self.hostname)
        try:
            response = await self.agent.request(b"POST", self.url, headers, _Bytes(body))
        except ResponseNeverReceived as e:
            if any(r.check(defer.CancelledError) for r in e.reasons):
                raise  # our time limit, not rspamd
            # A kept-alive connection that rspamd closed as we reused it: asking again is harmless (a check
            # changes nothing) and takes a new connection; a second failure is the answer.
            response = await self.agent.request(b"POST", self.url, headers, _Bytes(body))
        collect = _Collect(MAX_REPLY, response.length)
        response.deliverBody(collect)
        data = await collect.done
        if response.code != 200:
            raise RspamdError(f"HTTP status {response.code}")
        return parse_reply(data)

    @staticmethod
    def _error(f):
        if f.check(RspamdError):
            return f
        if f.check(ResponseFailed):  # ResponseNeverReceived too: garbage, or closed before a reply
            reasons = "; ".join(r.getErrorMessage() or r.type.__name__ for r in f.value.reasons)
            raise RspamdError(f"no valid HTTP reply ({reasons})")
        raise RspamdError(f.getErrorMessage() or f.type.__name__)

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()


class RspamdCheck:
    """The check stage: one rspamd request per message (kept in ``message.memo``), scoring the card that
    :class:`~mailserver.inbound.policy.SpamPolicy` decides on; it gives no verdict itself unless rspamd could
    not be asked and ``on_error = "tempfail"``."""

    name = "rspamd"
    exact_mailbox = False

    def __init__(self, reactor, config, *, clock=None):
        cfg = config.antispam
        self.on_error = cfg.on_error
        self.max_size = cfg.max_size
        self.client = RspamdClient(reactor, cfg.rspamd, timeout=cfg.timeout, hostname=config.hostname, clock=clock,
                                   max_size=cfg.max_size)
        self.networks = policy.trusted_networks(config)

    def applies(self, message: MessageInfo) -> bool:
        return not policy.spam_exempt(message, self.networks)

    async def check(self, message: MessageInfo, target: Target) -> Verdict | None:
        if self.name not in message.memo:
            message.memo[self.name] = await self._scan(message)
        return message.memo[self.name]

    async def _scan(self, message: MessageInfo) -> Verdict | None:
        card = policy.scorecard(message)
        if message.size > self.max_size:
            card.mark_unchecked("rspamd: too large")
            return None
        try:
            result = await self.client.check(message)
        except RspamdError as e:
            log.warn("rspamd check of {qid} failed: {error}", qid=message.queue_id, error=str(e))
            if self.on_error == "tempfail":
                return Verdict.defer("4.7.0", "Spam filter unavailable, try again later")
            card.mark_unchecked("rspamd")
            return None
        card.set_engine_score(result.score, list(result.symbols))
        forced = FORCED.get(result.action)
        if forced is not None and forced != policy.ACCEPT:
            card.force(forced, result.message)
        log.info("rspamd {qid}: {action} score={score:.2f}", qid=message.queue_id, action=result.action,
                 score=result.score)
        return None

    def close(self) -> defer.Deferred:
        return self.client.close()
