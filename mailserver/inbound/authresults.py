"""The ``Authentication-Results`` header field (RFC 8601): written, read back, and stripped from incoming mail.

* :func:`header_value` writes ours: ``authserv-id`` then one result per line (folded with CRLF TAB), values quoted
  where RFC 2045 ``token`` does not allow them, comments reduced to printable ASCII without parentheses or
  backslashes (DNS and signature data end up in them: they must not be able to close the comment).
* :func:`parse` reads one (ours, or an ``ARC-Authentication-Results`` after its ``i=`` part) tolerantly: comments
  (nested) dropped, quoted strings unquoted; what does not parse is skipped, never raised.
* :class:`AuthResultsStripper` is a sans-IO stream filter for the pipeline (``delivery/pipeline.py``, body
  transforms): RFC 8601 5 requires removing every ``Authentication-Results`` field that claims our authserv-id from
  mail arriving from outside, before ours is added.  It looks at the header section only and holds back at most one
  field (up to :data:`MAX_HELD` bytes): a field whose authserv-id is not found within that is removed too.  Lines
  end with CRLF, a lone CR or a lone LF (what the most lenient reader of the stored message would split on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: RFC 2045 token: any printable ASCII but SP and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
_ADDRESS = re.compile(rf"(?:{_DOT_ATOM})?@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")
#: Most characters of one comment we write.
MAX_COMMENT = 120
#: Most bytes of one Authentication-Results field the stripper holds while looking for its authserv-id.
MAX_HELD = 64 * 1024


# ----------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Clause:
    """One ``method=result`` with its reason, comment and ``ptype.property=value`` pairs (RFC 8601 2.2)."""

    method: str
    result: str
    comment: str = ""
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        out = f"{self.method}={self.result}"
        if self.comment:
            out += f" ({safe_comment(self.comment)})"
        if self.reason:
            out += f" reason={quote_value(self.reason)}"
        for name, value in self.properties:
            if value:
                out += f" {name}={quote_value(value)}"
        return out


_NOT_IN_COMMENT = re.compile(r"[^ -'*-\[\]-~]")  # printable ASCII but "(", ")" and "\\"
_NOT_PRINTABLE = re.compile(r"[^ -~]")


def safe_comment(text: str) -> str:
    text = _NOT_IN_COMMENT.sub("?", text[:4 * MAX_COMMENT])
    return " ".join(text.split())[:MAX_COMMENT]


def quote_value(value: str) -> str:
    """``value`` as an RFC 8601 pvalue: a token, an address, or a quoted-string (printable ASCII only)."""
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    value = _NOT_PRINTABLE.sub("?", value)
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_value(authserv_id: str, clauses: list[Clause]) -> str:
    """The field's value, folded one result per line; ``none`` when there is no result (RFC 8601 2.2)."""
    if not clauses:
        return f"{authserv_id}; none"
    return authserv_id + ";\r\n\t" + ";\r\n\t".join(str(c) for c in clauses)


# ----------------------------------------------------------------------------------------------- reading


