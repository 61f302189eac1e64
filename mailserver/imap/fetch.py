"""FETCH data items (RFC 3501 6.4.5 / 7.4.2, RFC 9051 6.4.5 / 7.5.2, RFC 3516 BINARY, RFC 7162 MODSEQ), sans-IO.

Pure functions: no Twisted, no sockets, no store. The session loads what :func:`plan_fetch` says and calls
:func:`fetch_response` once per message.

Public API:

- ``plan_fetch(items, *, uid_command, condstore, changed_since=None) -> FetchPlan``: computed once per FETCH command.
  ``FetchPlan`` (frozen) has:
  ``items`` (the effective items: ``UID`` first when the command is UID FETCH and did not ask for it, ``MODSEQ`` last
  with CHANGEDSINCE, RFC 7162 3.1.4.1; enabling CONDSTORE alone adds nothing to the items asked for),
  ``needs_info`` (a :class:`storage.store.MessageInfo` is needed; a ``MessageMeta`` is enough otherwise),
  ``needs_body`` (some item needs blob bytes), ``header_only`` (every byte needed lies in the top-level header, the
  first ``header_size`` bytes), ``sets_seen`` (a non-PEEK ``BODY[...]``, ``BINARY[...]``, ``RFC822`` or
  ``RFC822.TEXT``, RFC 3501 6.4.5), and ``ranges(msg) -> list[(start, end)]``: the merged byte ranges of the blob the
  items need for ``msg`` (partial fetches of plain sections read only what is asked; ``[]`` when nothing is needed).
- ``fetch_response(seq, msg, items, *, body=None, body_reader=None, flags, keywords, recent, uid_command, condstore,
  utf8, rev2, include_flags=False) -> bytes``: the complete ``* seq FETCH (...)\\r\\n`` with literals, items in the
  requested order (implicit UID / MODSEQ added as ``plan_fetch`` does, so the raw command items may be passed too).
  ``msg`` is a MessageInfo-like object (``uid``, ``modseq``, ``size``, ``internal_date``; ``envelope``,
  ``bodystructure`` JSON text or already-decoded, ``header_size`` for items that need them). Body bytes come from
  ``body`` (the whole blob) or ``body_reader(start, end) -> bytes`` (e.g. a :class:`RangeReader` over the ranges of
  ``FetchPlan.ranges``). ``flags`` is the FLAG_* bit mask and ``keywords`` the keyword names the session shows;
  ``\\Recent`` is listed when ``recent`` and not ``rev2`` (RFC 9051 removed it). ``include_flags`` appends FLAGS when
  not asked for (the session uses it after a fetch set ``\\Seen``, RFC 3501 6.4.5), and MODSEQ too when ``condstore``
  (CONDSTORE enabled: RFC 7162 3.1). ``utf8`` (UTF8=ACCEPT enabled) is
  accepted for interface stability: 8-bit strings are always sent as literals, which is valid with or without it.
- ``effective_items(items, *, uid_command, condstore, changed_since=None) -> tuple[FetchAtt, ...]``: the implicit
  UID / MODSEQ rule on its own.
- ``FetchError(text, code=None)`` and its subclass ``UnknownCteError`` (code ``UNKNOWN-CTE``, RFC 3516 4.3 /
  RFC 9051 7.1): the session answers ``NO [code] text``.
- ``RangeReader(chunks: dict[(start, end), bytes])``: a callable ``body_reader`` over pre-read ranges.
- ``decode_binary(data, encoding) -> bytes``: RFC 2045 6.7 / 6.8 content-transfer-decoding for BINARY.

Sections (RFC 9051 6.4.5): ``BODY[]`` is the whole message, ``HEADER``/``TEXT`` the top-level ones, ``n.HEADER`` and
``n.TEXT`` those of the message/rfc822 part ``n``, ``n.MIME`` its MIME header; a section that does not exist is the
empty string. A partial ``<origin.length>`` beyond the end is the empty string and the response names only the origin
(``BODY[]<0>``). Body octets go out as literals; NUL (not a CHAR8, RFC 3501 9) is sent as 0x80 in BODY and RFC822
items, size-preserving. BINARY data is a literal8 (``~{n}``) when it contains NUL (RFC 3516 4.3).
"""

from __future__ import annotations

