"""IMAP wire rendering of the parse stored at delivery (RFC 9051 7.5.2, 6.4.5).

Input is the JSON produced by :mod:`mailserver.mime.parse`; output is bytes ready to be
written after ``ENVELOPE``/``BODY``/``BODYSTRUCTURE``. Strings that fit a quoted string
are quoted (``"`` and ``\\`` escaped); anything with 8-bit, CR, LF or NUL becomes a
literal, which every client accepts (RFC 9051 4.3). NUL octets are dropped: not even a
literal may carry them.
"""

from __future__ import annotations

import re

__all__ = [
    "render_string",
    "render_nstring",
    "render_envelope",
    "render_bodystructure",
    "resolve_part",
    "section_range",
    "header_fields",
]

# RFC 9051 9: QUOTED-CHAR is any TEXT-CHAR (CHAR minus CR, LF; CHAR excludes NUL) ...
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")


def render_string(value: str) -> bytes:
    """A string as quoted when possible, else as a literal."""
    if value.isascii() and "\r" not in value and "\n" not in value and "\x00" not in value:
        # The common case, the same bytes as below: every character is a QUOTED-CHAR.
        data = value.encode("ascii")
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    data = value.encode("utf-8", "replace")
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    if _QUOTABLE.fullmatch(data):
        # ... with quoted-specials escaped.
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def render_nstring(value: str | None) -> bytes:
    return b"NIL" if value is None else render_string(str(value))


def _address(addr: list) -> bytes:
    # RFC 9051 7.5.2 address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
    return b"(" + b" ".join(render_nstring(a) for a in (list(addr) + [None] * 4)[:4]) + b")"


def _address_list(addrs: list | None) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(_address(a) for a in addrs) + b")"  # 1*address, no separator


def render_envelope(envelope: list) -> bytes:
    """ENVELOPE value: date subject from sender reply-to to cc bcc in-reply-to message-id."""
    env = (list(envelope or []) + [None] * 10)[:10]
    items = [render_nstring(env[0]), render_nstring(env[1])]
    items += [_address_list(env[i]) for i in range(2, 8)]
    items += [render_nstring(env[8]), render_nstring(env[9])]
    return b"(" + b" ".join(items) + b")"


def _params(params: list | None) -> bytes:
    # body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    if not params:
        return b"NIL"
    return b"(" + b" ".join(render_string(n) + b" " + render_string(v) for n, v in params) + b")"


def _disposition(dsp: list | None) -> bytes:
    # body-fld-dsp = "(" string SP body-fld-param ")" / nil
    if not dsp:
        return b"NIL"
    return b"(" + render_string(dsp[0]) + b" " + _params(dsp[1]) + b")"


def _language(lang: list | None) -> bytes:
    # body-fld-lang = nstring / "(" string *(SP string) ")"
    if not lang:
        return b"NIL"
    return b"(" + b" ".join(render_string(t) for t in lang) + b")"


def _render(bs: dict, extended: bool, out: list[bytes]) -> None:
    children = bs.get("children")
    if children:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        out.append(b"(")
        for child in children:
            _render(child, extended, out)
        out.append(b" " + render_string(bs["subtype"]))
        if extended:
            out.append(b" " + _params(bs.get("params")))
            out.append(b" " + _disposition(bs.get("disposition")))
            out.append(b" " + _language(bs.get("language")))
            out.append(b" " + render_nstring(bs.get("location")))
        out.append(b")")
        return
    mtype = bs.get("type") or "text"
    subtype = bs.get("subtype") or "plain"
    is_text = mtype.lower() == "text"
    params = bs.get("params") or []
    if is_text and not any(p[0].lower() in ("charset", "charset*") for p in params):
        # RFC 2045 5.2: text without a charset is US-ASCII; clients expect it spelled out.
        params = [["CHARSET", "US-ASCII"]] + list(params)
    out.append(b"(" + render_string(mtype) + b" " + render_string(subtype))
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
    out.append(b" " + _params(params))
    out.append(b" " + render_nstring(bs.get("id")))
    out.append(b" " + render_nstring(bs.get("description")))
    out.append(b" " + render_string(bs.get("encoding") or "7BIT"))
    out.append(b" %d" % int(bs.get("size") or 0))
    if "body" in bs:
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        out.append(b" " + render_envelope(bs.get("envelope") or []) + b" ")
        _render(bs["body"], extended, out)
        out.append(b" %d" % int(bs.get("lines") or 0))
    elif is_text:
        out.append(b" %d" % int(bs.get("lines") or 0))  # body-type-text ... SP body-fld-lines
    if extended:
        # body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc ...]]]
        out.append(b" " + render_nstring(bs.get("md5")))
        out.append(b" " + _disposition(bs.get("disposition")))
        out.append(b" " + _language(bs.get("language")))
        out.append(b" " + render_nstring(bs.get("location")))
    out.append(b")")


