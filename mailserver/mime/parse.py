"""Parse a message once, at delivery, into what IMAP, POP3 and the webmail need later.

The splitter works on the raw bytes and records byte offsets for every MIME part
(header_start, body_start, body_end), so BODY[section] is a slice of the stored blob and
no FETCH parses the message again. Bodies are never decoded here except a small prefix
of the main text part for the preview; a 25 MB attachment costs a few ``bytes.find``
scans and no copies.

The parser never raises: hostile or broken input gets a best-effort structure (RFC 2045
5.2: an invalid or missing Content-Type is text/plain), and anything unexpected falls
back to a single text/plain part covering the whole body.

Decisions worth knowing (all deliberate, several match Dovecot):
- Header bytes become str as UTF-8 when valid (RFC 6532), else Latin-1. Values rendered
  on the wire are UTF-8, so 8-bit non-UTF-8 header text reaches IMAP clients transcoded
  from Latin-1 rather than byte-exact; ASCII and UTF-8 values are byte-exact.
- The [CR]LF before a boundary delimiter belongs to the delimiter (RFC 2046 5.1.1), so a
  part's body ends before it. ``lines`` counts LF characters in the body: a final line
  without a line break is not counted, as in Dovecot.
- A delimiter line is "--" boundary ["--"] then only transport padding (SP/HTAB) before
  the line break (RFC 2046 5.1.1). "--boundaryX" is not a delimiter for "boundary",
  which keeps an outer boundary that is a prefix of an inner one from splitting it.
- Duplicate parameters: the first wins (it is the one used, e.g. for the boundary);
  later duplicates are dropped so server and client agree.
- RFC 2231 continuations are joined; an extended value stays in its 7-bit wire form
  ``name*`` = ``charset'lang'%XX..`` (use :func:`param_value` for the decoded text).
- A multipart without a usable boundary or without any delimiter, and a container
  nested deeper than MAX_NESTING, degrade to a leaf (text/plain resp.
  application/octet-stream), never to an empty multipart (which IMAP cannot express).
  message/rfc822 with a base64/quoted-printable encoding is a leaf application/octet-stream
  (its content cannot be parsed without decoding).
"""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Iterator
from urllib.parse import unquote_to_bytes

from .text import (
    bytes_to_text,
    decode_charset,
    decode_header_text,
    decode_transfer,
    format_address,
    html_to_text,
    parse_addresses,
    skip_comment,
)

__all__ = [
    "MAX_NESTING",
    "MAX_PARTS",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELD",
    "PREVIEW_CHARS",
    "ParsedMessage",
    "parse_message",
    "parse_structure",
    "iter_leaves",
    "iter_parts",
    "param_value",
    "part_filename",
]

# Named limits. Each has a test one past it in tests/test_mime.py.
MAX_NESTING = 32  # containers enclosing a part; a deeper container becomes a leaf
MAX_PARTS = 10_000  # nodes in one message tree; later parts are left out of the tree
MAX_HEADER_BYTES = 256 * 1024  # of one header block parsed into fields (offsets still exact)
MAX_HEADER_FIELD = 64 * 1024  # of one unfolded field value; longer values are cut
PREVIEW_CHARS = 200
_PREVIEW_PLAIN_BYTES = 2 * 1024  # body prefix decoded for the preview first ...
_PREVIEW_HTML_BYTES = 64 * 1024  # ... and when that gave too little text (markup)

_LF, _CR = 0x0A, 0x0D

_MIME_FIELDS = frozenset(
    {
        "content-type",
        "content-transfer-encoding",
        "content-id",
        "content-description",
        "content-disposition",
        "content-language",
        "content-location",
        "content-md5",
    }
)
_MESSAGE_FIELDS = _MIME_FIELDS | frozenset(
    {
        "date",
        "subject",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "in-reply-to",
        "message-id",
        "references",
    }
)


# ---------------------------------------------------------------------------
# Header blocks
# ---------------------------------------------------------------------------


def _body_start(raw: bytes, start: int, end: int) -> int:
    """Offset just past the blank line ending the header at ``start`` (``end`` if none).

    RFC 5322 2.1: the header ends at the first empty line; LF-only line ends are accepted.
    """
    if start >= end:
        return end
    first = raw[start]
    if first == _LF:
        return start + 1
    if first == _CR and start + 1 < end and raw[start + 1] == _LF:
        return start + 2
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, crlf + 2 if crlf >= 0 else end)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