import binascii
import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from mailserver.mime.imapformat import (
    header_fields,
    render_bodystructure,
    render_envelope,
    resolve_part,
    section_range,
)
from storage.models import FLAG_NAMES

from . import response
from .commands import FetchAtt, Section

__all__ = [
    "FetchError",
    "UnknownCteError",
    "FetchPlan",
    "RangeReader",
    "plan_fetch",
    "effective_items",
    "fetch_response",
    "decode_binary",
]

# Items a MessageMeta (uid, modseq, flags, keywords, size, internal_date) answers on its own.
_META_ITEMS = frozenset({"FLAGS", "UID", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
_IDENTITY_CTE = frozenset({"", "7bit", "8bit", "binary"})
_FLAG_ORDER = tuple(FLAG_NAMES.items())


class FetchError(Exception):
    """A FETCH item cannot be answered; the session replies ``NO [code] text``."""

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class UnknownCteError(FetchError):
    """RFC 3516 4.3: BINARY of a part whose Content-Transfer-Encoding the server cannot decode."""

    def __init__(self, encoding: str):
        super().__init__(f"unknown content-transfer-encoding {encoding}", "UNKNOWN-CTE")
        self.encoding = encoding


# ---------------------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------------------

def _item_needs_body(att: FetchAtt) -> bool:
    return att.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.SIZE") or (
        att.name == "BODY" and att.section is not None
    )


def _item_header_only(att: FetchAtt) -> bool:
    """True when the item needs nothing beyond the top-level header."""
    if att.name == "RFC822.HEADER":
        return True
    if att.name in ("BODY", "BINARY", "BINARY.SIZE") and att.section is not None:
        sec = att.section
        return not sec.part and sec.text is not None and sec.text.startswith("HEADER")
    return False


def effective_items(items: Iterable[FetchAtt], *, uid_command: bool, condstore: bool,
                    changed_since: int | None = None) -> tuple[FetchAtt, ...]:
    """The items a response carries: the requested ones plus the implicit UID and MODSEQ."""
    out = list(items)
    names = {a.name for a in out}
    if uid_command and "UID" not in names:
        out.insert(0, FetchAtt(name="UID"))  # RFC 3501 6.4.8: UID FETCH responses always include UID
    if changed_since is not None and "MODSEQ" not in names:
        # RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ. Nothing else adds it to a FETCH's own responses: RFC 7162 3.1
        # asks for MODSEQ (once CONDSTORE is enabled) in untagged FETCH responses that tell flag changes (STORE,
        # another session, a FETCH that set \Seen: see ``include_flags``), and leaves out those of a FETCH that
        # asked for neither MODSEQ nor a \Seen change. ``condstore`` is accepted for that rule.
        out.append(FetchAtt(name="MODSEQ"))
    return tuple(out)


@dataclass(frozen=True)
class FetchPlan:
    """What the session must load for one FETCH command (see the module docstring)."""

    items: tuple[FetchAtt, ...]
    needs_info: bool
    needs_body: bool
    header_only: bool
    sets_seen: bool

    def ranges(self, msg) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` byte ranges of ``msg``'s blob that :func:`fetch_response` will read."""
        if not self.needs_body:
            return []
        if self.header_only and getattr(msg, "header_size", None) is not None:
            return [(0, int(msg.header_size))]  # every body item is a top-level header item
        ctx = _Context(msg, None, None)
        spans: list[tuple[int, int]] = []
        for att in self.items:
            spans.extend(_item_ranges(att, ctx))
        return _merge(spans)


def plan_fetch(items: Iterable[FetchAtt], *, uid_command: bool, condstore: bool,
               changed_since: int | None = None) -> FetchPlan:
    eff = effective_items(items, uid_command=uid_command, condstore=condstore, changed_since=changed_since)
    body_items = [a for a in eff if _item_needs_body(a)]
    return FetchPlan(
        items=eff,
        needs_info=any(a.name not in _META_ITEMS for a in eff),
        needs_body=bool(body_items),
        header_only=bool(body_items) and all(_item_header_only(a) for a in body_items),
        sets_seen=any(a.sets_seen for a in eff),
    )


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(s for s in spans if s[1] > s[0]):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


class RangeReader:
    """``body_reader`` over ranges read ahead (``{(start, end): bytes}``, as :meth:`FetchPlan.ranges` names them).

    A request must lie inside one of the ranges; anything else is a bug in the caller and raises FetchError.
    """

    def __init__(self, chunks: dict[tuple[int, int], bytes]):
        self._chunks = sorted((s, e, data) for (s, e), data in chunks.items())

    def __call__(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        for s, e, data in self._chunks:
            if s <= start and end <= e:
                return data[start - s : end - s]
        raise FetchError(f"range {start}:{end} was not read")


# ---------------------------------------------------------------------------------------------------------------
# per-message context
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2048)
def _rendered(stored: str, what: str) -> bytes:
    """ENVELOPE, BODYSTRUCTURE or BODY (``what``) rendered from the JSON text stored at delivery; kept by that text
    (a message's never changes), so a client that fetches the same messages again (every mailbox open) renders
    nothing again."""
    value = json.loads(stored)
    if what == "ENVELOPE":
        return render_envelope(value or [])
    return render_bodystructure(value, what == "BODYSTRUCTURE")


class _Context:
    __slots__ = ("msg", "body", "reader", "_bs", "_env")

    def __init__(self, msg, body: bytes | None, reader: Callable[[int, int], bytes] | None):
        self.msg = msg
        self.body = body
        self.reader = reader
        self._bs: dict | None = None
        self._env: list | None = None

    @property
    def bodystructure(self) -> dict:
        if self._bs is None:
            bs = getattr(self.msg, "bodystructure", None)
            if bs is None:
                raise FetchError("message structure not loaded")
            self._bs = json.loads(bs) if isinstance(bs, (str, bytes)) else bs
        return self._bs

    @property
    def envelope(self) -> list:
        if self._env is None:
            env = getattr(self.msg, "envelope", None)
            self._env = (json.loads(env) if isinstance(env, (str, bytes)) else env) or []
        return self._env

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self.body is not None:
            return bytes(self.body[start:end])
        if self.reader is not None:
            return bytes(self.reader(start, end))
        raise FetchError("message body not loaded")


def _whole_range(ctx: _Context, part: tuple[int, ...], which: str) -> tuple[int, int] | None:
    """[start, end) of a section, using only the header size when the section is top-level."""
    msg = ctx.msg
    if not part and which in ("", "HEADER", "TEXT") and getattr(msg, "header_size", None) is not None:
        hs, size = int(msg.header_size), int(msg.size)
        return {"": (0, size), "HEADER": (0, hs), "TEXT": (hs, size)}[which]
    return section_range(ctx.bodystructure, part, which)


def _section_which(sec: Section) -> str:
    text = sec.text or ""
    return "HEADER" if text.startswith("HEADER") else text


def _binary_node(ctx: _Context, sec: Section) -> dict | None:
    """The leaf part BINARY[part] decodes, or None when the section is not content-transfer-encoded data."""
    if not sec.part or sec.text is not None:
        return None
    node = resolve_part(ctx.bodystructure, sec.part)
    if node is None or node.get("children") or "body" in node:
        return None
    return node


def _cte(node: dict) -> str:
    return (node.get("encoding") or "").strip().lower()


def _item_ranges(att: FetchAtt, ctx: _Context) -> list[tuple[int, int]]:
    name = att.name
    if name == "RFC822":
        return [(0, int(ctx.msg.size))]
    if name == "RFC822.HEADER":
        return [_whole_range(ctx, (), "HEADER")]
    if name == "RFC822.TEXT":
        return [_whole_range(ctx, (), "TEXT")]
    if att.section is None or name not in ("BODY", "BINARY", "BINARY.SIZE"):
        return []
    sec = att.section
    rng = _whole_range(ctx, sec.part, _section_which(sec))
    if rng is None:
        return []
    if sec.fields:
        return [rng]  # HEADER.FIELDS: the filter needs the whole header
    if name != "BODY":
        node = _binary_node(ctx, sec)
        if node is not None and _cte(node) not in _IDENTITY_CTE:
            return [rng]  # decoding needs the whole part
        if name == "BINARY.SIZE":
            return []  # identity encoding: the size is the range length
    if att.partial is not None:
        start = min(rng[0] + att.partial[0], rng[1])
        return [(start, min(start + att.partial[1], rng[1]))]
    return [rng]


# ---------------------------------------------------------------------------------------------------------------
# content-transfer-decoding (RFC 2045 6)
# ---------------------------------------------------------------------------------------------------------------

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_base64(data: bytes) -> bytes:
    # RFC 2045 6.8: characters outside the alphabet are ignored; "=" ends the data.
    pad = data.find(b"=")
    if pad >= 0:
        data = data[:pad]
    clean = _B64_JUNK.sub(b"", data)
    if len(clean) % 4 == 1:
        clean = clean[:-1]  # a lone sextet carries no whole octet
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


def _decode_qp(data: bytes) -> bytes:
    out: list[bytes] = []
    lines = data.split(b"\n")
    last = len(lines) - 1
    for idx, line in enumerate(lines):
        if line.endswith(b"\r"):
            line = line[:-1]
        # RFC 2045 6.7 rule 3: trailing white space is transport padding and is deleted.
        line = line.rstrip(b" \t")
        if line.endswith(b"="):
            out.append(line[:-1])  # RFC 2045 6.7 rule 5: soft line break
        elif idx < last:
            out.append(line + b"\r\n")
        else:
            out.append(line)
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), b"".join(out))


def decode_binary(data: bytes, encoding: str | None) -> bytes:
    """The content of a part without its Content-Transfer-Encoding; UnknownCteError for an encoding we lack."""
    enc = (encoding or "").strip().lower()
    if enc in _IDENTITY_CTE:
        return data
    if enc == "base64":
        return _decode_base64(data)
    if enc == "quoted-printable":
        return _decode_qp(data)
    raise UnknownCteError(encoding or "")


# ---------------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------------

def _section_name(sec: Section) -> bytes:
    out = ".".join(str(p) for p in sec.part)
    if sec.text:
        out = f"{out}.{sec.text}" if out else sec.text
    data = out.encode("ascii")
    if sec.fields:
        # RFC 9051 7.5.2: header-list = "(" header-fld-name *(SP header-fld-name) ")", names as requested.
        data += b" (" + b" ".join(response.astring(f) for f in sec.fields) + b")"
    return data


def _response_name(att: FetchAtt) -> bytes:
    if att.section is None:
        return att.name.encode("ascii")
    out = att.name.encode("ascii") + b"[" + _section_name(att.section) + b"]"
    if att.partial is not None:
        out += b"<%d>" % att.partial[0]  # RFC 3501 7.4.2: only the origin octet is echoed
    return out


def _body_value(data: bytes) -> bytes:
    if not data:
        return b'""'
    if b"\x00" in data:
        data = data.replace(b"\x00", b"\x80")  # RFC 3501 9: a literal is CHAR8 (no NUL)
    return response.literal(data)


def _binary_value(data: bytes) -> bytes:
    if not data:
        return b'""'
    # RFC 3516 4.3 / RFC 9051 7.5.2: literal8 when the data contains NUL.
    return response.literal(data, binary=b"\x00" in data)


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    origin, length = partial
    return data[origin : origin + length]  # RFC 9051 6.4.5: beyond the end is the empty string


def _section_data(att: FetchAtt, ctx: _Context) -> bytes:
    """The octets of BODY[section]<partial> (before partial for HEADER.FIELDS, after it otherwise)."""
    sec = att.section
    which = _section_which(sec)
    rng = _whole_range(ctx, sec.part, which)
    if rng is None:
        return b""  # a section that does not exist is empty
    if sec.fields:
        data = header_fields(ctx.read(*rng), list(sec.fields), sec.text == "HEADER.FIELDS.NOT")
        return _partial(data, att.partial)
    if att.partial is not None:
        start = min(rng[0] + att.partial[0], rng[1])
        return ctx.read(start, min(start + att.partial[1], rng[1]))
    return ctx.read(*rng)


def _binary_data(att: FetchAtt, ctx: _Context, *, want_partial: bool) -> bytes:
    sec = att.section
    node = _binary_node(ctx, sec)
    if node is not None and _cte(node) not in _IDENTITY_CTE:
        cte = _cte(node)
        if cte not in ("base64", "quoted-printable"):
            raise UnknownCteError(node.get("encoding") or "")
        data = decode_binary(ctx.read(node["body_start"], node["body_end"]), cte)
        return _partial(data, att.partial) if want_partial else data
    plain = FetchAtt(name="BODY", section=sec, partial=att.partial if want_partial else None)
    return _section_data(plain, ctx)


def _binary_size(att: FetchAtt, ctx: _Context) -> int:
    sec = att.section
    node = _binary_node(ctx, sec)
    if node is not None and _cte(node) not in _IDENTITY_CTE:
        return len(_binary_data(att, ctx, want_partial=False))
    if sec.fields:
        return len(_section_data(FetchAtt(name="BODY", section=sec), ctx))
    rng = _whole_range(ctx, sec.part, _section_which(sec))
    return 0 if rng is None else rng[1] - rng[0]


def _flags_value(flags: int, keywords: Iterable[str], recent: bool, rev2: bool) -> bytes:
    names = [name for bit, name in _FLAG_ORDER if flags & bit]
    if recent and not rev2:
        names.append("\\Recent")  # RFC 3501 2.3.2; RFC 9051 removed \Recent
    names.extend(keywords)
    return response.flag_list(names)


def _internal_date(value: float) -> bytes:
    # The server's time zone is UTC (RFC 3501 2.3.3: INTERNALDATE carries its zone).
    return response.date_time(datetime.fromtimestamp(float(value), timezone.utc))


def fetch_response(seq: int, msg, items: Iterable[FetchAtt], *, body: bytes | None = None,
                   body_reader: Callable[[int, int], bytes] | None = None, flags: int, keywords: Iterable[str],
                   recent: bool, uid_command: bool, condstore: bool, utf8: bool = False, rev2: bool = False,
                   include_flags: bool = False) -> bytes:
    ctx = _Context(msg, body, body_reader)
    eff = list(effective_items(items, uid_command=uid_command, condstore=condstore))
    if include_flags:
        names = {a.name for a in eff}
        if "FLAGS" not in names:
            eff.append(FetchAtt(name="FLAGS"))
        if condstore and "MODSEQ" not in names:
            # RFC 7162 3.1: an untagged FETCH caused by a FETCH that implicitly set \Seen carries MODSEQ once
            # CONDSTORE is enabled (``msg.modseq`` is then the modseq of that change).
            eff.append(FetchAtt(name="MODSEQ"))
    parts: list[bytes] = []
    for att in eff:
        name = att.name
        if name == "FLAGS":
            value = _flags_value(flags, keywords, recent, rev2)
        elif name == "UID":
            value = b"%d" % msg.uid
        elif name == "MODSEQ":
            value = b"(%d)" % msg.modseq  # RFC 7162 3.1.4: "MODSEQ" SP "(" permsg-modsequence ")"
        elif name == "INTERNALDATE":
            value = _internal_date(msg.internal_date)
        elif name == "RFC822.SIZE":
            value = b"%d" % msg.size
        elif name == "ENVELOPE":
            stored = getattr(msg, "envelope", None)
            value = _rendered(stored, name) if isinstance(stored, str) else render_envelope(ctx.envelope)
        elif name == "BODYSTRUCTURE" or (name == "BODY" and att.section is None):
            stored = getattr(msg, "bodystructure", None)
            value = (_rendered(stored, name) if isinstance(stored, str)
                     else render_bodystructure(ctx.bodystructure, name == "BODYSTRUCTURE"))
        elif name == "BODY":
            value = _body_value(_section_data(att, ctx))
        elif name == "RFC822":
            # RFC 3501 6.4.5: RFC822 is BODY[], RFC822.HEADER is BODY.PEEK[HEADER], RFC822.TEXT is BODY[TEXT].
            value = _body_value(ctx.read(0, int(msg.size)))
        elif name == "RFC822.HEADER":
            value = _body_value(ctx.read(*_whole_range(ctx, (), "HEADER")))
        elif name == "RFC822.TEXT":
            value = _body_value(ctx.read(*_whole_range(ctx, (), "TEXT")))
        elif name == "BINARY":
            value = _binary_value(_binary_data(att, ctx, want_partial=True))
        elif name == "BINARY.SIZE":
            value = b"%d" % _binary_size(att, ctx)
        else:
            raise FetchError(f"unknown FETCH item {name}")
        parts.append(_response_name(att) + b" " + value)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
