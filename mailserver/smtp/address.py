"""RFC 5321 / RFC 6531 paths and ESMTP parameters (sans-IO, no Twisted).

``parse_mail_arg("FROM:<a@b> SIZE=10")`` returns the path and the parameter map; ``mail_params`` / ``rcpt_params``
turn the map into typed, validated values.  Syntax errors raise :class:`AddressError` carrying the reply to send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.smtp import codes
from mailserver.smtp.codes import Reply, SmtpError

# RFC 5321 4.5.3.1.1-3: size limits of the parts of a path.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 3461 4.4: ENVID at most 100 characters; 4.2: ORCPT at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500


class AddressError(SmtpError):
    """A path or parameter is malformed."""

    def __init__(self, reply: Reply, detail: str = ""):
        super().__init__(reply.with_text(f"{reply.lines[0]}: {detail}") if detail else reply)


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
_ATOM_RE = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+")
_DOT_STRING_RE = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# RFC 5321 4.1.2 sub-domain = Let-dig [Ldh-str]; RFC 6531 3.3 allows U-labels.
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# RFC 5321 4.1.3 address literals.
_IPV4_LIT = re.compile(r"\[(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\]")
_IPV6_LIT = re.compile(r"\[IPv6:[0-9A-Fa-f:.]+\]", re.IGNORECASE)
_GENERAL_LIT = re.compile(r"\[[A-Za-z0-9\-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\]")
# RFC 5321 4.1.2 esmtp-keyword; esmtp-value (RFC 6531 3.3 adds UTF8-non-ascii).
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
# RFC 3461 4: xtext.
_XTEXT_RE = re.compile(r"([\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")


def _parse_domain(text: str) -> str:
    if text.startswith("["):
        m = _IPV4_LIT.fullmatch(text)
        if m and all(int(x) <= 255 for x in m.groups()):
            return text
        if _IPV6_LIT.fullmatch(text):
            import ipaddress

            try:
                ipaddress.IPv6Address(text[6:-1])
            except ValueError:
                raise AddressError(codes.SYNTAX, "bad IPv6 address literal") from None
            return "[IPv6:" + text[6:-1].lower() + "]"
        if _GENERAL_LIT.fullmatch(text) and not text.lower().startswith("[ipv6:"):
            return text
        raise AddressError(codes.SYNTAX, "bad address literal")
    if not _DOMAIN_RE.fullmatch(text):
        raise AddressError(codes.SYNTAX, "bad domain")
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError(codes.SYNTAX, "domain too long")
    return text.lower()


def _parse_local_part(text: str) -> str:
    if text.startswith('"'):
        # RFC 5321 4.1.2 Quoted-string = DQUOTE *QcontentSMTP DQUOTE
        if len(text) < 2 or not text.endswith('"'):
            raise AddressError(codes.SYNTAX, "bad quoted local part")
        inner, out, i = text[1:-1], [], 0
        while i < len(inner):
            c = inner[i]
            if c == "\\":
                if i + 1 >= len(inner) or not (" " <= inner[i + 1] <= "~"):
                    raise AddressError(codes.SYNTAX, "bad quoted-pair")
                out.append(inner[i + 1])
                i += 2
                continue
            if c == '"' or (c < " " or c == "\x7f"):
                raise AddressError(codes.SYNTAX, "bad character in quoted local part")
            out.append(c)
            i += 1
        value = "".join(out)
        if _DOT_STRING_RE.fullmatch(value):
            local = value  # RFC 5321 4.1.2: quoting is unnecessary, use the canonical dot-string form
        else:
            local = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        if not _DOT_STRING_RE.fullmatch(text):
            raise AddressError(codes.SYNTAX, "bad local part")
        local = text
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(codes.SYNTAX, "local part too long")
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
        raise AddressError(codes.SYNTAX, "expected local-part@domain")
    return text[:at], text[at + 1:]


def parse_mailbox(text: str) -> Mailbox:
    """Parse ``local-part@domain`` (RFC 5321 4.1.2 Mailbox)."""
    local, domain = _split_mailbox(text)
    return Mailbox(_parse_local_part(local), _parse_domain(domain))


def split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path text (with brackets) and the parameter text."""
    if not arg.startswith("<"):
        raise AddressError(codes.SYNTAX, "path must be enclosed in <>")
    in_quote, escaped = False, False
    for i in range(1, len(arg)):
        c = arg[i]
        if escaped:
            escaped = False
        elif c == "\\" and in_quote:
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif c == ">" and not in_quote:
            rest = arg[i + 1:]
            if rest and not rest.startswith(" "):
                raise AddressError(codes.SYNTAX, "expected SP after path")
            return arg[: i + 1], rest.strip(" ")
    raise AddressError(codes.SYNTAX, "unterminated path")


