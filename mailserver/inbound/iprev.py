"""The client's reverse DNS (RFC 8601 2.7.3 ``iprev``, forward-confirmed) and HELO sanity: facts, not rejects.

``iprev``: the PTR names of the client address, then the addresses of each name (at most :data:`MAX_PTR_NAMES`);
``pass`` when one of them is the client address again (FCrDNS), ``fail`` when none is, ``permerror`` when there is
no PTR record, ``temperror`` when a lookup failed for now.  :class:`HeloFacts` says whether the HELO name is a FQDN
or an address literal, names us, matches the client address, and is one of the forward-confirmed PTR names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import dns.reversename

from mailserver.dns import DnsError, DnsPermanentError
from mailserver.inbound.lookups import Lookups, valid_name

PASS, FAIL, TEMPERROR, PERMERROR = "pass", "fail", "temperror", "permerror"
#: RFC 7208 5.5 uses the same bound for its ptr mechanism.
MAX_PTR_NAMES = 10
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class IprevResult:
    result: str
    names: tuple[str, ...] = ()  # the PTR names
    confirmed: str = ""  # the name that resolves back to the client (pass)
    reason: str = ""


@dataclass(frozen=True)
class HeloFacts:
    name: str
    literal: bool = False  # [192.0.2.1] / [IPv6:...] (RFC 5321 4.1.3)
    fqdn: bool = False  # a syntactically valid name with at least two labels
    ours: bool = False  # our own host name or a protected domain: a client pretending to be us
    matches_client: bool | None = None  # the literal, or an A/AAAA of the name, is the client (None: not known)
    matches_ptr: bool = False  # the name is the forward-confirmed PTR name


def _same(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped:
        y = y.ipv4_mapped
    return x == y


def _family(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and not addr.ipv4_mapped:
        return "AAAA"
    return "A"


def iprev(lookups: Lookups, ip: str) -> IprevResult:
    """FCrDNS of ``ip``.  Never raises."""
    try:
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        rev = dns.reversename.from_address(str(addr)).to_text(omit_final_dot=True)
    except ValueError:
        return IprevResult(PERMERROR, reason="not an IP address")
    try:
        names = tuple(n.lower() for n in lookups.ptr(rev))
    except DnsPermanentError:
        return IprevResult(PERMERROR, reason="no PTR record")
    except DnsError as e:
        return IprevResult(PERMERROR if e.permanent else TEMPERROR, reason=e.reason)
    if not names:
        return IprevResult(PERMERROR, reason="no PTR record")
    temporary = ""
    for name in names[:MAX_PTR_NAMES]:
        if not valid_name(name):
            continue
        try:
            if any(_same(a, str(addr)) for a in lookups.addresses(name, _family(str(addr)))):
                return IprevResult(PASS, names, name)
        except DnsPermanentError:
            continue
        except DnsError as e:
            temporary = temporary or e.reason
    if temporary:
        return IprevResult(TEMPERROR, names, reason=temporary)
    return IprevResult(FAIL, names, reason="no PTR name resolves to the client")


def helo_facts(lookups: Lookups, helo: str, ip: str, confirmed: str, own_names: frozenset[str]) -> HeloFacts:
    """What the HELO name says about the client (one A or AAAA lookup).  Never raises."""
    name = helo.strip()
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        return HeloFacts(helo, literal=True, matches_client=_same(literal, ip))
    lowered = name.lower().rstrip(".")
    labels = lowered.split(".")
    fqdn = len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels) and valid_name(lowered)
    facts = dict(name=helo, fqdn=fqdn, ours=lowered in own_names, matches_ptr=bool(confirmed) and lowered == confirmed)
    if not fqdn:
        return HeloFacts(**facts, matches_client=False)
    try:
        matches = any(_same(a, ip) for a in lookups.addresses(lowered, _family(ip)))
    except DnsPermanentError:
        matches = False
    except DnsError:
        matches = None
    except ValueError:
        matches = None
    return HeloFacts(**facts, matches_client=matches)
