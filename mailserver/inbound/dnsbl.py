"""DNS block and allow lists (RFC 5782): the client's address and the envelope sender's domain, asked of every
configured zone in parallel, once per client; each listing is a named, weighted symbol on the score card.

* ``[[antispam.dnsbl]]`` - the client's address (IPv4: its octets reversed, ``2.0.0.127.zone``; IPv6: its 32
  nibbles reversed, RFC 5782 2.4) as an A query: NXDOMAIN = not listed, an address in 127.0.0.0/8 = listed;
* ``[[antispam.dnswl]]`` - the same query of an allow list, whose weights are 0 or negative; a DNSWL-listed
  client is also exempt from greylisting (``inbound/greylist.py``);
* ``[[antispam.rhsbl]]`` - the envelope sender's domain as the query (``example.org.zone``, RFC 5782 2.3).

An answer in 127.255.255.0/24 is the list's error code (e.g. 127.255.255.254: "you query through a public
resolver"), and an answer outside 127.0.0.0/8 is no listing either (a resolver that rewrites NXDOMAIN, a zone
that is gone): both are logged, never counted.  ``returncodes`` maps the codes that count to their own weights;
with it, other codes are logged and ignored.  A zone that times out or fails is logged and named in the card's
``unchecked`` list; the others still count.

The lookups run in the ``dns`` pool (one job per zone, so the zones answer in parallel), each under a
:class:`~mailserver.inbound.lookups.Lookups` deadline of ``[antispam] dnsbl_timeout`` and again on the reactor
(a zone that has not answered by then is skipped), through the resolver the sender authentication uses (its TTL
cache).  The results of one client (and of one sender domain) are kept :data:`CLIENT_TTL` seconds and shared by
the RCPT-time greylisting and the message stage, so a connection's messages ask each zone once.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery.stages import MessageInfo, Target
from mailserver.dns import AnswerCache, DnsError, DnsPermanentError
from mailserver.inbound import policy
from mailserver.inbound.lookups import Lookups, valid_name

log = Logger()

DNSBL, DNSWL, RHSBL = "dnsbl", "dnswl", "rhsbl"
#: How long (seconds), and for how many clients and domains, the lists' answers are kept.
CLIENT_TTL = 60.0
CACHE_SIZE = 4096
#: Codes read from one answer (an answer of thousands of records is cut here; the rest is ignored).
MAX_CODES = 16
#: Seconds the reactor waits past the time limit before it stops waiting for a zone's thread.
REACTOR_MARGIN = 1.0

_LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
_ERROR_NET = ipaddress.IPv4Network("127.255.255.0/24")
_NAME_BAD = re.compile(r"[^A-Za-z0-9]+")


def symbol_name(kind: str, entry) -> str:
    """The entry's symbol: its ``name``, else ``DNSBL_`` / ``DNSWL_`` / ``RHSBL_`` and the zone in capitals."""
    if entry.name:
        return entry.name
    return f"{kind.upper()}_{_NAME_BAD.sub('_', entry.zone.rstrip('.')).upper()}"


