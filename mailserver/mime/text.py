"""Text helpers for parsed mail: RFC 2047 words, address lists, body text, base subjects.

Everything here is pure (no I/O) and never raises on hostile input: mail is whatever
the Internet sends, and a display helper that throws would take a delivery or a FETCH
down with it.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re

__all__ = [
    "decode_header_text",
    "decode_charset",
    "decode_transfer",
    "html_to_text",
    "decoded_body",
    "part_text",
    "parse_addresses",
    "address_list",
    "format_address",
    "base_subject",
]

# ---------------------------------------------------------------------------
# Charsets
# ---------------------------------------------------------------------------

# Labels seen in real mail that Python does not know, or knows under a narrower name.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",  # GB18030 is a superset; mailers mislabel GBK text as GB2312
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode20utf8": "utf-8",
    "utf8": "utf-8",
    "ascii": "us-ascii",
    "x-user-defined": "latin-1",
    "unknown-8bit": "latin-1",
    "x-unknown": "latin-1",
    "unknown": "latin-1",
}

# Python "text encodings" that are not character sets and must never be chosen by a
# sender (unicode_escape would interpret backslashes, idna/punycode are not charsets).
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "palmos", "mbcs", "oem"}
)

_codec_cache: dict[str, str | None] = {}


def _codec_name(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when unknown or unsafe."""
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    # RFC 2231 5: a language may follow the charset in an encoded word ("utf-8*en").
    label = label.split("*", 1)[0]
    if label in _codec_cache:
        return _codec_cache[label]
    name = _CHARSET_ALIASES.get(label, label)
    result: str | None
    try:
        info = codecs.lookup(name)
        result = (
            None if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True) else info.name
        )
    except (LookupError, ValueError, TypeError):
        result = None
    if len(_codec_cache) < 1000:
        _codec_cache[label] = result
    return result