def parse_path(path: str, *, allow_null: bool, allow_postmaster: bool = False) -> Mailbox | None:
    """Parse ``<[A-d-l:]mailbox>``; ``<>`` gives None when ``allow_null`` (RFC 5321 4.1.2 Reverse-path)."""
    if len(path.encode("utf-8")) > MAX_PATH + 2:
        raise AddressError(codes.SYNTAX, "path too long")  # RFC 5321 4.5.3.1.3
    inner = path[1:-1]
    if inner == "":
        if allow_null:
            return None
        raise AddressError(codes.SYNTAX, "empty path")
    if inner.startswith("@"):
        # RFC 5321 4.1.2 / Appendix C: a source route is accepted and ignored.
        colon = inner.find(":")
        if colon < 0:
            raise AddressError(codes.SYNTAX, "bad source route")
        for hop in inner[:colon].split(","):
            if not hop.startswith("@"):
                raise AddressError(codes.SYNTAX, "bad source route")
            _parse_domain(hop[1:])
        inner = inner[colon + 1:]
    if allow_postmaster and inner.lower() == "postmaster":
        return Mailbox("postmaster", "")  # RFC 5321 4.1.1.3: <Postmaster> without a domain
    return parse_mailbox(inner)


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``KEY[=VALUE] ...`` (RFC 5321 4.1.2 Mail-parameters); keywords upper-cased, duplicates refused."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(" "):
        if not item:
            continue  # tolerate doubled spaces
        key, eq, value = item.partition("=")
        if not _KEYWORD_RE.fullmatch(key):
            raise AddressError(codes.BAD_ARGUMENTS, f"bad parameter {key!r}")
        if eq and not _VALUE_RE.fullmatch(value):
            raise AddressError(codes.BAD_ARGUMENTS, f"bad value for {key.upper()}")
        key = key.upper()
        if key in params:
            raise AddressError(codes.BAD_ARGUMENTS, f"duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def xtext_decode(value: str) -> str:
    """RFC 3461 4: decode ``+XX`` hex escapes; raise on malformed xtext."""
    if not _XTEXT_RE.fullmatch(value):
        raise AddressError(codes.BAD_ARGUMENTS, "bad xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    """RFC 3461 4: encode characters outside ``!``..``~`` and ``+``, ``=`` as ``+XX``."""
    out = []
    for b in value.encode("utf-8"):
        out.append(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}")
    return "".join(out)


@dataclass(frozen=True)
class MailParams:
    """Validated MAIL FROM parameters."""

    size: int | None = None  # RFC 1870
    body: str = ""  # "7BIT" | "8BITMIME" (RFC 6152) | "" when not given
    smtputf8: bool = False  # RFC 6531 3.4
    ret: str = ""  # "FULL" | "HDRS" (RFC 3461 4.3)
    envid: str = ""  # xtext as received (RFC 3461 4.4)
    auth: str = ""  # RFC 4954 5, kept for the trace only


@dataclass(frozen=True)
class RcptParams:
    """Validated RCPT TO parameters (RFC 3461 4.1, 4.2)."""

    notify: tuple[str, ...] = ()
    orcpt: str = ""  # "addr-type;xtext" as received


@dataclass(frozen=True)
class Extensions:
    """What the session advertised (parameters are only accepted for advertised extensions, RFC 5321 4.1.1.11)."""

    esmtp: bool = True
    size: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    auth: bool = False


def mail_params(params: dict[str, str | None], ext: Extensions) -> MailParams:
    out: dict = {}
    if params and not ext.esmtp:
        raise AddressError(codes.UNKNOWN_PARAMETER, "parameters require EHLO")
    for key, value in params.items():
        if key == "SIZE" and ext.size:
            if value is None or not value.isdigit() or len(value) > 20:
                raise AddressError(codes.BAD_ARGUMENTS, "SIZE needs a number")  # RFC 1870 6
            out["size"] = int(value)
        elif key == "BODY" and ext.eightbitmime:
            v = (value or "").upper()
            if v not in ("7BIT", "8BITMIME"):
                raise AddressError(codes.UNKNOWN_PARAMETER, "BODY must be 7BIT or 8BITMIME")  # RFC 6152 3
            out["body"] = v
        elif key == "SMTPUTF8" and ext.smtputf8:
            if value is not None:
                raise AddressError(codes.BAD_ARGUMENTS, "SMTPUTF8 takes no value")  # RFC 6531 3.4
            out["smtputf8"] = True
        elif key == "RET" and ext.dsn:
            v = (value or "").upper()
            if v not in ("FULL", "HDRS"):
                raise AddressError(codes.BAD_ARGUMENTS, "RET must be FULL or HDRS")  # RFC 3461 4.3
            out["ret"] = v
        elif key == "ENVID" and ext.dsn:
            if not value or len(value) > MAX_ENVID:
                raise AddressError(codes.BAD_ARGUMENTS, "bad ENVID")
            xtext_decode(value)
            out["envid"] = value
        elif key == "AUTH" and ext.auth:
            if not value:
                raise AddressError(codes.BAD_ARGUMENTS, "bad AUTH parameter")
            out["auth"] = value
        else:
            raise AddressError(codes.UNKNOWN_PARAMETER, key)
    return MailParams(**out)


_NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")


def rcpt_params(params: dict[str, str | None], ext: Extensions) -> RcptParams:
    out: dict = {}
    if params and not ext.esmtp:
        raise AddressError(codes.UNKNOWN_PARAMETER, "parameters require EHLO")
    for key, value in params.items():
        if key == "NOTIFY" and ext.dsn:
            items = tuple((value or "").upper().split(","))
            # RFC 3461 4.1: "NEVER" alone, or a list of SUCCESS, FAILURE, DELAY.
            if items == ("NEVER",):
                out["notify"] = items
            elif items and all(i in _NOTIFY_VALUES for i in items) and len(set(items)) == len(items):
                out["notify"] = items
            else:
                raise AddressError(codes.BAD_ARGUMENTS, "bad NOTIFY")
        elif key == "ORCPT" and ext.dsn:
            # RFC 3461 4.2: addr-type ";" xtext
            if not value or len(value) > MAX_ORCPT or ";" not in value:
                raise AddressError(codes.BAD_ARGUMENTS, "bad ORCPT")
            addr_type, _, addr = value.partition(";")
            if not _KEYWORD_RE.fullmatch(addr_type) or not addr:
                raise AddressError(codes.BAD_ARGUMENTS, "bad ORCPT")
            if addr_type.lower() != "utf-8":
                xtext_decode(addr)  # RFC 6533 3 allows UTF-8 for the utf-8 type
            out["orcpt"] = value
        else:
            raise AddressError(codes.UNKNOWN_PARAMETER, key)
    return RcptParams(**out)