def _tokens(text: str) -> list[list[str]]:
    """Segments between ``;`` (outside quotes and comments), each a list of words, "=" and quoted strings."""
    segments: list[list[str]] = [[]]
    word: list[str] = []
    depth = 0
    i, n = 0, len(text)

    def end_word():
        if word:
            segments[-1].append("".join(word))
            word.clear()

    while i < n:
        c = text[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            end_word()
            depth = 1
        elif c == '"':
            end_word()
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            segments[-1].append('"' + "".join(buf))  # marked as quoted: never taken for "=" or ";"
            i = j
        elif c == ";":
            end_word()
            segments.append([])
        elif c == "=":
            end_word()
            segments[-1].append("=")
        elif c in " \t\r\n":
            end_word()
        else:
            word.append(c)
        i += 1
    end_word()
    return segments


def _unquote(tok: str) -> str:
    return tok[1:] if tok.startswith('"') else tok


@dataclass(frozen=True)
class ParsedResult:
    method: str
    result: str
    properties: dict[str, str] = field(default_factory=dict)  # "header.from" -> value, "reason" -> value


def parse(value: str, *, arc: bool = False) -> tuple[str, list[ParsedResult]]:
    """(authserv-id, results) of an Authentication-Results value (``arc``: an AAR value, ``i=N;`` first)."""
    segments = _tokens(value)
    if arc and segments and segments[0][:1] == ["i"]:
        segments = segments[1:]
    if not segments or not segments[0]:
        return "", []
    authserv_id = _unquote(segments[0][0]).lower()
    results = []
    for seg in segments[1:]:
        if len(seg) < 3 or seg[1] != "=":
            continue
        method, result = seg[0].split("/")[0].lower(), _unquote(seg[2]).lower()
        props: dict[str, str] = {}
        for j in range(4, len(seg) - 1):  # "ptype.property = value" (and "reason = value") after the result
            if seg[j] == "=" and seg[j - 1] != "=" and seg[j + 1] != "=":
                props.setdefault(_unquote(seg[j - 1]).lower(), _unquote(seg[j + 1]))
        results.append(ParsedResult(method, result, props))
    return authserv_id, results


def authserv_id(value: bytes, complete: bool = True) -> bytes | None:
    """The authserv-id of a field value (lower-cased; b"" when there is none); None when ``value`` is cut short
    (``complete`` false) before the id ended."""
    i, n, depth = 0, len(value), 0
    while i < n:  # CFWS: whitespace, folding, comments (nested, with quoted-pairs)
        c = value[i:i + 1]
        if depth:
            if c == b"\\":
                i += 1
            elif c == b"(":
                depth += 1
            elif c == b")":
                depth -= 1
        elif c == b"(":
            depth = 1
        elif c not in (b" ", b"\t", b"\r", b"\n"):
            break
        i += 1
    if i >= n:
        return None if not complete else b""
    if value[i:i + 1] == b'"':
        j, buf = i + 1, bytearray()
        while j < n and value[j:j + 1] != b'"':
            if value[j:j + 1] == b"\\":
                j += 1
            buf += value[j:j + 1]
            j += 1
        if j >= n and not complete:
            return None
        return bytes(buf).lower()
    m = re.compile(rb"[^\s;()\"]*").match(value, i)
    if m.end() >= n and not complete:
        return None
    return m.group().lower()


# ----------------------------------------------------------------------------------------------- stripping

_EOL = re.compile(rb"\r\n|\r|\n")
_AR_NAME = b"authentication-results"


class AuthResultsStripper:
    """Removes the ``Authentication-Results`` fields that claim ``authserv_id`` from a streamed message (sans-IO).

    ``feed(data)`` returns the bytes to pass on, ``finish()`` what is still held; ``removed`` counts the fields
    taken out.  After the header section everything passes through untouched.
    """

    def __init__(self, authserv_id: str, *, shortcut: bool = True):
        self.authserv_id = authserv_id.lower().encode("ascii")
        #: A data piece that starts at a line and holds the whole header section with no field of that name in it
        #: passes as it is (nothing to remove); False: line by line always (what the tests compare with).
        self.shortcut = shortcut
        self.removed = 0
        self._held = b""  # an incomplete line
        self._field: list[bytes] = []  # the undecided Authentication-Results field so far
        self._keep: bool | None = True  # the decision for the current field (None: undecided)
        self._midline = False  # the last piece handed to _piece did not end its line
        self._body = False

    def feed(self, data: bytes) -> bytes:
        if self._body:
            return data
        if self.shortcut and not self._held and not self._midline and self._keep is True:
            end = data.find(b"\r\n\r\n")  # the header section ends at the latest here (an empty line follows)
            if end >= 0 and _AR_NAME not in data[:end].lower():
                self._body = True
                return data
        buf = self._held + data
        out = []
        pos = 0
        while not self._body:
            m = _EOL.search(buf, pos)
            if m is None or (m.group() == b"\r" and m.end() == len(buf)):
                break  # no line end yet (a CR at the end may be the first half of CRLF)
            out.append(self._piece(buf[pos:m.end()], complete=True))
            pos = m.end()
        rest = buf[pos:]
        if self._body:
            out.append(rest)
            rest = b""
        elif len(rest) > MAX_HELD:
            out.append(self._piece(rest, complete=False))
            rest = b""
        self._held = rest
        return b"".join(out)

    def finish(self) -> bytes:
        out = b""
        if self._held and not self._body:
            out = self._piece(self._held, complete=False)
        self._held = b""
        return out + self._decide(final=True)

    # A piece is a whole line (complete) or a long run of one (not complete).
    def _piece(self, piece: bytes, complete: bool) -> bytes:
        out = b""
        if self._midline:
            out = self._continue(piece)
        elif _EOL.fullmatch(piece):
            out = self._decide(final=True) + piece
            self._body = True  # the empty line: the header section ends (RFC 5322 2.1)
        elif piece[:1] in (b" ", b"\t"):
            out = self._continue(piece)
        else:
            out = self._decide(final=True)
            name, colon, _ = piece.partition(b":")
            if colon and name.strip().lower() == _AR_NAME:
                self._keep, self._field = None, [piece]
                out += self._decide(final=False)
            else:
                self._keep = True
                out += piece
        self._midline = not complete
        return out

    def _continue(self, piece: bytes) -> bytes:
        if self._keep is None:
            self._field.append(piece)
            return self._decide(final=False)
        return piece if self._keep else b""

    def _decide(self, final: bool) -> bytes:
        """Settle the held field when its authserv-id is known (or it ended, or grew past MAX_HELD)."""
        if self._keep is not None:
            return b""
        text = b"".join(self._field)
        found = authserv_id(text[:MAX_HELD].partition(b":")[2], complete=final and len(text) <= MAX_HELD)
        if found is None and len(text) <= MAX_HELD:
            return b""  # the id may still come
        self._field = []
        self._keep = found is not None and found != self.authserv_id
        if not self._keep:
            self.removed += 1
            return b""
        return text
