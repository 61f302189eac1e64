"""DNS for the inbound checks: our resolver (``mailserver/dns.py``, the ``[dns]`` name servers), one budget per check.

A :class:`Lookups` belongs to one check of one message (SPF for MAIL FROM, DKIM, DMARC, ...) and runs in the ``dns``
thread pool.  It bounds the check three ways, so that no sender's records can make a check run long:

* time: every query's lifetime is cut to what is left of the check's ``deadline``; past it a query raises
  :class:`~mailserver.dns.DnsTemporaryError` without being sent;
* count: at most ``max_queries`` queries (:class:`LookupLimitError`, a permanent error);
* size: an answer whose text is larger than :data:`MAX_ANSWER_BYTES` raises :class:`LookupLimitError` (the UDP
  answer is truncated and re-asked over TCP by dnspython; a TCP answer is at most 64 KiB, so memory is bounded).

Malformed names (an empty label, a label over 63 octets, a name over 253) are refused before any query
(:class:`~mailserver.dns.DnsPermanentError`): they cannot exist.  Nothing here uses the system resolver or a
library's default one: the libraries get adapters of these methods (``spf.py``, ``dkimcheck.py``).
"""

from __future__ import annotations

import time

from mailserver.dns import DnsError, DnsPermanentError, DnsResolver, DnsTemporaryError

#: The most text (TXT strings, PTR names) one answer may carry: past it the answer is refused as hostile.  Real SPF
#: apexes with many TXT records stay under 8 KiB and a 4096-bit DKIM key record is under 1 KiB.
MAX_ANSWER_BYTES = 16 * 1024
#: Most records of one answer used (PTR, MX, A): the rest are ignored.
MAX_ANSWER_RECORDS = 64


class LookupLimitError(DnsError):
    """A check went past its query count or an answer past :data:`MAX_ANSWER_BYTES` (retrying cannot help)."""

    permanent = True


def valid_name(name: str) -> bool:
    """Whether ``name`` can be a DNS name (RFC 1035 2.3.4: labels of 1..63 octets, at most 253 in all)."""
    name = name.rstrip(".")
    if not name or len(name) > 253:
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))


class Lookups:
    """Blocking lookups for one check, under its deadline and query budget (run in the ``dns`` pool)."""

    def __init__(self, resolver: DnsResolver, *, timeout: float, max_queries: int, clock=time.monotonic):
        self.resolver = resolver
        self.clock = clock
        self.deadline = clock() + timeout
        self.max_queries = max_queries
        self.queries = 0

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def records(self, name: str, rdtype: str) -> list:
        """The rdata of ``rdtype`` at ``name``: [] when the name exists without them; raises a DnsError."""
        if not valid_name(name):
            raise DnsPermanentError(name, "not a valid domain name")
        left = self.remaining()
        if left <= 0:
            raise DnsTemporaryError(name, "time limit of the check reached")
        self.queries += 1
        if self.queries > self.max_queries:
            raise LookupLimitError(name, f"more than {self.max_queries} DNS queries in one check")
        lifetime = min(left, self.resolver.config.timeout or left)
        try:
            rdata = self._answer(name, rdtype, lifetime)
        except DnsTemporaryError as e:
            # A short reason of our own: it ends up in Authentication-Results comments (no server addresses).
            raise DnsTemporaryError(name, "DNS timeout" if e.reason == "timeout" else "DNS server failure") from None
        return rdata[:MAX_ANSWER_RECORDS] if rdtype != "TXT" else rdata

    def _answer(self, name: str, rdtype: str, lifetime: float) -> list:
        return self.resolver.records(name, rdtype, lifetime=lifetime)

    def txt(self, name: str) -> list[bytes]:
        """TXT records at ``name``, each the concatenation of its strings (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        out = [b"".join(r.strings) for r in self.records(name, "TXT")]
        if sum(len(t) for t in out) > MAX_ANSWER_BYTES:
            raise LookupLimitError(name, f"TXT answer larger than {MAX_ANSWER_BYTES} bytes")
        return out

    def addresses(self, name: str, rdtype: str) -> list[str]:
        """A or AAAA records of ``name``."""
        return [r.address for r in self.records(name, rdtype)]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in self.records(name, "MX")]

    def ptr(self, name: str) -> list[str]:
        out = [r.target.to_text(omit_final_dot=True) for r in self.records(name, "PTR")]
        if sum(len(n) for n in out) > MAX_ANSWER_BYTES:
            raise LookupLimitError(name, f"PTR answer larger than {MAX_ANSWER_BYTES} bytes")
        return out

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists (any of A, AAAA, MX answered without NXDOMAIN), for DMARC's ``np``."""
        for rdtype in ("A", "AAAA", "MX"):
            try:
                if self.records(name, rdtype):
                    return True
            except DnsPermanentError:
                return False
        return True  # NODATA for all three: the name exists (it has other records)


class CachedLookups(Lookups):
    """Lookups answered from the resolver's answer cache alone, for a check run where nothing may wait (the
    reactor thread): the same name checks, time limit and query count as :class:`Lookups`, but a name whose answer
    is not in the cache is not asked: it sets :attr:`missed` and raises DnsTemporaryError.  A check run that
    missed gave a result that does not count: its caller runs the check again with :class:`Lookups`."""

    missed = False

    def _answer(self, name: str, rdtype: str, lifetime: float) -> list:
        found = self.resolver.cached(name, rdtype)
        if found is None:
            self.missed = True
            raise DnsTemporaryError(name, "not in the answer cache")
        return found
