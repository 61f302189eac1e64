"""A strict reader of the IMAP values a server sends (RFC 9051 9): to check that rendered data is well-formed.

``read_value(data, i)`` reads one of ``NIL``, a number, a quoted string, a literal (``{n}`` CRLF and exactly n
octets; ``~{n}`` for literal8), an atom, or a parenthesized list of those separated by single spaces, and returns
the offset after it; anything else raises ``AssertionError`` naming the offset.
"""

from __future__ import annotations

import re

_LITERAL = re.compile(rb"~?\{([0-9]+)\}\r\n")
_NUMBER = re.compile(rb"[0-9]+")
_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\\]]+")
# RFC 9051 9: QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials (TEXT-CHAR: no CR, LF, NUL).
_QUOTED = re.compile(rb'"(?:[^"\\\r\n\x00]|\\["\\])*"')
MAX_DEPTH = 200


def read_value(data: bytes, i: int = 0, depth: int = 0) -> int:
    assert depth <= MAX_DEPTH, "nesting deeper than any structure we render"
    assert i < len(data), f"value expected at end ({i})"
    c = data[i:i + 1]
    if c == b"(":
        i += 1
        if data[i:i + 1] == b")":
            return i + 1
        while True:
            i = read_value(data, i, depth + 1)
            nxt = data[i:i + 1]
            if nxt == b")":
                return i + 1
            # body-type-mpart is "1*body SP media-subtype": bodies follow each other without a space.
            if nxt == b"(":
                continue
            assert nxt == b" ", f"expected SP or ) at {i}: {data[i:i + 20]!r}"
            i += 1
    if c == b'"':
        m = _QUOTED.match(data, i)
        assert m, f"bad quoted string at {i}: {data[i:i + 40]!r}"
        return m.end()
    if c in (b"{", b"~"):
        m = _LITERAL.match(data, i)
        assert m, f"bad literal marker at {i}: {data[i:i + 20]!r}"
        end = m.end() + int(m.group(1))
        assert end <= len(data), f"literal at {i} runs past the end"
        return end
    if data[i:i + 3].upper() == b"NIL" and data[i + 3:i + 4] in (b"", b" ", b")", b"("):
        return i + 3
    m = _NUMBER.match(data, i) or _ATOM.match(data, i)
    assert m, f"unexpected {data[i:i + 20]!r} at {i}"
    return m.end()


def check_one_value(data: bytes) -> None:
    end = read_value(data, 0)
    assert end == len(data), f"trailing data after the value at {end}: {data[end:end + 20]!r}"
