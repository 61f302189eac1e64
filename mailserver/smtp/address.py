"""RFC 5321 / RFC 6531 paths and ESMTP parameters (sans-IO, no Twisted).

``parse_mail_arg("FROM:<a@b> SIZE=10")`` returns the path and the parameter map; ``mail_params`` / ``rcpt_params``
turn the map into typed, validated values.  Syntax errors raise :class:`AddressError` carrying the reply to send.
The mailbox syntax itself (local part, domain, address literals) is :mod:`mailserver.address`, shared with delivery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver import address
from mailserver.address import MAX_PATH, Mailbox
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply, SmtpError

# RFC 3461 4.4: ENVID at most 100 characters; 4.2: ORCPT at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500


class AddressError(SmtpError):
    """A path or parameter is malformed."""

    def __init__(self, reply: Reply, detail: str = ""):
        super().__init__(reply.with_text(f"{reply.lines[0]}: {detail}") if detail else reply)


# RFC 5321 4.1.2 esmtp-keyword; esmtp-value (RFC 6531 3.3 adds UTF8-non-ascii).
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
# RFC 3461 4: xtext.
_XTEXT_RE = re.compile(r"([\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")


def _neutral(f, *args):
    try:
        return f(*args)
    except address.AddressError as e:
        raise AddressError(codes.SYNTAX, str(e)) from None


def parse_domain(text: str) -> str:
    """:func:`mailserver.address.parse_domain`, failing with the SMTP reply 501 5.5.2."""
    return _neutral(address.parse_domain, text)


def parse_mailbox(text: str) -> Mailbox:
    """:func:`mailserver.address.parse_mailbox`, failing with the SMTP reply 501 5.5.2."""
    return _neutral(address.parse_mailbox, text)


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
            parse_domain(hop[1:])
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
