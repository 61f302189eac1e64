"""SPF (RFC 7208) for the MAIL FROM and HELO identities, evaluated by pyspf over our resolver.

pyspf asks its module-level ``DNSLookup`` for every record; at import this module replaces it by
:func:`_lookup`, which answers through the :class:`~mailserver.inbound.lookups.Lookups` of the check running in
the calling thread and raises ``TempError`` when there is none: pyspf never reaches the system resolver.

Limits (RFC 7208 4.6.4): at most :data:`MAX_DNS_MECHANISMS` mechanisms and modifiers that cause DNS queries
(include, a, mx, ptr, exists, redirect) and :data:`MAX_VOID_LOOKUPS` lookups that return no records; past either
the result is ``permerror``.  pyspf checks both (strict mode) with its module constants, which are set here.
The check's own time limit and query count (``Lookups``) bound the rest: MX and PTR expansion, include loops.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

import spf as pyspf

from mailserver.dns import DnsError, DnsPermanentError
from mailserver.inbound.lookups import Lookups

#: RFC 7208 4.6.4: DNS-querying terms per evaluation, and lookups that may come back empty.
MAX_DNS_MECHANISMS = 10
MAX_VOID_LOOKUPS = 2

pyspf.MAX_LOOKUP = MAX_DNS_MECHANISMS
pyspf.MAX_VOID_LOOKUPS = MAX_VOID_LOOKUPS

NONE, NEUTRAL, PASS, FAIL, SOFTFAIL, TEMPERROR, PERMERROR = (
    "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
RESULTS = (NONE, NEUTRAL, PASS, FAIL, SOFTFAIL, TEMPERROR, PERMERROR)

MAILFROM, HELO = "mailfrom", "helo"

_current = threading.local()


@dataclass(frozen=True)
class SpfResult:
    """One SPF evaluation: ``identity`` is the address checked (MAIL FROM, or postmaster@HELO) and ``domain`` its
    domain (the one DMARC aligns)."""

    scope: str  # MAILFROM | HELO
    result: str
    identity: str
    domain: str
    reason: str = ""  # why, for errors: pyspf's message


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNS driver: ((name, type), value) pairs, through the check's Lookups; never the system resolver."""
    lookups: Lookups | None = getattr(_current, "lookups", None)
    if lookups is None:
        raise pyspf.TempError("DNS: no resolver for this SPF check")
    try:
        if qtype in ("A", "AAAA"):
            return [((name, qtype), a) for a in lookups.addresses(name, qtype)]
        if qtype == "MX":
            return [((name, qtype), mx) for mx in lookups.mx(name)]
        if qtype == "PTR":
            return [((name, qtype), target) for target in lookups.ptr(name)]
        if qtype == "TXT":
            return [((name, qtype), [t]) for t in lookups.txt(name)]
        return []  # type SPF (99) is obsolete (RFC 7208 3.1); pyspf asks only in its "harsh" mode
    except DnsPermanentError:
        return []  # NXDOMAIN: a void lookup for pyspf's count
    except DnsError as e:
        if e.permanent:
            raise pyspf.PermError(e.reason) from None
        raise pyspf.TempError(e.reason) from None


pyspf.DNSLookup = _lookup


def _sanitize(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:200]


def check(lookups: Lookups, ip: str, sender: str, helo: str, receiver: str, scope: str) -> SpfResult:
    """Evaluate SPF for ``scope``: MAILFROM checks ``sender`` (or, for the null reverse path, postmaster@``helo``,
    RFC 7208 2.4), HELO checks postmaster@``helo`` (RFC 7208 2.3).  Always returns a result, never raises."""
    if scope == HELO or not sender:
        identity = f"postmaster@{helo}" if helo else ""
        domain = helo
    else:
        identity, domain = sender, sender.rpartition("@")[2]
    if not domain or _is_literal(domain) or "." not in domain.strip("."):
        # RFC 7208 2.3/4.3: an address literal or a name that is not a FQDN has no SPF record.
        return SpfResult(scope, NONE, identity, domain, "no domain to check")
    _current.lookups = lookups
    try:
        q = pyspf.query(i=ip, s=identity, h=helo or domain, receiver=receiver, strict=True,
                        timeout=max(lookups.remaining(), 0.1))
        result, _code, explanation = q.check()
        reason = explanation if result in (TEMPERROR, PERMERROR) else ""
    except Exception as e:  # noqa: BLE001 - pyspf on hostile records: a verdict, never a crash
        result, reason = PERMERROR, f"SPF evaluation failed: {type(e).__name__}"
    finally:
        _current.lookups = None
    if result not in RESULTS:  # "ambiguous" exists only in pyspf's harsh mode
        result = PERMERROR
    return SpfResult(scope, result, identity, domain, _sanitize(reason))


def _is_literal(name: str) -> bool:
    name = name.strip("[]")
    if name.lower().startswith("ipv6:"):
        name = name[5:]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