def _field_pattern(names: frozenset[str]) -> re.Pattern[bytes]:
    # A field starts a line: name, optional WSP (RFC 5322 4.5.3 obs-optional), colon.
    alternatives = b"|".join(re.escape(n.encode()) for n in sorted(names, key=len, reverse=True))
    return re.compile(rb"^(" + alternatives + rb")[ \t]*:", re.M | re.I)


_MIME_PATTERN = _field_pattern(_MIME_FIELDS)
_MESSAGE_PATTERN = _field_pattern(_MESSAGE_FIELDS)
_FOLD = re.compile(rb"\r?\n")


def _fields(raw: bytes, start: int, end: int, pattern: re.Pattern[bytes]) -> dict[str, str]:
    """First occurrence of each wanted field in the header block [start, end), unfolded.

    Only the first MAX_HEADER_BYTES are looked at; a value is cut at MAX_HEADER_FIELD
    bytes. RFC 5322 2.2.3: a field continues on lines starting with WSP; unfolding
    removes the line breaks and keeps the whitespace.
    """
    block = raw[start : min(end, start + MAX_HEADER_BYTES)]
    found: dict[str, str] = {}
    for m in pattern.finditer(block):
        key = m.group(1).lower().decode("ascii")
        if key in found:
            continue
        value_start = m.end()
        eol = block.find(b"\n", value_start)
        while eol >= 0 and block[eol + 1 : eol + 2] in (b" ", b"\t"):
            eol = block.find(b"\n", eol + 1)
        value = block[value_start : len(block) if eol < 0 else eol]
        if len(value) > 4 * MAX_HEADER_FIELD:
            value = value[: 4 * MAX_HEADER_FIELD]
        value = _FOLD.sub(b"", value).strip(b" \t\r")
        found[key] = bytes_to_text(value[:MAX_HEADER_FIELD])
    return found


# ---------------------------------------------------------------------------
# Content-Type and friends (RFC 2045 5.1, RFC 2183, RFC 2231)
# ---------------------------------------------------------------------------

_TSPECIALS = set('()<>@,;:\\"/[]?= \t\r\n')


