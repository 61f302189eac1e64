"""DNS lookups for outbound delivery and the inbound checks: dnspython, blocking, run in the ``dns`` thread pool.

:class:`DnsResolver` wraps one ``dns.resolver.Resolver`` built from ``[dns] nameservers`` (empty = the system
resolver).  The blocking methods (``mx``, ``addresses``, ``txt``) raise:

* :class:`DnsPermanentError` for NXDOMAIN (the name does not exist: a permanent failure for mail routing);
* :class:`DnsTemporaryError` for a timeout, SERVFAIL, or no answering server (try again later).

A name that exists but has no record of the asked type gives an empty list.  ``records(name, rdtype, lifetime=)`` is
the general form the inbound checks use (``mailserver/inbound/lookups.py``), with a time limit of the caller's.  CNAME chains are followed (dnspython
follows a chain within one response; a chain that ends without the records is re-queried from its last name), at most
:data:`MAX_CNAME_CHAIN` hops.  ``lookup_*`` are the Deferred-returning forms for the reactor thread.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailserver.config import DnsConfig

#: Most CNAME hops followed for one lookup (RFC 1034 3.6.2 chains; a loop ends here).
MAX_CNAME_CHAIN = 8


class DnsError(Exception):
    """A failed lookup; ``permanent`` says whether retrying can help."""

    permanent = False

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


class DnsTemporaryError(DnsError):
    permanent = False


class DnsPermanentError(DnsError):
    permanent = True


@dataclass(frozen=True)
class MxRecord:
    preference: int
    host: str  # without the trailing dot; "" for the null MX (RFC 7505 "." target)


def _make_resolver(config: DnsConfig) -> dns.resolver.Resolver:
    if config.nameservers:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(a.host, a.port) for a in config.nameservers]
    else:
        r = dns.resolver.Resolver(configure=True)
    r.timeout = config.timeout
    r.lifetime = config.timeout
    r.cache = None  # DnsResolver keeps its own cache when asked to (the inbound checks)
    r.use_edns(0, 0, 1232)
    return r


class AnswerCache:
    """Answers of ``records()`` by (name, type) for their TTL (at most :data:`MAX_CACHE_TTL`), NXDOMAIN and NODATA
    for :data:`NEGATIVE_TTL`; the least recently used go first past ``size``.  Thread-safe.  Temporary failures
    are never kept."""

    def __init__(self, size: int, clock=time.monotonic):
        self.size = size
        self.clock = clock
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] <= self.clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key, value, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + min(ttl, MAX_CACHE_TTL), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


#: Longest an answer is kept, whatever its TTL; how long a name without records is remembered (RFC 2308 caps
#: negative caching by the zone's SOA; this stays well under usual values).
MAX_CACHE_TTL = 3600.0
NEGATIVE_TTL = 60.0


class DnsResolver:
    """Blocking lookups over one dnspython resolver (call them in a thread pool, never the reactor thread).

    ``cache_size`` > 0 keeps that many answers of :meth:`records` (:class:`AnswerCache`): the inbound checks ask
    the same names for message after message, as a local caching resolver would answer them.  Outbound routing
    uses no cache (each attempt sees the current records).
    """

    def __init__(self, config: DnsConfig, resolver: dns.resolver.Resolver | None = None, *, cache_size: int = 0):
        self.config = config
        self.resolver = resolver or _make_resolver(config)
        self.cache = AnswerCache(cache_size) if cache_size else None

    # ----------------------------------------------------------------------------------------- core

    def _query(self, name: str, rdtype: str, lifetime: float | None = None) -> list:
        """Records of ``rdtype`` at ``name``, following CNAME chains; ``lifetime`` caps the seconds of each query."""
        return self._query_ttl(name, rdtype, lifetime)[0]

    def _query_ttl(self, name: str, rdtype: str, lifetime: float | None = None) -> tuple[list, float]:
        """(records, their TTL) as :meth:`_query`; NODATA comes with :data:`NEGATIVE_TTL`."""
        qname = name.rstrip(".") + "."
        for _ in range(MAX_CNAME_CHAIN + 1):
            try:
                answer = self.resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False,
                                               lifetime=lifetime)
            except dns.resolver.NXDOMAIN:
                raise DnsPermanentError(name, "NXDOMAIN (no such domain)") from None
            except dns.resolver.YXDOMAIN:
                raise DnsPermanentError(name, "name too long") from None
            except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
                raise DnsTemporaryError(name, "timeout") from None
            except dns.resolver.NoNameservers as e:
                raise DnsTemporaryError(name, f"no nameserver answered ({e})") from None
            except dns.exception.DNSException as e:
                raise DnsTemporaryError(name, str(e) or type(e).__name__) from None
            if answer.rrset is not None:
                return list(answer.rrset), float(answer.rrset.ttl)
            canonical = answer.canonical_name.to_text()
            if canonical.lower() == qname.lower():
                return [], NEGATIVE_TTL  # NODATA: the name exists without records of this type
            qname = canonical  # the chain left the response: ask for its last name
        raise DnsTemporaryError(name, f"CNAME chain longer than {MAX_CNAME_CHAIN}")

    def records(self, name: str, rdtype: str, *, lifetime: float | None = None) -> list:
        """The dnspython rdata of ``rdtype`` at ``name`` (CNAMEs followed); raises as the module docstring says.
        Answered from the cache when there is one."""
        if self.cache is None:
            return self._query(name, rdtype, lifetime)
        hit = self.cached(name, rdtype)
        if hit is not None:
            return hit
        key = (name.rstrip(".").lower(), rdtype)
        try:
            found, ttl = self._query_ttl(name, rdtype, lifetime)
        except DnsPermanentError as e:
            self.cache.put(key, e, NEGATIVE_TTL)
            raise
        self.cache.put(key, tuple(found), ttl)
        return found

    def cached(self, name: str, rdtype: str) -> list | None:
        """What :meth:`records` would answer from the cache alone: the rdata (raising the remembered
        DnsPermanentError of a name without records), or None when the answer is not in the cache (or there is no
        cache).  Never blocks: the inbound checks use it to run on the reactor thread when they can."""
        if self.cache is None:
            return None
        hit = self.cache.get((name.rstrip(".").lower(), rdtype))
        if hit is None:
            return None
        if isinstance(hit, DnsPermanentError):
            raise hit
        return list(hit)

    def mx(self, domain: str) -> list[MxRecord]:
        return [MxRecord(int(r.preference), r.exchange.to_text(omit_final_dot=True).lower()
                         if r.exchange != dns.name.root else "")
                for r in self._query(domain, "MX")]

    def addresses(self, host: str) -> list[str]:
        """IPv6 then IPv4 addresses of ``host`` (an IP literal is returned as is).

        NXDOMAIN raises; a host with neither record gives [].  A temporary failure of one family is ignored when the
        other answered.
        """
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        out: list[str] = []
        errors: list[DnsError] = []
        for rdtype in ("AAAA", "A"):
            try:
                out.extend(r.address for r in self._query(host, rdtype))
            except DnsPermanentError:
                raise
            except DnsTemporaryError as e:
                errors.append(e)
        if not out and errors:
            raise errors[0]
        return out

    def txt(self, name: str) -> list[str]:
        """TXT records, each the concatenation of its strings (RFC 7208 3.3)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(name, "TXT")]