def render_bodystructure(bs: dict, extended: bool) -> bytes:
    """BODY (extended=False) or BODYSTRUCTURE (extended=True) value, RFC 9051 7.5.2."""
    out: list[bytes] = []
    _render(bs, extended, out)
    return b"".join(out)


def resolve_part(bs: dict, part: tuple[int, ...]) -> dict | None:
    """The node a section part number names (RFC 9051 6.4.5), or None.

    The top-level message is a container whose body is ``bs``: for a non-multipart
    message part 1 is that body itself. Below a message/rfc822 part the numbering
    continues in the encapsulated message's body the same way.
    """
    body = bs
    node: dict | None = None
    for n in part:
        if node is not None:
            if "body" in node:  # message/rfc822: descend into the encapsulated body
                body = node["body"]
            elif node.get("children"):
                body = node
            else:
                return None  # a leaf has no sub-parts
        children = body.get("children")
        if children:
            if not 1 <= n <= len(children):
                return None
            node = children[n - 1]
        else:
            if n != 1:
                return None
            node = body
    return node


def section_range(bs: dict, part: tuple[int, ...], which: str) -> tuple[int, int] | None:
    """Byte range [start, end) of BODY[<part>[.which]] in the raw message, or None.

    ``which`` is "", "HEADER", "TEXT" or "MIME" (case-insensitive); "HEADER.FIELDS" and
    "HEADER.FIELDS.NOT" give the HEADER range, to be filtered with :func:`header_fields`. RFC 9051 6.4.5: HEADER and TEXT
    after a part number need a message/rfc822 (or message/global) part; MIME needs a
    part number; an empty part with "" is the whole message.
    """
    which = (which or "").upper()
    if which.startswith("HEADER.FIELDS"):
        which = "HEADER"  # the caller filters the range with header_fields()
    if not part:
        if which == "":
            return bs["header_start"], bs["body_end"]
        if which == "HEADER":
            return bs["header_start"], bs["body_start"]
        if which == "TEXT":
            return bs["body_start"], bs["body_end"]
        return None
    node = resolve_part(bs, tuple(part))
    if node is None:
        return None
    if which == "":
        return node["body_start"], node["body_end"]
    if which == "MIME":
        return node["header_start"], node["body_start"]
    if which in ("HEADER", "TEXT"):
        inner = node.get("body")
        if inner is None:
            return None
        if which == "HEADER":
            return inner["header_start"], inner["body_start"]
        return inner["body_start"], inner["body_end"]
    return None


def header_fields(raw_header: bytes, names: list[str], not_: bool) -> bytes:
    """HEADER.FIELDS (not_=False) / HEADER.FIELDS.NOT (not_=True) subset of a header.

    RFC 9051 6.4.5: names match ASCII case-insensitively and otherwise exactly; fields
    keep their order, duplicates and folded continuation lines byte for byte; lines that
    are not fields are dropped; the result always ends with the blank line CRLF.
    """
    wanted = {n.strip().lower().encode("ascii", "replace") for n in names}
    out: list[bytes] = []
    keep = False
    lines = raw_header.split(b"\n")
    last = len(lines) - 1
    for idx, line in enumerate(lines):
        if idx < last:
            line += b"\n"
        elif not line:
            break
        if line in (b"\r\n", b"\n"):
            break  # the blank line ending the header
        if line[:1] not in (b" ", b"\t"):
            colon = line.find(b":")
            if colon <= 0:
                keep = False  # not a field
                continue
            keep = (line[:colon].rstrip(b" \t").lower() in wanted) != not_
        if keep:
            out.append(line if idx < last else line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)
