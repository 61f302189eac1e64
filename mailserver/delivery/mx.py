"""Where to send mail for a domain: MX records, implicit MX, null MX, relay hosts.  Blocking (run in the dns pool).

:func:`route_domain` returns the :class:`Hop` list to try in order (each with its addresses, IPv6 first) or raises
:class:`RouteError` carrying the reply to record for every recipient of the domain (temporary or permanent).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from mailserver.delivery.client import ServerReply, local_reply
from mailserver.dns import DnsError, DnsPermanentError, DnsResolver, MxRecord


@dataclass(frozen=True)
class Hop:
    host: str
    addresses: tuple[str, ...]
    port: int
    preference: int = 0


class RouteError(Exception):
    def __init__(self, reply: ServerReply):
        super().__init__(str(reply))
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply.code >= 500


def order_mx(records: list[MxRecord], rng: random.Random) -> list[MxRecord]:
    """RFC 5321 5.1: lowest preference first; equal preferences in random order (spreads the load)."""
    by_pref: dict[int, list[MxRecord]] = {}
    for r in records:
        by_pref.setdefault(r.preference, []).append(r)
    out: list[MxRecord] = []
    for pref in sorted(by_pref):
        group = sorted(by_pref[pref], key=lambda r: r.host)
        rng.shuffle(group)
        out.extend(group)
    return out


def route_domain(resolver: DnsResolver, domain: str, *, rng: random.Random, port_for: Callable[[str], int],
                 is_self: Callable[[str, str, int], bool]) -> list[Hop]:
    """The hosts to try for ``domain`` (blocking).

    ``port_for(host)`` gives the port (25 in production; tests map MX names to their receivers' ports);
    ``is_self(host, ip, port)`` tells whether a destination is one of our own listeners.
    """
    try:
        records = resolver.mx(domain)
    except DnsPermanentError:
        raise RouteError(local_reply(550, "5.1.2", f"domain {domain} does not exist (NXDOMAIN)")) from None
    except DnsError as e:
        raise RouteError(local_reply(451, "4.4.3", f"DNS lookup of MX {domain} failed: {e.reason}")) from None
    if len(records) == 1 and records[0].host == "":
        # RFC 7505 3: a single MX "." with preference 0 says the domain accepts no mail; RFC 7505 4.3: 5.1.10.
        raise RouteError(local_reply(556, "5.1.10", f"domain {domain} accepts no mail (null MX)"))
    # RFC 7505 3: a "." among other MX records is a misconfiguration; never try to deliver to ".".
    records = [r for r in records if r.host]
    implicit = not records
    if implicit:
        # RFC 5321 5.1: no MX: the domain itself is the implicit MX, preference 0.
        records = [MxRecord(0, domain.lower())]
    hops: list[Hop] = []
    temporary: list[str] = []
    loop_preference: int | None = None
    for mx in order_mx(records, rng):
        if loop_preference is not None and mx.preference >= loop_preference:
            break
        try:
            addresses = resolver.addresses(mx.host)
        except DnsError as e:
            temporary.append(f"{mx.host}: {e.reason}")
            continue
        if not addresses:
            if implicit:
                # RFC 5321 5.1: neither MX nor address records: the domain cannot receive mail.
                raise RouteError(local_reply(550, "5.1.2", f"domain {domain} has no MX and no address records"))
            temporary.append(f"{mx.host}: no A/AAAA record")
            continue
        port = port_for(mx.host)
        if any(is_self(mx.host, ip, port) for ip in addresses):
            # RFC 5321 5.1: we are one of the MX hosts: drop ourselves and every host of equal or worse preference.
            loop_preference = mx.preference
            hops = [h for h in hops if h.preference < mx.preference]
            continue
        hops.append(Hop(mx.host, tuple(addresses), port, mx.preference))
    if hops:
        return hops
    if loop_preference is not None:
        raise RouteError(local_reply(554, "5.4.6", f"mail for {domain} loops back to myself"))
    raise RouteError(local_reply(451, "4.4.4", f"no usable MX host for {domain}: " + "; ".join(temporary)))


def route_host(resolver: DnsResolver, host: str, port: int, *, is_self: Callable[[str, str, int], bool]) -> list[Hop]:
    """A fixed next hop (relay domain ``relay_to``, smarthost): its addresses, no MX lookup."""
    try:
        addresses = resolver.addresses(host)
    except DnsError as e:
        raise RouteError(local_reply(451, "4.4.3", f"DNS lookup of {host} failed: {e.reason}")) from None
    if not addresses:
        raise RouteError(local_reply(451, "4.4.4", f"{host} has no address"))
    if any(is_self(host, ip, port) for ip in addresses):
        raise RouteError(local_reply(554, "5.4.6", f"relay host {host}:{port} is this server (mail loop)"))
    return [Hop(host, tuple(addresses), port)]