def _skip_cfws(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            i = skip_comment(s, i)
        else:
            break
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    n = len(s)
    while j < n and s[j] not in _TSPECIALS:
        j += 1
    return s[i:j], j


def _params(s: str, i: int) -> list[list[str]]:
    """Parameters after a media type or disposition type, RFC 2231 continuations joined."""
    raw_params: list[tuple[str, str]] = []
    n = len(s)
    while i < n and len(raw_params) < 1000:
        i = _skip_cfws(s, i)
        if i >= n:
            break
        if s[i] != ";":
            # Junk where a ";" belongs: resynchronise at the next one.
            nxt = s.find(";", i)
            if nxt < 0:
                break
            i = nxt
        i = _skip_cfws(s, i + 1)
        attr, i = _token(s, i)
        i = _skip_cfws(s, i)
        if not attr or i >= n or s[i] != "=":
            continue
        i = _skip_cfws(s, i + 1)
        if i < n and s[i] == '"':
            buf = []
            j = i + 1
            while j < n and s[j] != '"':
                if s[j] == "\\" and j + 1 < n:  # RFC 5322 quoted-pair
                    j += 1
                buf.append(s[j])
                j += 1
            value = "".join(buf)
            i = j + 1
        else:
            # Lenient: real mail has unquoted values with spaces ("name=my file.pdf").
            j = s.find(";", i)
            j = n if j < 0 else j
            value = s[i:j].strip(" \t")
            i = j
        raw_params.append((attr, value))
    return _join_rfc2231(raw_params)


_CONTINUATION = re.compile(r"^(.+?)\*(\d{1,3})(\*?)$")
_ATTRIBUTE_CHAR = re.compile(r"[^A-Za-z0-9!#$&+\-.^_`{|}~]")


def _join_rfc2231(raw_params: list[tuple[str, str]]) -> list[list[str]]:
    """RFC 2231 3: join name*0, name*1.. in order; keep extended values in wire form."""
    result: list[list[str]] = []
    seen: set[str] = set()
    groups: dict[str, dict[int, tuple[str, bool]]] = {}
    order: list[tuple[str, tuple[str, str]]] = []  # ("plain", (attr, value)) / ("group", (base, ""))
    for attr, value in raw_params:
        m = _CONTINUATION.match(attr)
        if m:
            base = m.group(1)
            key = base.lower()
            if key not in groups:
                groups[key] = {}
                order.append(("group", (base, "")))
            groups[key].setdefault(int(m.group(2)), (value, bool(m.group(3))))
        else:
            order.append(("plain", (attr, value)))
    for kind, item in order:
        if kind == "plain":
            attr, value = item
        else:
            base = item[0]
            segs = groups[base.lower()]
            pieces: list[str] = []
            extended = any(ext for _v, ext in segs.values())
            k = 0
            while k in segs:  # RFC 2231 3: a gap ends the value
                value, ext = segs[k]
                if extended and not ext:
                    value = _ATTRIBUTE_CHAR.sub(
                        lambda c: "".join(f"%{b:02X}" for b in c.group().encode()), value
                    )
                    if k == 0:
                        value = "''" + value  # RFC 2231 4: charset'language' only in the first
                pieces.append(value)
                k += 1
            if not pieces:
                continue
            attr = base + ("*" if extended else "")
            value = "".join(pieces)
        key = attr.lower()
        if key in seen:  # duplicate parameter: first wins
            continue
        seen.add(key)
        result.append([attr, value])
    return result


def _content_type(value: str | None) -> tuple[str, str, list[list[str]], bool]:
    """(type, subtype, params, valid). Case is kept as sent."""
    if value is None:
        return "text", "plain", [], False
    i = _skip_cfws(value, 0)
    mtype, i = _token(value, i)
    i = _skip_cfws(value, i)
    subtype = ""
    if i < len(value) and value[i] == "/":
        i = _skip_cfws(value, i + 1)
        subtype, i = _token(value, i)
    params = _params(value, i)
    if not mtype or not subtype:
        # RFC 2045 5.2: a syntactically invalid Content-Type is taken as text/plain.
        return "text", "plain", params, False
    return mtype, subtype, params, True


def _disposition(value: str | None) -> list | None:
    if value is None:
        return None
    i = _skip_cfws(value, 0)
    dtype, i = _token(value, i)
    if not dtype:
        return None
    return [dtype, _params(value, i)]


def _language(value: str | None) -> list[str] | None:
    if not value:
        return None
    # RFC 3282: Content-Language is a comma-separated list of language tags.
    tags = [t.strip() for t in re.sub(r"\([^()]*\)", "", value).split(",")]
    tags = [t for t in tags if t]
    return tags or None


def param_value(params: list | None, name: str) -> str | None:
    """Decoded (Unicode) value of a parameter: RFC 2231 ``name*`` preferred, else ``name``.

    A plain value that carries RFC 2047 words (common for file names) is decoded too.
    """
    if not params:
        return None
    lname = name.lower()
    plain = None
    for attr, value in params:
        key = attr.lower()
        if key == lname + "*":
            # RFC 2231 4: charset "'" language "'" %-encoded octets.
            pieces = value.split("'", 2)
            if len(pieces) == 3:
                charset, _lang, text = pieces
            else:
                charset, text = "", value
            return decode_charset(unquote_to_bytes(text), charset or None)
        if key == lname and plain is None:
            plain = value
    if plain is not None and "=?" in plain:
        return decode_header_text(plain)
    return plain


def part_filename(part: dict) -> str | None:
    """Decoded file name of a part: disposition filename, else Content-Type name."""
    dsp = part.get("disposition")
    name = param_value(dsp[1], "filename") if dsp else None
    return name if name else param_value(part.get("params"), "name")


# ---------------------------------------------------------------------------
# The splitter
# ---------------------------------------------------------------------------


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def _delimiters(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Body part ranges of a multipart body [start, end) (RFC 2046 5.1.1).

    The preamble (before the first delimiter) and the epilogue (after the close
    delimiter) belong to no part. Without a close delimiter the last part runs to ``end``.
    """
    delim = b"--" + boundary
    dlen = len(delim)
    ranges: list[tuple[int, int]] = []
    content = -1
    pos = start
    while True:
        i = raw.find(delim, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != start and raw[i - 1] != _LF:  # delimiters start a line
            continue
        k = i + dlen
        close = raw[k : k + 2] == b"--" and k + 2 <= end
        if close:
            k += 2
        while k < end and raw[k] in (0x20, 0x09):  # transport-padding
            k += 1
        if k < end:
            if raw[k] == _LF:
                k += 1
            elif raw[k] == _CR and k + 1 < end and raw[k + 1] == _LF:
                k += 2
            else:
                continue  # "--boundary" followed by other text is not a delimiter
        if content >= 0:
            # RFC 2046 5.1.1: the CRLF preceding the boundary delimiter belongs to it.
            e = i
            if e > content and raw[e - 1] == _LF:
                e -= 1
                if e > content and raw[e - 1] == _CR:
                    e -= 1
            ranges.append((content, e))
        if close:
            return ranges
        content = k
        pos = k
    if content >= 0:
        ranges.append((content, end))  # missing close delimiter
    return ranges


def _leaf_type(node: dict, mtype: str, subtype: str, keep_params: bool) -> None:
    node["type"], node["subtype"] = mtype, subtype
    if not keep_params:
        node["params"] = []


def _parse_part(
    raw: bytes, start: int, end: int, depth: int, budget: _Budget, digest_child: bool, message: bool
) -> tuple[dict, dict[str, str]]:
    """Parse the entity at [start, end): its header, then its body by type."""
    budget.parts += 1
    body_start = _body_start(raw, start, end)
    fields = _fields(raw, start, body_start, _MESSAGE_PATTERN if message else _MIME_PATTERN)
    ctype = fields.get("content-type")
    if ctype is None and digest_child:
        # RFC 2046 5.1.5: in a multipart/digest the default type is message/rfc822.
        mtype, subtype, params = "message", "rfc822", []
    else:
        mtype, subtype, params, _valid = _content_type(ctype)
    encoding = fields.get("content-transfer-encoding")
    if encoding is not None:
        encoding = _token(encoding, _skip_cfws(encoding, 0))[0] or None
    node: dict = {
        "type": mtype,
        "subtype": subtype,
        "params": params,
        "id": fields.get("content-id"),
        "description": fields.get("content-description"),
        "encoding": encoding,
        "size": end - body_start,
        "md5": fields.get("content-md5"),
        "disposition": _disposition(fields.get("content-disposition")),
        "language": _language(fields.get("content-language")),
        "location": fields.get("content-location"),
        "header_start": start,
        "body_start": body_start,
        "body_end": end,
    }
    ltype, lsub = mtype.lower(), subtype.lower()
    can_nest = depth < MAX_NESTING and budget.parts < MAX_PARTS
    if ltype == "multipart":
        boundary = param_value(params, "boundary")
        children: list[dict] = []
        if can_nest and boundary:
            bbytes = boundary.encode("utf-8", "replace")
            is_digest = lsub == "digest"
            for s, e in _delimiters(raw, body_start, end, bbytes):
                if budget.parts >= MAX_PARTS:
                    break
                child, _f = _parse_part(raw, s, e, depth + 1, budget, is_digest, False)
                children.append(child)
        if children:
            node["children"] = children
        elif not can_nest:
            _leaf_type(node, "application", "octet-stream", False)
        else:
            _leaf_type(node, "text", "plain", True)  # RFC 2045 5.2 best effort
    elif ltype == "message" and lsub in ("rfc822", "global"):
        cte = (encoding or "7bit").lower()
        if can_nest and cte in ("7bit", "8bit", "binary"):
            inner, inner_fields = _parse_part(raw, body_start, end, depth + 1, budget, False, True)
            node["envelope"] = _envelope(inner_fields)
            node["body"] = inner
            node["lines"] = raw.count(b"\n", body_start, end)
        else:
            _leaf_type(node, "application", "octet-stream", False)
    if node["type"].lower() == "text":  # also a multipart degraded to text/plain
        # RFC 9051 7.5.2 body-fld-lines; LF count, a final unterminated line not counted.
        node["lines"] = raw.count(b"\n", body_start, end)
    return node, fields


def parse_structure(raw: bytes) -> dict:
    """Only the bodystructure tree of a message (no envelope, preview): for text extraction."""
    try:
        node, _f = _parse_part(bytes(raw), 0, len(raw), 0, _Budget(), False, True)
        return node
    except Exception:
        return _fallback_structure(bytes(raw))


def iter_parts(bs: dict) -> Iterator[dict]:
    """Every node of a bodystructure tree, depth first, parents before children."""
    stack = [bs]
    while stack:
        node = stack.pop()
        yield node
        if "children" in node:
            stack.extend(reversed(node["children"]))
        elif "body" in node:
            stack.append(node["body"])


def iter_leaves(bs: dict) -> Iterator[dict]:
    """The leaf parts (neither multipart nor message/rfc822) in message order."""
    for node in iter_parts(bs):
        if "children" not in node and "body" not in node:
            yield node


_WHOLE_FIELDS = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+")


def with_inserted_fields(parsed: dict, fields: bytes) -> dict | None:
    """The parse-once columns (``to_json()`` form) of a message with ``fields`` inserted into its top-level header,
    from those of the message without them: the same values with every offset past the insertion moved by
    ``len(fields)``.  It holds when ``fields`` are whole CRLF-terminated header fields that this parser never reads
    (trace and authentication fields: Authentication-Results, Received ...); otherwise None (parse again).
    ``tests/inbound/test_senderauth_forms.py`` checks it against a fresh parse."""
    if not _WHOLE_FIELDS.fullmatch(fields) or _MESSAGE_PATTERN.search(fields) or _MIME_PATTERN.search(fields):
        return None
    delta = len(fields)
    bs = json.loads(parsed["bodystructure"]) if isinstance(parsed["bodystructure"], str) else \
        json.loads(json.dumps(parsed["bodystructure"]))
    for node in iter_parts(bs):
        if node is not bs:
            node["header_start"] += delta
        node["body_start"] += delta
        node["body_end"] += delta
    out = dict(parsed)
    out["size"] = parsed["size"] + delta
    out["header_size"] = parsed["header_size"] + delta
    out["bodystructure"] = json.dumps(bs, separators=(",", ":"))
    return out


def _fallback_structure(raw: bytes) -> dict:
    try:
        body_start = _body_start(raw, 0, len(raw))
    except Exception:
        body_start = 0
    return {
        "type": "text",
        "subtype": "plain",
        "params": [],
        "id": None,
        "description": None,
        "encoding": None,
        "size": len(raw) - body_start,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": 0,
        "body_start": body_start,
        "body_end": len(raw),
        "lines": raw.count(b"\n", body_start),
    }


# ---------------------------------------------------------------------------
# Envelope and summary fields
# ---------------------------------------------------------------------------


def _addresses(value: str | None) -> list | None:
    if value is None:
        return None
    return parse_addresses(value) or None


def _envelope(f: dict[str, str]) -> list:
    """RFC 9051 7.5.2 ENVELOPE as JSON: strings stay as sent (RFC 2047 words included)."""
    from_ = _addresses(f.get("from"))
    # RFC 9051 7.5.2: absent or empty Sender / Reply-To take the value of From.
    sender = _addresses(f.get("sender")) or from_
    reply_to = _addresses(f.get("reply-to")) or from_
    return [
        f.get("date"),
        f.get("subject"),
        from_,
        sender,
        reply_to,
        _addresses(f.get("to")),
        _addresses(f.get("cc")),
        _addresses(f.get("bcc")),
        f.get("in-reply-to"),
        f.get("message-id"),
    ]


_MSG_ID = re.compile(r"<[^<>\s]*>")


def _msg_ids(value: str | None) -> list[str]:
    if not value:
        return []
    return _MSG_ID.findall(value)


def _display(addrs: list | None) -> list[str]:
    out = []
    for name, _adl, mailbox, host in addrs or ():
        if host is None:
            continue
        addr = f"{mailbox}@{host}" if host else (mailbox or "")
        out.append(format_address(decode_header_text(name) if name else "", addr))
    return out


def _date(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return 0.0
        return float(email.utils.mktime_tz(parsed))
    except Exception:
        return 0.0


def _is_attachment(node: dict, parent_subtype: str) -> bool:
    dsp = node.get("disposition")
    dtype = dsp[0].lower() if dsp else ""
    if dtype == "attachment":
        return True
    if dtype == "inline":
        return False
    if "body" in node:  # a forwarded message without a disposition
        return True
    if parent_subtype == "related":  # inline images of an HTML body (RFC 2387)
        return False
    return part_filename(node) is not None


def _has_attachment(bs: dict) -> bool:
    stack: list[tuple[dict, str]] = [(bs, "")]
    while stack:
        node, parent = stack.pop()
        if "children" in node:
            sub = node["subtype"].lower()
            children = node["children"]
            if sub in ("signed", "encrypted"):
                # RFC 1847 2.1/2.2: only the first (resp. second) part is content; the
                # other is the signature or control information, not an attachment.
                children = children[:1] if sub == "signed" else children[1:2]
            stack.extend((c, sub) for c in children)
        elif _is_attachment(node, parent):
            return True
    return False


def _main_text_part(bs: dict) -> dict | None:
    plain = html_part = None
    for node in iter_leaves(bs):
        if node["type"].lower() != "text":
            continue
        dsp = node.get("disposition")
        if dsp and dsp[0].lower() == "attachment":
            continue
        sub = node["subtype"].lower()
        if sub == "plain" and plain is None:
            plain = node
            break
        if sub == "html" and html_part is None:
            html_part = node
    return plain or html_part


def _preview(raw: bytes, bs: dict) -> str:
    part = _main_text_part(bs)
    if part is None:
        return ""
    is_html = part["subtype"].lower() == "html"
    start, stop = part["body_start"], part["body_end"]
    charset = param_value(part.get("params"), "charset")
    # Decode a small prefix first; only markup-heavy bodies need the larger one.
    for size in (_PREVIEW_PLAIN_BYTES, _PREVIEW_HTML_BYTES):
        end = min(stop, start + size)
        text = decode_charset(decode_transfer(raw[start:end], part.get("encoding")), charset)
        if is_html:
            text = html_to_text(text)
        text = " ".join(text[: PREVIEW_CHARS * 8].split())
        if len(text) >= PREVIEW_CHARS or end >= stop:
            break
    return text[:PREVIEW_CHARS]


# ---------------------------------------------------------------------------
# Public result
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedMessage:
    """What the store keeps about a message; see the module docstring for the rules."""

    size: int
    header_size: int
    envelope: list
    bodystructure: dict
    subject: str
    from_addr: str
    to_addr: str
    cc_addr: str
    date_sent: float
    message_id: str
    in_reply_to: str
    references: str
    preview: str
    has_attachment: bool

    def to_json(self) -> dict:
        """Column values for storage; envelope and bodystructure as JSON text."""
        d = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}  # asdict() would deep-copy
        d["envelope"] = json.dumps(self.envelope, separators=(",", ":"))
        d["bodystructure"] = json.dumps(self.bodystructure, separators=(",", ":"))
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ParsedMessage":
        """Inverse of :meth:`to_json` (envelope/bodystructure may also be already decoded)."""
        env = d["envelope"]
        bs = d["bodystructure"]
        return cls(
            size=int(d["size"]),
            header_size=int(d["header_size"]),
            envelope=json.loads(env) if isinstance(env, str) else env,
            bodystructure=json.loads(bs) if isinstance(bs, str) else bs,
            subject=d.get("subject", ""),
            from_addr=d.get("from_addr", ""),
            to_addr=d.get("to_addr", ""),
            cc_addr=d.get("cc_addr", ""),
            date_sent=float(d.get("date_sent", 0.0)),
            message_id=d.get("message_id", ""),
            in_reply_to=d.get("in_reply_to", ""),
            references=d.get("references", ""),
            preview=d.get("preview", ""),
            has_attachment=bool(d.get("has_attachment", False)),
        )


_EMPTY_ENVELOPE = [None] * 10


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a message as delivered (CRLF, byte-exact). Never raises for bytes input."""
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    try:
        bs, fields = _parse_part(raw, 0, len(raw), 0, _Budget(), False, True)
    except Exception:  # a bug must not stop delivery: degrade to one text part
        bs, fields = _fallback_structure(raw), {}
    envelope = _safe(lambda: _envelope(fields), list(_EMPTY_ENVELOPE))
    from_list = envelope[2]
    message_id = _safe(lambda: (_msg_ids(fields.get("message-id")) or [fields.get("message-id", "")])[0], "")
    return ParsedMessage(
        size=len(raw),
        header_size=bs["body_start"],
        envelope=envelope,
        bodystructure=bs,
        subject=_safe(lambda: decode_header_text(fields.get("subject", "")), ""),
        from_addr=_safe(lambda: (_display(from_list) or [""])[0], ""),
        to_addr=_safe(lambda: ", ".join(_display(envelope[5])), ""),
        cc_addr=_safe(lambda: ", ".join(_display(envelope[6])), ""),
        date_sent=_safe(lambda: _date(fields.get("date")), 0.0),
        message_id=message_id,
        in_reply_to=_safe(lambda: " ".join(_msg_ids(fields.get("in-reply-to"))), ""),
        references=_safe(lambda: " ".join(_msg_ids(fields.get("references"))), ""),
        preview=_safe(lambda: _preview(raw, bs), ""),
        has_attachment=_safe(lambda: _has_attachment(bs), False),
    )


def _safe(fn, default):
    try:
        return fn()
    except Exception:
        return default
