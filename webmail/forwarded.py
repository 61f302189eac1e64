"""The client's address behind HTTP reverse proxies: ``Forwarded`` (RFC 7239) or ``X-Forwarded-For``, sans-IO.

Believed only from ``[proxy] trusted`` peers, and only as far as the chain of trusted hops reaches: walking the list
from the right (the hop nearest to us), each address a trusted proxy reports is taken; the first untrusted one is the
client.  An entry that is not an address (``unknown``, an obfuscated ``_name``, garbage) stops the walk: the client
is then the last hop we could believe.  A peer that is not trusted is the client, whatever its headers say.
"""

from __future__ import annotations

import ipaddress
import re

from mailserver.proxywire import Networks

#: Most hops looked at, from the right (a longer chain is cut: those hops would have to be trusted anyway).
MAX_HOPS = 32

_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)


def _address(text: str) -> str | None:
    """The IP address of a node name ("192.0.2.7", "192.0.2.7:80", "[2001:db8::1]:443", "2001:db8::1")."""
    text = text.strip().strip('"').strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?", text)
    if m:
        text = m.group(1)
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def forwarded_hops(values: list[str]) -> list[str | None]:
    """The ``for=`` nodes of ``Forwarded`` header values, in order (None for one that is not an address)."""
    hops: list[str | None] = []
    for value in values:
        for element in value.split(","):
            m = _FOR.search(element)
            hops.append(_address(m.group(1)) if m else None)
    return hops[-MAX_HOPS:]


def x_forwarded_for_hops(values: list[str]) -> list[str | None]:
    """The addresses of ``X-Forwarded-For`` header values, in order (None for one that is not an address)."""
    return [_address(part) for value in values for part in value.split(",")][-MAX_HOPS:]


def client_address(peer: str, trusted: Networks, *, forwarded: list[str], x_forwarded_for: list[str]) -> str:
    """The client's address of a request from ``peer`` with these header values (``Forwarded`` wins when given)."""
    if not trusted or peer not in trusted:
        return peer
    hops = forwarded_hops(forwarded) if forwarded else x_forwarded_for_hops(x_forwarded_for)
    client = peer
    for hop in reversed(hops):
        if hop is None:
            break
        client = hop
        if hop not in trusted:
            break
    return client
