"""Gateway mode: recipient verification for relay domains, so unknown users are refused at RCPT (550 5.1.1)
instead of accepted here and bounced later by the host behind us (backscatter).

Per relay domain (``[gateway.domain."d"] verify``):

* ``list``: a static list of valid addresses (``@domain`` in it accepts every local part);
* ``callout``: ask the domain's ``relay_to`` host with a probe of our own SMTP client (``delivery/client.py``
  with ``ClientPolicy.probe``: EHLO, ``MAIL FROM:<>``, ``RCPT TO:<address>``, QUIT; no message).  A 2xx is valid, a
  5xx invalid, anything else (4xx, no connection, ``[gateway] callout_timeout`` passed) a temporary failure that the
  SMTP session answers with 451 4.4.3 (the client retries; nothing is remembered).  Valid and invalid answers are
  remembered in the store (``callout_cache``, shared by every process and node) for ``positive_ttl`` /
  ``negative_ttl`` seconds; concurrent RCPTs for one address in this process share one probe.

Everything runs on the reactor without blocking it: the cache in the database pools, the host's name in the
``dns`` pool, the probe on a Twisted connection.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery.client import (
    ClientPolicy,
    Envelope,
    Recipient,
    SmtpClientSession,
    Timeouts,
)
from mailserver.delivery.connection import TlsSettings, run_session
from mailserver.threads import run_in

log = Logger()

VALID, INVALID, TEMPFAIL = "valid", "invalid", "tempfail"


class RecipientVerifier:
    """``verify(address, relay_to) -> Deferred[VALID | INVALID | TEMPFAIL]`` for recipients of relay domains."""

    def __init__(self, config, astore, reactor, pools, *, resolver=None, port_map: dict[str, int] | None = None):
        self.cfg = config.gateway
        self.hostname = config.hostname
        self.astore = astore
        self.reactor = reactor
        #: The clock of the cache's times and of the probe's overall time limit (tests: a task.Clock).
        self.clock = reactor
        self.pools = pools
        self.resolver = resolver
        self.dns_config = config.dns
        self.port_map = dict(port_map or {})  # tests: relay host -> port
        self.modes = {d.lower().rstrip("."): g.verify for d, g in self.cfg.domain.items()}
        self.lists = {d.lower().rstrip("."): frozenset(r.lower() for r in g.recipients)
                      for d, g in self.cfg.domain.items() if g.verify == "list"}
        self._inflight: dict[str, list[defer.Deferred]] = {}
        #: Probes started (a test reads it to see a cache hit make none).
        self.probes = 0

    def applies(self, domain: str) -> bool:
        return self.modes.get(domain.lower().rstrip("."), "none") != "none"

    def verify(self, address: str, relay_to: str) -> defer.Deferred:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        mode = self.modes.get(domain, "none")
        if mode == "none":
            return defer.succeed(VALID)
        if mode == "list":
            valid = self.lists[domain]
            return defer.succeed(VALID if address.lower() in valid or "@" + domain in valid else INVALID)
        return defer.ensureDeferred(self._callout(address.lower(), relay_to))

    async def _callout(self, address: str, relay_to: str) -> str:
        now = self.clock.seconds()
        known = await self.astore.callout_cached(address, now)
        if known is not None:
            return VALID if known else INVALID
        waiting = self._inflight.get(address)
        if waiting is not None:  # a probe for this address is running: its answer is ours
            d: defer.Deferred = defer.Deferred()
            waiting.append(d)
            return await d
        self._inflight[address] = []
        result = TEMPFAIL
        try:
            result = await self._probe(address, relay_to)
            if result != TEMPFAIL:
                ttl = self.cfg.positive_ttl if result == VALID else self.cfg.negative_ttl
                now = self.clock.seconds()
                await self.astore.remember_callout(address, result == VALID, now + ttl, now)
        except Exception:
            log.failure("callout for <{rcpt}> failed", rcpt=address)
        finally:
            for d in self._inflight.pop(address, []):
                d.callback(result)
        return result

    async def _probe(self, address: str, relay_to: str) -> str:
        from mailserver.config import parse_address

        self.probes += 1
        hop = parse_address(relay_to, 25)
        port = self.port_map.get(hop.host.lower(), hop.port)
        limit = self.cfg.callout_timeout
        try:
            ipaddress.ip_address(hop.host)
            ips = [hop.host]
        except ValueError:
            try:
                ips = await run_in(self.reactor, self.pools.dns, self._resolver().addresses, hop.host)
            except Exception as e:
                log.warn("callout <{rcpt}>: {host} does not resolve: {why}", rcpt=address, host=hop.host, why=str(e))
                return TEMPFAIL
            if not ips:
                return TEMPFAIL
        policy = ClientPolicy(helo_name=self.hostname, tls="opportunistic", probe=True,
                              timeouts=Timeouts(*(limit,) * 7))
        session = SmtpClientSession(Envelope("", (Recipient(address),), 0), policy)
        connections: set = set()
        d = run_session(self.reactor, ips[0], port, session, _no_body, None, tls=TlsSettings(), connect_timeout=limit,
                        registry=connections)

        def expired():  # the whole probe, connect to QUIT
            if connections:
                for proto in list(connections):
                    proto.transport.abortConnection()
            else:
                d.cancel()  # still connecting

        timer = self.clock.callLater(limit, expired)
        try:
            session = await d
        finally:
            if timer.active():
                timer.cancel()
        reply = session.rcpt_replies.get(address)
        if reply is None:
            # No answer to the RCPT itself (refused greeting, EHLO or the null sender, lost connection): unknown.
            res = session.results.get(address)
            log.warn("callout <{rcpt}> at {host}:{port}: no RCPT answer ({why})", rcpt=address, host=hop.host,
                     port=port, why=res.reply if res is not None else "none")
            return TEMPFAIL
        log.info("callout <{rcpt}> at {host}:{port}: {reply}", rcpt=address, host=hop.host, port=port, reply=reply)
        if 200 <= reply.code < 300:
            return VALID
        return INVALID if reply.code >= 500 else TEMPFAIL

    def _resolver(self):
        if self.resolver is None:
            from mailserver.dns import DnsResolver

            self.resolver = DnsResolver(self.dns_config)
        return self.resolver


def _no_body():
    raise RuntimeError("a probe sends no message")
