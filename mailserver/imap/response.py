"""IMAP response encoding and mailbox-name codecs (RFC 3501 / RFC 9051 sections 4, 5.1.3, 7, 9), sans-IO.

Every function returns ``bytes`` ready for the transport. Text arguments are ``str`` (UTF-8) or ``bytes``.

Strings:
- ``quoted(value) -> bytes``: ``"..."`` with ``\\`` and ``"`` escaped; raises ValueError for CR, LF or NUL.
- ``literal(data, *, binary=False) -> bytes``: ``{n}\\r\\n<data>`` (``~{n}`` for literal8, RFC 3516).
- ``string(value, *, utf8=False) -> bytes``: quoted when it can be (8-bit only when ``utf8``, RFC 9051 / RFC 6855
  3), else a literal.
- ``astring(value, *, utf8=False)``: a bare atom when every octet is an ASTRING-CHAR, else ``string``.
- ``nstring(value | None, *, utf8=False)``: ``NIL`` for None.
- ``paren(items: Iterable[bytes]) -> bytes``, ``flag_list(flags: Iterable[str]) -> bytes``.
- ``date_time(dt: datetime) -> bytes``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 3501 9 date-time).

Mailbox names (RFC 3501 5.1.3 modified UTF-7; RFC 6855 3 / RFC 9051 5.1 UTF-8):
- ``mutf7_encode(name: str) -> bytes``, ``mutf7_decode(raw: bytes) -> str`` (strict; ValueError on bad input).
- ``encode_mailbox(name: str, *, utf8=False) -> bytes`` (no quoting), ``decode_mailbox(raw: bytes, *, utf8=False,
  separator="/") -> str`` (ValueError on bad input; ``INBOX`` normalised, see ``normalize_inbox``).
- ``mailbox(name: str, *, utf8=False) -> bytes``: the encoded name as a quoted string or literal (LIST, STATUS).
- ``normalize_inbox(name: str, separator="/") -> str``: RFC 3501 5.1: ``inbox`` in any case is ``INBOX``; so is the
  first level of its children (``inbox/x`` -> ``INBOX/x``).

Response lines:
- ``untagged(text: bytes | str) -> bytes``: ``* <text>\\r\\n``.
- ``tagged(tag, status, text, code=None) -> bytes``: ``<tag> OK [CODE] text\\r\\n``.
- ``continuation(text="Ready") -> bytes``: ``+ Ready\\r\\n``.
- ``response_code(code) -> bytes``: ``[CODE]`` (``code`` may carry arguments: ``"APPENDUID 3 7"``).
Line text never carries CR or LF: they are replaced by spaces (RFC 3501 9 text = 1*TEXT-CHAR).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import datetime, timezone

from .wire import ASTRING_CHARS

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MB64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


# -- modified UTF-7 -----------------------------------------------------------------------------------------

def _b64_chunk(chars: list[str]) -> bytes:
    raw = "".join(chars).encode("utf-16-be")
    # RFC 3501 5.1.3: modified BASE64 uses "," for "/" and no "=" padding.
    return b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-"


def mutf7_encode(name: str) -> bytes:
    out = bytearray()
    pending: list[str] = []
    for ch in name:
        o = ord(ch)
        if 0x20 <= o <= 0x7E:
            if pending:
                out += _b64_chunk(pending)
                pending = []
            # RFC 3501 5.1.3: "&" is represented as "&-"; other printable US-ASCII as themselves.
            out += b"&-" if ch == "&" else bytes((o,))
        else:
            pending.append(ch)
    if pending:
        out += _b64_chunk(pending)
    return bytes(out)


def mutf7_decode(raw: bytes) -> str:
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c < 0x20 or c > 0x7E:
            raise ValueError("non-printable or 8-bit octet in modified UTF-7")
        if c != 0x26:
            out.append(chr(c))
            i += 1
            continue
        end = raw.find(b"-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified BASE64")
        if end == i + 1:
            out.append("&")
            i = end + 1
            continue
        chunk = raw[i + 1 : end]
        if any(b not in _MB64 for b in chunk) or len(chunk) % 4 == 1:
            raise ValueError("invalid modified BASE64")
        std = chunk.replace(b",", b"/")
        decoded = base64.b64decode(std + b"=" * (-len(std) % 4))
        # Reject non-canonical encodings (left-over bits, odd UTF-16 length).
        if base64.b64encode(decoded).rstrip(b"=") != std or len(decoded) % 2:
            raise ValueError("invalid modified BASE64")
        text = decoded.decode("utf-16-be")  # strict: unpaired surrogates raise
        if any(0x20 <= ord(ch) <= 0x7E for ch in text):
            # RFC 3501 5.1.3: printable US-ASCII must not be encoded.
            raise ValueError("printable US-ASCII in modified BASE64")
        out.append(text)
        i = end + 1
    return "".join(out)


def normalize_inbox(name: str, separator: str = "/") -> str:
    head, sep, rest = name.partition(separator) if separator else (name, "", "")
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def encode_mailbox(name: str, *, utf8: bool = False) -> bytes:
    return name.encode("utf-8") if utf8 else mutf7_encode(name)


def decode_mailbox(raw: bytes, *, utf8: bool = False, separator: str = "/") -> str:
    if utf8:
        # RFC 6855 3 / RFC 9051 5.1: after ENABLE UTF8=ACCEPT (or IMAP4rev2) names are UTF-8 on the wire.
        name = raw.decode("utf-8")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
            raise ValueError("control character in mailbox name")
    else:
        name = mutf7_decode(raw)
    return normalize_inbox(name, separator)


# -- strings ------------------------------------------------------------------------------------------------

def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quoted(value: bytes | str) -> bytes:
    data = _as_bytes(value)
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        raise ValueError("CR, LF and NUL cannot be quoted")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes | str, *, binary: bool = False) -> bytes:
    data = _as_bytes(data)
    return (b"~" if binary else b"") + b"{%d}\r\n" % len(data) + data


_QUOTABLE_7BIT = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_QUOTABLE_8BIT = re.compile(rb"[^\x00\r\n]*\Z")


def string(value: bytes | str, *, utf8: bool = False) -> bytes:
    data = _as_bytes(value)
    if len(data) <= 1024 and (_QUOTABLE_8BIT if utf8 else _QUOTABLE_7BIT).match(data):
        if utf8 and not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return literal(data)
        return quoted(data)
    return literal(data)


def astring(value: bytes | str, *, utf8: bool = False) -> bytes:
    data = _as_bytes(value)
    if data and all(b in ASTRING_CHARS for b in data):
        return data
    return string(data, utf8=utf8)


def nstring(value: bytes | str | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    return string(encode_mailbox(name, utf8=utf8), utf8=utf8)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return paren(f.encode("ascii") for f in flags)


def date_time(dt: datetime) -> bytes:
    """RFC 3501 9: date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    offset = dt.utcoffset()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f'"{dt.day:2d}-{_MONTHS[dt.month - 1]}-{dt.year:04d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} '
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


# -- lines --------------------------------------------------------------------------------------------------

def _text(text: bytes | str) -> bytes:
    return _as_bytes(text).replace(b"\r", b" ").replace(b"\n", b" ")


def response_code(code: bytes | str) -> bytes:
    return b"[" + _text(code) + b"]"


def untagged(text: bytes | str) -> bytes:
    """``* <text>``; ``text`` may contain literals (FETCH data), so only a trailing CRLF is added."""
    return b"* " + _as_bytes(text) + b"\r\n"


def tagged(tag: bytes | str, status: str, text: bytes | str, code: bytes | str | None = None) -> bytes:
    parts = [_as_bytes(tag), status.encode("ascii")]
    if code:
        parts.append(response_code(code))
    parts.append(_text(text) or b"done")
    return b" ".join(parts) + b"\r\n"


def status_line(status: str, text: bytes | str, code: bytes | str | None = None) -> bytes:
    """Untagged status response: ``* OK [CODE] text`` (also ``* NO``, ``* BAD``, ``* BYE``, ``* PREAUTH``)."""
    return tagged(b"*", status, text, code)


def continuation(text: bytes | str = "Ready") -> bytes:
    return b"+ " + _text(text) + b"\r\n"
