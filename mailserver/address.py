"""Mailbox addresses as RFC 5321 / RFC 6531 spell them (sans-IO, no protocol).

Shared by every part that takes an address from outside: the SMTP session parses paths with it, the webmail's
submission and the delivery pipeline take its :class:`Mailbox`.  Malformed input raises :class:`AddressError`
naming what is wrong; each protocol maps it to its own reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5321 4.5.3.1.1-3: size limits of the parts of a path.
MAX_LOCAL_PART = 64
#: SRS local parts (``SRS0=``/``SRS1=``, delivery/srs.py) carry a whole address and grow past 64; RFC 5321 4.5.3.1
#: asks implementations to avoid such limits where they can, so these may reach this length (the path stays 256).
MAX_SRS_LOCAL_PART = 255
MAX_DOMAIN = 255
MAX_PATH = 256


class AddressError(ValueError):
    """An address is malformed; the message says what is wrong ("bad domain")."""


@dataclass(frozen=True)
class Mailbox:
    """A mailbox from a path: ``local_part`` as sent (unquoted when quoting was unnecessary), ``domain`` lower-case."""

    local_part: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}" if self.domain else self.local_part

    @property
    def is_ascii(self) -> bool:
        return self.address.isascii()

    def __str__(self) -> str:
        return self.address


# RFC 5321 4.1.2 atext (RFC 5322 3.2.3), extended by RFC 6531 3.3 with UTF8-non-ascii.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING_RE = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# RFC 5321 4.1.2 sub-domain = Let-dig [Ldh-str]; RFC 6531 3.3 allows U-labels.
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# RFC 5321 4.1.3 address literals.
_IPV4_LIT = re.compile(r"\[(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\]")
_IPV6_LIT = re.compile(r"\[IPv6:[0-9A-Fa-f:.]+\]", re.IGNORECASE)
_GENERAL_LIT = re.compile(r"\[[A-Za-z0-9\-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\]")


def parse_domain(text: str) -> str:
    """A domain or address literal (RFC 5321 4.1.2, 4.1.3); names come back lower-case."""
    if text.startswith("["):
        m = _IPV4_LIT.fullmatch(text)
        if m and all(int(x) <= 255 for x in m.groups()):
            return text
        if _IPV6_LIT.fullmatch(text):
            import ipaddress

            try:
                ipaddress.IPv6Address(text[6:-1])
            except ValueError:
                raise AddressError("bad IPv6 address literal") from None
            return "[IPv6:" + text[6:-1].lower() + "]"
        if _GENERAL_LIT.fullmatch(text) and not text.lower().startswith("[ipv6:"):
            return text
        raise AddressError("bad address literal")
    if not _DOMAIN_RE.fullmatch(text):
        raise AddressError("bad domain")
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain too long")
    return text.lower()


def _parse_local_part(text: str) -> str:
    if text.startswith('"'):
        # RFC 5321 4.1.2 Quoted-string = DQUOTE *QcontentSMTP DQUOTE
        if len(text) < 2 or not text.endswith('"'):
            raise AddressError("bad quoted local part")
        inner, out, i = text[1:-1], [], 0
        while i < len(inner):
            c = inner[i]
            if c == "\\":
                if i + 1 >= len(inner) or not (" " <= inner[i + 1] <= "~"):
                    raise AddressError("bad quoted-pair")
                out.append(inner[i + 1])
                i += 2
                continue
            if c == '"' or (c < " " or c == "\x7f"):
                raise AddressError("bad character in quoted local part")
            out.append(c)
            i += 1
        value = "".join(out)
        if _DOT_STRING_RE.fullmatch(value):
            local = value  # RFC 5321 4.1.2: quoting is unnecessary, use the canonical dot-string form
        else:
            local = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        if not _DOT_STRING_RE.fullmatch(text):
            raise AddressError("bad local part")
        local = text
    size = len(local.encode("utf-8"))
    if size > MAX_LOCAL_PART and (size > MAX_SRS_LOCAL_PART or local[:5].upper() not in ("SRS0=", "SRS1=")):
        raise AddressError("local part too long")
    return local


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split at the last "@" outside a quoted string."""
    in_quote, escaped, at = False, False, -1
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\" and in_quote:
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif c == "@" and not in_quote:
            at = i
    if at <= 0:
        raise AddressError("expected local-part@domain")
    return text[:at], text[at + 1:]


def parse_mailbox(text: str) -> Mailbox:
    """Parse ``local-part@domain`` (RFC 5321 4.1.2 Mailbox)."""
    local, domain = _split_mailbox(text)
    return Mailbox(_parse_local_part(local), parse_domain(domain))


def mailbox_of(address: str) -> Mailbox:
    """The :class:`Mailbox` of an address that was checked before (stored, or taken from a path): split at the
    last "@", no validation."""
    local, at, domain = address.rpartition("@")
    return Mailbox(local, domain.lower()) if at else Mailbox(address, "")
