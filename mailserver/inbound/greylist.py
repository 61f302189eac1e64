"""Greylisting (RFC 6647) of mail the MX listener takes from outside, off unless ``[antispam.greylist] enabled``.

A triplet is the client's network (its /24 for IPv4, /64 for IPv6: a sending farm retries from a neighbour,
RFC 6647 4.2), the envelope sender and the recipient, lower-cased.  Its first attempt is deferred with
``451 4.7.1``; a retry after ``delay`` seconds and within ``retry_window`` passes, and a passed triplet is then let
through for ``pass_lifetime`` seconds after its last use (``storage/greylist.py`` decides and records, in the
database, so every node of a cluster shares the triplets).  With ``auto_whitelist = N`` a client network that has
passed N triplets is not greylisted any more.

Where: at RCPT TO (``stage = "rcpt"``, the default: the sender learns at once and sends no body) from
``smtp/protocol.py``, or after DATA (``stage = "data"``: :class:`GreylistStage`, every recipient of the message
deferred when any of its triplets is not yet passed, so a message is accepted or deferred as one).

Never greylisted: authenticated clients, submission listeners, ``smtp.trusted_networks``, and clients listed by a
``[[antispam.dnswl]]`` zone (``inbound/dnsbl.py``; the same cached answer the message's score uses).  A database
or DNS failure lets the mail through (logged): greylisting is a delay, never a reason to lose mail.

A passed triplet stays passed until it expires (only its expiry moves, and only later), so each process
remembers the passed triplets and whitelisted networks it saw, until the store's answer would change
(``storage/greylist.py`` ``holds_until``: its refresh is due or it expires): mail of a known triplet costs no
read.  A first attempt or an early retry is always decided by the store (any node may be the one it retries to).

Time is the injected ``clock`` (``seconds()``; the reactor, a ``task.Clock`` in tests), in UNIX seconds so that
nodes compare the same stored times.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery import envelope as ev
from mailserver.delivery.stages import MessageInfo, Target, Verdict
from mailserver.inbound import policy
from storage.greylist import ACCEPTED, CLIENT, EARLY, KNOWN, NEW, GreylistPolicy

log = Logger()

#: Results that are no triplet decision: the client is exempt.
EXEMPT, DNSWL, FAILED = "exempt", "dnswl", "failed"
STATUS = "4.7.1"
#: The most passed triplets (and, apart, whitelisted networks) a process remembers (past it, it starts again).
MAX_HELD = 100_000


class Greylister:
    """The greylisting decision of one attempt (shared by the RCPT check and :class:`GreylistStage`)."""

    def __init__(self, config, astore, *, clock, dns_lists=None):
        g = config.antispam.greylist
        self.enabled = g.enabled
        self.at_rcpt = g.enabled and g.stage == "rcpt"
        self.after_data = g.enabled and g.stage == "data"
        self.policy = GreylistPolicy(g.delay, g.retry_window, g.pass_lifetime, g.auto_whitelist)
        self.prefixes = {4: g.ipv4_prefix, 6: g.ipv6_prefix}
        self.astore = astore
        self.clock = clock
        self.dns_lists = dns_lists if dns_lists is not None and dns_lists.allow_zones else None
        self.networks = policy.trusted_networks(config)
        #: Passed triplets and whitelisted networks, until when the store's answer holds (no read meanwhile).
        self._triplets: dict[tuple[str, str, str], float] = {}
        self._networks: dict[str, float] = {}

    def network(self, ip: str) -> str | None:
        """The client's network ("192.0.2.0/24"), or None for something that is no IP address."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in n for n in self.networks):
            return None
        return str(ipaddress.ip_network(f"{addr}/{self.prefixes[addr.version]}", strict=False))

    async def check(self, ip: str, sender: str, recipient: str) -> str:
        """NEW / EARLY (defer), PASSED / KNOWN / CLIENT (accept), or EXEMPT / DNSWL / FAILED (accept)."""
        network = self.network(ip)
        if network is None:
            return EXEMPT
        if self.dns_lists is not None:
            lists = await self.dns_lists.client(ip)
            if lists.allowed:
                return DNSWL
        sender, recipient = sender.lower(), recipient.lower()
        now = self.clock.seconds()
        p = self.policy
        key = (network, sender, recipient)
        held = self._held_answer(key, network, now)
        if held is not None:
            return held
        try:
            found = await self.astore.greylist_known_until(network, sender, recipient, now, p.auto_whitelist,
                                                           p.lifetime)
            result, until = found or await self.astore.greylist_record_until(network, sender, recipient, now, p)
        except Exception:  # noqa: BLE001 - the database: let the mail through, say why
            log.failure("greylisting of {net} <{sender}> -> <{rcpt}> failed; accepted", net=network, sender=sender,
                        rcpt=recipient)
            return FAILED
        if until > now:
            self._hold(key, network, result, until)
        if result not in ACCEPTED:
            log.info("greylist {result} {net} <{sender}> -> <{rcpt}>", result=result, net=network, sender=sender,
                     rcpt=recipient)
        return result

    def _held_answer(self, key: tuple[str, str, str], network: str, now: float) -> str | None:
        """KNOWN / CLIENT from memory while the store's answer holds (``storage/greylist.py`` ``holds_until``)."""
        until = self._networks.get(network)
        if until is not None:
            if until > now:
                return CLIENT
            del self._networks[network]
        until = self._triplets.get(key)
        if until is not None:
            if until > now:
                return KNOWN
            del self._triplets[key]
        return None

    def _hold(self, key: tuple[str, str, str], network: str, result: str, until: float) -> None:
        if result == CLIENT:
            held, k = self._networks, network
        elif result in ACCEPTED:
            held, k = self._triplets, key
        else:
            return
        if len(held) >= MAX_HELD:
            held.clear()
        held[k] = until

    def deferred(self, result: str) -> bool:
        return result in (NEW, EARLY)

    def text(self) -> str:
        minutes = max(1, round(self.policy.delay / 60))
        return f"Greylisted, please try again in {minutes} minute{'s' if minutes != 1 else ''}"


def exempt_message(message: MessageInfo) -> bool:
    """Mail the greylisting does not see: not from the MX listener, or from an authenticated or trusted client."""
    c = message.client
    return (message.producer != ev.SMTP or c is None or c.submission or c.trusted or bool(c.authenticated)
            or c.account_id is not None)


class GreylistStage:
    """``stage = "data"``: the message's triplets after DATA; any not passed defers the whole message."""

    name = "greylist"
    exact_mailbox = False

    def __init__(self, greylister: Greylister):
        self.greylister = greylister

    def applies(self, message: MessageInfo) -> bool:
        return not exempt_message(message)

    async def check(self, message: MessageInfo, target: Target) -> Verdict | None:
        if self.name not in message.memo:
            message.memo[self.name] = await self._decide(message)
        return message.memo[self.name]

    async def _decide(self, message: MessageInfo) -> Verdict | None:
        g, env = self.greylister, message.envelope
        if env is None:
            return None
        results = await defer.gatherResults([defer.ensureDeferred(g.check(message.client.ip, env.sender, r.address))
                                             for r in env.recipients])
        if any(g.deferred(r) for r in results):
            return Verdict.defer(STATUS, g.text())
        return None


__all__ = ["DNSWL", "EARLY", "EXEMPT", "FAILED", "NEW", "GreylistStage", "Greylister", "exempt_message"]