def decode_charset(data: bytes, charset: str | None) -> str:
    """Decode body bytes in their declared charset.

    A known declared charset decodes with U+FFFD replacement. With no charset, or one we
    do not know, the bytes are tried as UTF-8 and otherwise read as Latin-1 (which cannot
    fail): charset-normalizer is not installed, and UTF-8 is what undeclared 8-bit mail
    overwhelmingly is today.
    """
    codec = _codec_name(charset)
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec, "replace")
        except Exception:  # broken stateful codecs (utf-7) can raise despite "replace"
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def bytes_to_text(data: bytes) -> str:
    """Header bytes to str: UTF-8 when valid (RFC 6532), else Latin-1 (lossless, documented)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------
# RFC 2047 encoded words
# ---------------------------------------------------------------------------

# RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=". Real mail
# puts spaces inside Q text and words inside quoted strings or glued to other text, so
# the pattern is looser than the grammar (no whitespace only in the charset). The
# encoded text cannot hold "?" (RFC 2047 4.1, 4.2), which also keeps matching linear.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _decode_q(text: str) -> bytes:
    # RFC 2047 4.2: "_" is SPACE, "=XX" an octet.
    raw = text.replace("_", " ").encode("utf-8", "replace")
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def _decode_b(text: str) -> bytes:
    data = _B64_JUNK.sub(b"", text.encode("ascii", "ignore"))
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return b""


def decode_header_text(value: str) -> str:
    """Decode RFC 2047 encoded words in a header value; never raises.

    Whitespace between two encoded words is dropped (RFC 2047 6.2); adjacent words in
    the same charset are joined before charset decoding, so a multi-byte character split
    across two words (common in real mail) survives. Folding line breaks are removed.
    """
    try:
        if not value:
            return ""
        if "\n" in value or "\r" in value:
            value = re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", "").replace("\n", "")
        if "=?" not in value:
            return value
        out: list[str] = []
        pending: bytearray = bytearray()
        pending_charset: str | None = None
        pos = 0
        last_was_word = False
        for m in _ENCODED_WORD.finditer(value):
            gap = value[pos : m.start()]
            if gap and not (last_was_word and gap.strip(" \t") == ""):
                if pending_charset is not None:
                    out.append(decode_charset(bytes(pending), pending_charset))
                    pending.clear()
                    pending_charset = None
                out.append(gap)
            charset, enc, text = m.group(1), m.group(2), m.group(3)
            data = _decode_b(text) if enc in "bB" else _decode_q(text)
            cs = charset.lower().split("*", 1)[0]
            if pending_charset is not None and cs != pending_charset:
                out.append(decode_charset(bytes(pending), pending_charset))
                pending.clear()
            pending_charset = cs
            pending += data
            pos = m.end()
            last_was_word = True
        if pending_charset is not None:
            out.append(decode_charset(bytes(pending), pending_charset))
        out.append(value[pos:])
        return "".join(out)
    except Exception:
        return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------
# Address lists (RFC 5322 3.4), lenient
# ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
    |(?P<quoted>"(?:[^"\\]|\\.)*(?:"|\Z))
    |(?P<atom>[^ \t\r\n<>@,;:.\[\]"()\\]+)
    |(?P<special>[<>@,;:.])""",
    re.X | re.S,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def skip_comment(s: str, i: int) -> int:
    """Index just past the (nested) comment starting at ``s[i] == "("`` (RFC 5322 3.2.2; quoted-pairs skipped)."""
    n = len(s)
    depth = 0
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _tokenize(value: str) -> list[tuple[str, str, str]]:
    """Split an address header into (kind, text, raw) tokens.

    kind is "atom", "quoted", "literal" (domain literal), "comment" (text without the parentheses) or the
    special character itself.
    For "quoted", text is the unescaped content and raw the original with quotes.
    """
    tokens: list[tuple[str, str, str]] = []
    i, n = 0, len(value)
    match = _TOKEN.match
    while i < n:
        m = match(value, i)
        if m is not None:
            kind = m.lastgroup
            text = m.group()
            if kind == "atom":
                tokens.append(("atom", text, text))
            elif kind == "quoted":
                inner = text[1:-1] if len(text) > 1 and text.endswith('"') else text[1:]
                if "\\" in inner:
                    inner = _QUOTED_PAIR.sub(r"\1", inner)
                tokens.append(("quoted", inner, text))
            elif kind == "special":
                tokens.append((text, text, text))
            i = m.end()
            continue
        c = value[i]
        if c == "(":  # RFC 5322 3.2.2: comments nest and may hold quoted-pairs
            j = skip_comment(value, i)
            inner = value[i + 1:j - 1] if value[j - 1:j] == ")" else value[i + 1:j]
            tokens.append(("comment", _QUOTED_PAIR.sub(r"\1", inner).strip(), value[i:j]))
            i = j
        elif c == "[":
            j = value.find("]", i)
            j = n if j < 0 else j + 1
            tokens.append(("literal", value[i:j], value[i:j]))
            i = j
        else:  # a stray ")", "]" or backslash
            i += 1
    return tokens


def _phrase(tokens: list[tuple[str, str, str]]) -> str:
    words: list[str] = []
    for kind, text, _raw in tokens:
        if kind == "." and words:
            words[-1] += "."
        elif kind in ("atom", "quoted", "literal"):
            words.append(text)
    return " ".join(words)


def _addr_spec(tokens: list[tuple[str, str, str]]) -> tuple[str, str]:
    """(local-part, domain) from the tokens of an addr-spec; domain "" if absent."""
    at = None
    for idx in range(len(tokens) - 1, -1, -1):
        if tokens[idx][0] == "@":
            at = idx
            break
    local_tokens = tokens if at is None else tokens[:at]
    domain_tokens = [] if at is None else tokens[at + 1 :]
    local = "".join(raw for kind, _t, raw in local_tokens if kind != "@")
    domain = "".join(raw for _k, _t, raw in domain_tokens)
    return local, domain


