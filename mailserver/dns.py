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


def _make_resolver(config: DnsConfig, cache_size: int = 0) -> dns.resolver.Resolver:
    if config.nameservers:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(a.host, a.port) for a in config.nameservers]
    else:
        r = dns.resolver.Resolver(configure=True)
    r.timeout = config.timeout
    r.lifetime = config.timeout
    # No cache for outbound routing (each attempt sees the current records); the inbound checks keep answers for
    # their TTL, NXDOMAIN and NODATA included (dnspython's LRU cache), as a local caching resolver would.
    r.cache = dns.resolver.LRUCache(cache_size) if cache_size else None
    r.use_edns(0, 0, 1232)
    return r


class DnsResolver:
    """Blocking lookups over one dnspython resolver (call them in a thread pool, never the reactor thread)."""

    def __init__(self, config: DnsConfig, resolver: dns.resolver.Resolver | None = None, *, cache_size: int = 0):
        self.config = config
        self.resolver = resolver or _make_resolver(config, cache_size)

    # ----------------------------------------------------------------------------------------- core

    def _query(self, name: str, rdtype: str, lifetime: float | None = None) -> list:
        """Records of ``rdtype`` at ``name``, following CNAME chains; ``lifetime`` caps the seconds of each query."""
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
                return list(answer.rrset)
            canonical = answer.canonical_name.to_text()
            if canonical.lower() == qname.lower():
                return []  # NODATA: the name exists without records of this type
            qname = canonical  # the chain left the response: ask for its last name
        raise DnsTemporaryError(name, f"CNAME chain longer than {MAX_CNAME_CHAIN}")

    def records(self, name: str, rdtype: str, *, lifetime: float | None = None) -> list:
        """The dnspython rdata of ``rdtype`` at ``name`` (CNAMEs followed); raises as the module docstring says."""
        return self._query(name, rdtype, lifetime)

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
