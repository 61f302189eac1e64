"""The message as a Sieve script sees it: header fields (editable, RFC 5293), addresses, envelope, body and MIME
parts.  Built from bytes; the body is asked for only when a script needs it (``body``, ``:mime``, foreverypart),
through ``load_body`` (the delivery stage reads the stored blob in a worker thread).  No I/O of its own.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import Callable

_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:(.*)", re.S)
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block without the blank line, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0 and (sep == b"\r\n\r\n" or raw.find(b"\r\n\r\n") < 0):
            return raw[:i + len(sep) // 2], raw[i + len(sep):]
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw[2 if raw.startswith(b"\r\n") else 1:]
    return raw, b""


def parse_header(block: bytes) -> list[list[str]]:
    """[[name, raw value], ...] in order; the raw value keeps its folding (without the final line end)."""
    fields: list[list[str]] = []
    for line in re.split(rb"\r?\n(?![ \t])", block):
        if not line.strip():
            continue
        m = _FIELD.match(line)
        if m is None:
            continue  # not a field (a stray line): ignored, as Pigeonhole does
        fields.append([m.group(1).decode("ascii"), m.group(2).decode("utf-8", "replace")])
    return fields


def unfold(value: str) -> str:
    return _FOLD.sub("", value)


def decode_value(raw: str) -> str:
    """Unfolded, RFC 2047 words decoded, leading and trailing white space removed (RFC 5228 2.7.2)."""
    v = unfold(raw).strip()
    if "=?" in v:
        try:
            v = str(make_header(decode_header(v)))
        except (LookupError, ValueError, UnicodeError):
            pass
    return v


def addresses(value: str) -> list[str]:
    """The addr-specs of an address list (group names and display names dropped); "" for the null "<>"."""
    out = []
    for _name, addr in getaddresses([unfold(value)]):
        if addr or "<>" in value:
            out.append(addr)
    return out


def split_address(addr: str) -> tuple[str, str]:
    if "@" not in addr:
        return addr, ""
    local, _, domain = addr.rpartition("@")
    return local, domain


@dataclass
class Part:
    """One MIME part: its header fields, content type, decoded text (text parts) and children."""

    fields: list[list[str]]
    content_type: str  # "type/subtype", lower-case
    params: dict[str, str]
    raw_body: bytes
    text: str | None  # decoded content of a text part; None for others
    children: list["Part"] = field(default_factory=list)
    is_attachment: bool = False
    #: The parsed entity this part was read from (``replace`` edits it, mailserver/sieve/mimeedit.py).
    msg: email.message.Message | None = field(default=None, repr=False, compare=False)
    #: Replaced away (a child of a part that ``replace`` gave new content): loops skip it.
    detached: bool = False

    def header(self, name: str) -> list[str]:
        n = name.lower()
        return [decode_value(v) for k, v in self.fields if k.lower() == n]

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def part_of(msg: email.message.Message, depth: int = 0) -> Part:
    ctype = msg.get_content_type().lower()
    params = {k.lower(): v for k, v in (msg.get_params() or [])[1:]}
    fields = [[k, v] for k, v in msg.items()]
    children = []
    text = None
    raw = b""
    if msg.is_multipart() and depth < 50:
        children = [part_of(p, depth + 1) for p in msg.get_payload()]
    else:
        payload = msg.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        if ctype.startswith("text/") or ctype == "message/rfc822" and not raw:
            charset = msg.get_content_charset() or "us-ascii"
            try:
                text = raw.decode(charset, "replace")
            except LookupError:
                text = raw.decode("utf-8", "replace")
    disposition = (msg.get("Content-Disposition") or "").lower()
    return Part(fields, ctype, params, raw, text, children, disposition.startswith("attachment"), msg)


class MessageFacts:
    """What the tests read.  ``fields`` is the top-level header, editable by addheader/deleteheader."""

    def __init__(self, head: bytes, *, size: int, envelope_from: str = "", envelope_to: str = "",
                 original_to: str = "", auth: str = "", load_body: Callable[[], bytes] | None = None,
                 body: bytes | None = None):
        self.fields = parse_header(head)
        self.original_fields = [list(f) for f in self.fields]
        self.size = size
        self.envelope = {"from": envelope_from, "to": envelope_to, "orig_to": original_to or envelope_to,
                         "auth": auth}
        self._head = head
        self._load_body = load_body
        self._body = body
        self._root: Part | None = None

    @classmethod
    def from_bytes(cls, raw: bytes, **kw) -> "MessageFacts":
        head, body = split_message(raw)
        return cls(head, size=len(raw), body=body, **kw)

    # ---------------------------------------------------------------- header

    def header(self, name: str) -> list[str]:
        n = name.lower()
        return [decode_value(v) for k, v in self.fields if k.lower() == n]

    def raw_header(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.fields if k.lower() == n]

    def has(self, name: str) -> bool:
        n = name.lower()
        return any(k.lower() == n for k, _ in self.fields)

    @property
    def edited(self) -> bool:
        return self.fields != self.original_fields

    def header_bytes(self) -> bytes:
        """The (edited) header block, each field ending in CRLF, without the blank line."""
        out = []
        for k, v in self.fields:
            out.append(f"{k}:{v}".replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n")
        return b"".join(out)

    # ---------------------------------------------------------------- body

    @property
    def body(self) -> bytes:
        if self._body is None:
            if self._load_body is None:
                self._body = b""
            else:
                _, self._body = split_message(self._load_body())
        return self._body

    @property
    def root(self) -> Part:
        if self._root is None:
            sep = b"\n" if self._head.endswith(b"\n") and not self._head.endswith(b"\r\n") else b"\r\n"
            msg = email.message_from_bytes(self._head + sep + self.body, policy=email.policy.compat32)
            self._root = part_of(msg)
        return self._root

    def parts(self) -> list[Part]:
        return list(self.root.walk())