def _mailbox(tokens: list[tuple[str, str, str]]) -> list | None:
    """One RFC 5322 mailbox as an IMAP address [name, adl, mailbox, host]."""
    if not tokens:
        return None
    comments = [t[1] for t in tokens if t[0] == "comment"]
    tokens = [t for t in tokens if t[0] != "comment"]
    if not tokens:
        return None
    lt = next((i for i, t in enumerate(tokens) if t[0] == "<"), None)
    if lt is None:
        local, domain = _addr_spec(tokens)
        if not local and not domain:
            return None
        # "user@host (Real Name)": the old form names the person in a comment; use it as the display name.
        name = next((c for c in reversed(comments) if c), None)
        return [name, None, local, domain]
    name = _phrase(tokens[:lt]) or None
    inner = tokens[lt + 1 :]
    gt = next((i for i, t in enumerate(inner) if t[0] == ">"), None)
    if gt is not None:
        inner = inner[:gt]
    adl = None
    # RFC 5322 4.4 obs-route: "<@a,@b:user@host>"; RFC 3501 7.4.2 keeps it as the adl.
    colon = next((i for i, t in enumerate(inner) if t[0] == ":"), None)
    if colon is not None:
        adl = "".join(raw for _k, _t, raw in inner[:colon]) or None
        inner = inner[colon + 1 :]
    local, domain = _addr_spec(inner)
    return [name, adl, local, domain]


def parse_addresses(value: str | None) -> list[list]:
    """Parse an address-list header into IMAP ENVELOPE addresses, never raising.

    Each address is [name, adl, mailbox, host]; names stay as sent (still RFC 2047
    encoded, quotes removed). A group becomes [None, None, group-name, None], its members,
    then [None, None, None, None] (RFC 9051 7.5.2). A missing domain is "" (not NIL, which
    would mark a group). Unparseable junk between commas is skipped.
    """
    if not value:
        return []
    try:
        tokens = _tokenize(value)
    except Exception:
        return []
    result: list[list] = []
    i, n = 0, len(tokens)
    in_group = False
    current: list[tuple[str, str, str]] = []
    angle = 0
    has_angle = False

    def flush() -> None:
        nonlocal has_angle
        addr = _mailbox(current)
        if addr is not None:
            result.append(addr)
        current.clear()
        has_angle = False

    while i < n:
        tok = tokens[i]
        kind = tok[0]
        if kind == "<":
            angle += 1
            has_angle = True
        elif kind == ">":
            angle = max(0, angle - 1)
        if angle == 0 and kind == ":" and not in_group and not has_angle:
            result.append([None, None, _phrase(current), None])
            current.clear()
            in_group = True
        elif angle == 0 and kind == ";" and in_group:
            flush()
            result.append([None, None, None, None])
            in_group = False
        elif angle == 0 and kind in (",", ";"):
            flush()
        else:
            current.append(tok)
        i += 1
    flush()
    if in_group:
        result.append([None, None, None, None])
    return result


def format_address(name: str | None, addr: str) -> str:
    """Display form: "Name <addr>" or just "addr"."""
    if name:
        if any(c in name for c in ',;<>"@:()[]\\'):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{addr}>" if addr else name
    return addr


def address_list(value: str) -> list[tuple[str, str]]:
    """(decoded display name, addr-spec) pairs of an address header; groups flattened."""
    out: list[tuple[str, str]] = []
    for name, _adl, mailbox, host in parse_addresses(value):
        if host is None:  # group start/end markers
            continue
        addr = f"{mailbox}@{host}" if host else (mailbox or "")
        out.append((decode_header_text(name or ""), addr))
    return out


# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