def query_name(ip: str, zone: str) -> str:
    """The RFC 5782 query of ``ip`` in ``zone``: reversed octets (2.1) or reversed nibbles (2.4); an IPv4-mapped
    IPv6 address is asked as the IPv4 address it is.  ValueError for anything that is not an address."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        labels = reversed(str(addr).split("."))
    else:
        labels = reversed(addr.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.rstrip(".")


@dataclass(frozen=True)
class Listing:
    """One zone that lists the client (or the sender's domain)."""

    kind: str  # dnsbl | dnswl | rhsbl
    zone: str
    symbol: str
    weight: float
    codes: tuple[str, ...]

    @property
    def detail(self) -> str:
        return f"{self.zone} {','.join(self.codes)}"


@dataclass
class ListResult:
    """What the zones said about one client or domain."""

    listings: list[Listing] = field(default_factory=list)
    #: Zones that could not answer (timeout, server failure): named on the score card as unchecked.
    failed: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        """Listed by a DNSWL zone."""
        return any(item.kind == DNSWL for item in self.listings)


def interpret(kind: str, entry, answers: list[str], *, query: str = "") -> Listing | None:
    """The listing an A answer means (None: not listed).  Error codes and answers outside 127/8 are logged."""
    codes: list[str] = []
    for text in answers[:MAX_CODES]:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            log.warn("{kind} {zone}: answer {a!r} to {q} is not an IPv4 address", kind=kind, zone=entry.zone,
                     a=policy.clean_text(text, 64), q=query)
            continue
        if addr in _ERROR_NET:
            log.warn("{kind} {zone}: error code {a} for {q} (not a listing; is the zone's usage allowed?)",
                     kind=kind, zone=entry.zone, a=text, q=query)
        elif addr not in _LOOPBACK_NET:
            log.warn("{kind} {zone}: answer {a} for {q} is outside 127.0.0.0/8 (not a listing)", kind=kind,
                     zone=entry.zone, a=text, q=query)
        elif entry.returncodes and text not in entry.returncodes:
            log.info("{kind} {zone}: code {a} for {q} is not in returncodes (ignored)", kind=kind, zone=entry.zone,
                     a=text, q=query)
        elif text not in codes:
            codes.append(text)
    if not codes:
        return None
    if entry.returncodes:
        weight = max((entry.returncodes[c] for c in codes), key=abs)
    else:
        weight = entry.weight
    return Listing(kind, entry.zone.rstrip("."), symbol_name(kind, entry), weight, tuple(sorted(codes)))


class DnsLists:
    """The configured zones and the cached per-client and per-domain answers (one per server)."""

    def __init__(self, config, resolver, run_dns, reactor=None, *, clock=time.monotonic):
        sp = config.antispam
        self.address_zones = [(DNSBL, e) for e in sp.dnsbl] + [(DNSWL, e) for e in sp.dnswl]
        self.domain_zones = [(RHSBL, e) for e in sp.rhsbl]
        self.allow_zones = bool(sp.dnswl)
        self.timeout = sp.dnsbl_timeout
        self.resolver = resolver
        self.run_dns = run_dns  # f, *args -> Deferred: runs f in the dns pool
        self.reactor = reactor  # the reactor-side time limit (None: none, e.g. an inline runner)
        self.clock = clock
        self._cache = AnswerCache(CACHE_SIZE, clock=clock)
        self._pending: dict[tuple, defer.Deferred] = {}

    @property
    def configured(self) -> bool:
        return bool(self.address_zones or self.domain_zones)

    def client(self, ip: str) -> defer.Deferred:
        """A Deferred of the :class:`ListResult` of the client address ``ip`` (never fails)."""
        if self.address_zones:
            hit = self._cache.get(("ip", ip))  # a connection's messages: no query names made again
            if hit is not None:
                return defer.succeed(hit)
        try:
            names = [query_name(ip, e.zone) for _k, e in self.address_zones]
        except ValueError:
            return defer.succeed(ListResult())  # not an IP address (a Unix socket, a test transport)
        return self._lists(("ip", ip), self.address_zones, names)

    def domain(self, domain: str) -> defer.Deferred:
        """A Deferred of the :class:`ListResult` of the sender's domain (RHSBL zones; never fails)."""
        domain = domain.rstrip(".").lower()
        if not self.domain_zones or not domain:
            return defer.succeed(ListResult())
        hit = self._cache.get(("domain", domain))
        if hit is not None:
            return defer.succeed(hit)
        names = [f"{domain}.{e.zone.rstrip('.')}" for _k, e in self.domain_zones]
        return self._lists(("domain", domain), self.domain_zones, names)

    def _lists(self, key, zones, names) -> defer.Deferred:
        if not zones:
            return defer.succeed(ListResult())
        hit = self._cache.get(key)
        if hit is not None:
            return defer.succeed(hit)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = self._ask(key, zones, names)
        out = defer.Deferred()
        pending.addBoth(lambda r: (out.callback(r), r)[1])
        return out

    def _ask(self, key, zones, names) -> defer.Deferred:
        jobs = [self._zone(kind, entry, name) for (kind, entry), name in zip(zones, names, strict=True)]

        def done(answers):
            result = ListResult()
            for (kind, entry), answer in zip(zones, answers, strict=True):
                if isinstance(answer, Listing):
                    result.listings.append(answer)
                elif answer == "failed":
                    result.failed.append(f"{kind} {entry.zone.rstrip('.')}")
            self._pending.pop(key, None)
            if not result.failed:
                self._cache.put(key, result, CLIENT_TTL)  # a zone that failed is asked again next time
            return result

        return defer.gatherResults(jobs).addCallback(done)

    def _zone(self, kind: str, entry, name: str) -> defer.Deferred:
        """One zone's answer: a Listing, None (not listed) or "failed"."""
        if not valid_name(name):
            return defer.succeed(None)  # a sender domain too long to ask about: cannot be listed

        def ask():
            lookups = Lookups(self.resolver, timeout=self.timeout, max_queries=1)
            try:
                answers = lookups.addresses(name, "A")
            except DnsPermanentError:
                return None  # NXDOMAIN: not listed
            except DnsError as e:
                log.warn("{kind} {zone}: {q}: {error}", kind=kind, zone=entry.zone, q=name, error=e.reason)
                return "failed"
            return interpret(kind, entry, answers, query=name)

        d = self.run_dns(ask)
        if self.reactor is not None:
            d.addTimeout(self.timeout + REACTOR_MARGIN, self.reactor)

        def failed(f):
            if not f.check(defer.TimeoutError, defer.CancelledError):
                log.failure("{kind} {zone}: lookup of {q} failed", f, kind=kind, zone=entry.zone, q=name)
            else:
                log.warn("{kind} {zone}: {q}: time limit reached", kind=kind, zone=entry.zone, q=name)
            return "failed"

        return d.addErrback(failed)


class DnsListCheck:
    """The check stage: the client's (and sender domain's) listings go on the message's score card, once per
    message; it gives no verdict itself (the spam policy decides)."""

    name = "dnsbl"
    exact_mailbox = False

    def __init__(self, lists: DnsLists, config):
        self.lists = lists
        self.networks = policy.trusted_networks(config)

    def applies(self, message: MessageInfo) -> bool:
        return self.lists.configured and not policy.spam_exempt(message, self.networks)

    def check(self, message: MessageInfo, target: Target):
        if self.name in message.memo:
            return None
        message.memo[self.name] = True
        sender = message.envelope.sender if message.envelope is not None else ""
        asked = [self.lists.client(message.client.ip), self.lists.domain(sender.rpartition("@")[2] if sender else "")]
        if all(d.called for d in asked):  # both from the cache (they never fail): no Deferred chain to wait on
            self._score(message, [d.result for d in asked])
            return None
        return defer.gatherResults(asked).addCallback(lambda results: self._score(message, results))

    @staticmethod
    def _score(message: MessageInfo, results: list[ListResult]) -> None:
        card = policy.scorecard(message)
        for result in results:
            for item in result.listings:
                card.add(item.symbol, item.weight, item.detail, source=item.kind)
            for zone in result.failed:
                card.mark_unchecked(zone)
        return None