def decode_transfer(data: bytes, encoding: str | None) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 6); unknown encodings pass through."""
    enc = (encoding or "").strip().lower()
    try:
        if enc == "base64":
            clean = _B64_JUNK.sub(b"", data)
            clean = (
                clean[: len(clean) - len(clean) % 4]
                if len(clean) % 4 == 1
                else clean + b"=" * (-len(clean) % 4)
            )
            return binascii.a2b_base64(clean)
        if enc == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return data
    return data


def decoded_body(raw: bytes, part: dict) -> bytes:
    """The body of a stored part with its Content-Transfer-Encoding undone (webmail, BINARY)."""
    return decode_transfer(raw[part["body_start"] : part["body_end"]], part.get("encoding"))


def part_text(raw: bytes, part: dict) -> str:
    """The body of a text part decoded to str (transfer encoding and charset)."""
    return decode_charset(decoded_body(raw, part), charset_of(part))


def charset_of(part: dict) -> str | None:
    """The ``charset`` parameter of a stored body-structure part."""
    for entry in part.get("params") or ():
        if entry[0].lower() == "charset":
            return entry[1]
    return None


_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)?[^<>]*>")  # [^<>]: stops at the next "<"
_HTML_SKIP = {
    name: re.compile(r"</" + name + r"\b[^<>]*>", re.I) for name in ("script", "style", "head", "title")
}
_HTML_BREAKS = frozenset({"br", "p", "div", "tr", "li", "table", "hr", "h1", "h2", "h3", "h4", "h5", "h6"})


def html_to_text(markup: str) -> str:
    """Rough text of an HTML body for previews and search (not for display).

    One forward scan (linear time on hostile markup): tags become spaces or line breaks,
    script/style/head/title content and comments are dropped, entities are unescaped.
    """
    out: list[str] = []
    pos, n = 0, len(markup)
    while pos < n:
        lt = markup.find("<", pos)
        if lt < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:lt])
        if markup.startswith("<!--", lt):
            end = markup.find("-->", lt + 4)
            pos = n if end < 0 else end + 3
            out.append(" ")
            continue
        m = _HTML_TAG.match(markup, lt)
        if m is None:
            out.append("<")
            pos = lt + 1
            continue
        pos = m.end()
        name = (m.group(2) or "").lower()
        if not m.group(1) and name in _HTML_SKIP:
            close = _HTML_SKIP[name].search(markup, pos)
            pos = n if close is None else close.end()
        out.append("\n" if name in _HTML_BREAKS else " ")
    return html.unescape("".join(out))


# ---------------------------------------------------------------------------
# RFC 5256 2.1 base subject
# ---------------------------------------------------------------------------

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\][ \t]*"  # subj-blob = "[" *BLOBCHAR "]" *WSP
_REFWD = re.compile(r"(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:", re.I)  # subj-refwd after the blobs
_LEADING_BLOB = re.compile(_BLOB)
_NON_WSP = re.compile(r"[^ \t]")


def base_subject(subject: str) -> str:
    """RFC 5256 2.1 base subject for SORT and THREAD; case is kept (compare casefolded).

    Works on indexes into the string, so a hostile "Re: Re: Re: ..." costs linear time.
    """
    try:
        # Step 1: decode encoded words, unfold, every WSP run becomes one SPACE.
        text = _WSP_RUN.sub(" ", decode_header_text(subject or ""))
        start, end = 0, len(text)
        while True:
            refwd_failed_at = -1
            # Step 2: remove all trailing subj-trailer text ("(fwd)" / WSP).
            while True:
                while end > start and text[end - 1] in " \t":
                    end -= 1
                if end - start >= 5 and text[end - 5 : end].lower() == "(fwd)":
                    end -= 5
                    continue
                break
            while True:
                before = start
                # Step 3: remove subj-leader (leading WSP, or blobs followed by re/fw/fwd:).
                while start < end and text[start] in " \t":
                    start += 1
                if start > refwd_failed_at:
                    p = start
                    while (m := _LEADING_BLOB.match(text, p, end)) is not None:
                        p = m.end()
                    m = _REFWD.match(text, p, end)
                    if m:
                        start = m.end()
                    else:
                        # Step 4 only drops blobs of this same chain, so step 3 would fail
                        # again until start passes p: skip it (keeps this linear).
                        refwd_failed_at = p
                # Step 4: remove a leading subj-blob if that leaves a non-empty base.
                m = _LEADING_BLOB.match(text, start, end)
                if m and _NON_WSP.search(text, m.end(), end):
                    start = m.end()
                # Step 5: repeat 3 and 4 until no change.
                if start == before:
                    break
            # Step 6: "[fwd:" ... "]" (subj-fwd) is unwrapped, then back to step 2.
            if end - start >= 6 and text[start : start + 5].lower() == "[fwd:" and text[end - 1] == "]":
                start += 5
                end -= 1
                continue
            return text[start:end].strip(" ")
    except Exception:
        return subject or ""
