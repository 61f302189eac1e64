"""Fuzzing the MIME layer: ``mime/parse.py`` parse_message, the IMAP rendering of ENVELOPE and BODYSTRUCTURE
(``mime/imapformat.py``), BODY[section] ranges and HEADER.FIELDS, ``mime/searchtext.py`` extract_text and the header
decoders of ``mime/text.py``.

Input is a MIME tree built from RFC 2045-2049 pieces (multipart with boundaries that are prefixes of each other,
reused by a nested part, quoted, empty, or missing their close delimiter; message/rfc822 and message/global, digest,
RFC 2231 continuations, RFC 2047 words, base64 / quoted-printable bodies right and wrong, group addresses, comments,
folded fields, nesting past MAX_NESTING), rendered to bytes, then sometimes mutated (fuzzlib.mutated, fields padded
around MAX_HEADER_FIELD) or replaced by random bytes.

The parser's safety nets (``except Exception`` degrading to a text/plain part, ``_safe``) would hide a bug as a
wrong structure, so the tests run them in strict mode (:func:`strict`): a failure they would swallow fails the test.

Properties: no exception; every offset is within the message, each part's header before its body, children in order
inside their parent's body; rendering never raises and gives one well-formed IMAP value, the same after the JSON
round trip the store does; section ranges are None or within the message; extract_text and the decoders return str.
"""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import strategies as st

from mailserver.mime import imapformat, parse, searchtext, text
from mailserver.mime.imapformat import header_fields, render_bodystructure, render_envelope, section_range
from mailserver.mime.parse import MAX_HEADER_FIELD, MAX_NESTING, ParsedMessage, iter_parts, parse_message
from tests.fuzz.fuzzlib import fuzz, mutated
from tests.fuzz.imapsyntax import check_one_value

# ------------------------------------------------------------------------------------------------ strict mode


@contextlib.contextmanager
def strict():
    """Run with the MIME safety nets off: ``except Exception`` in parse.py and searchtext.py catches nothing, in
    text.py only codec errors (a charset codec may raise despite "replace"); the stdlib date parser keeps its
    guard (its errors are the documented "no date")."""
    saved = {mod: mod.__dict__.get("Exception") for mod in (parse, searchtext, text)}
    orig_date = parse._date

    def guarded_date(value):
        try:
            return orig_date(value)
        except (ValueError, OverflowError, TypeError, IndexError):
            return 0.0

    parse.Exception = ()
    searchtext.Exception = ()
    text.Exception = (UnicodeError,)
    parse._date = guarded_date
    try:
        yield
    finally:
        parse._date = orig_date
        for mod, value in saved.items():
            if value is None:
                del mod.Exception
            else:
                mod.Exception = value


# ------------------------------------------------------------------------------------------------ grammar

_addresses = st.sampled_from([
    "alice@example.org", '"Alice A." <alice@example.org>', "=?utf-8?q?J=C3=B6rg?= <j@example.org>",
    "=?iso-8859-1?b?SvZyZw==?= <j@x>", "team: a@b, c@d;", "undisclosed-recipients:;", "<>", '"unterminated <a@b>',
    "(comment) a@b (more)", "a@b, , c@d,", "<@route:a@b>", "a", "@", "a@", "\"\\\"q\\\"\" <q@x>", "<<a@b>>",
    "=?utf-8?b?invalid?= <x@y>", "a@b" * 50, "Ünïcödé <u@ex.org>", "group:;", "x:y:z;",
])
_subjects = st.sampled_from([
    "Hello", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=", "=?bogus?q?x?=",
    "=?utf-7?q?+AGE-?=", "Re: Fwd: [list] Re: subject (fwd)", "\x00\x01", "é raw latin", "=?utf-8?q?" + "=FF" * 30 + "?=",
    "=?", "?=", "=?utf-8*en?q?x?=", "x" * 2000,
])
_dates = st.sampled_from(["Thu, 13 Feb 2020 12:00:00 +0000", "13 Feb 2020 12:00 -0800", "garbage",
                          "Thu, 31 Dec 9999 99:99:99 +9999", "Mon, 1 Jan 0001 00:00:00 +0000", "", "1 Jan 99999999999",
                          "Fri, 29 Feb 2019 10:00:00 GMT"])
_charsets = st.sampled_from(["utf-8", "us-ascii", "iso-8859-1", '"UTF-8"', "utf-7", "gb2312", "bogus", "idna",
                             "utf-16", "unicode-escape", "", "x" * 300])
_leaf_types = st.sampled_from([
    "text/plain", "text/html", "TEXT/PLAIN", "text", "/plain", "text/", "application/octet-stream", "image/png",
    "message/delivery-status", "(comment) text/plain (c)", "text/plain (unbalanced", "", ";", "a/b/c",
])
_encodings = st.sampled_from(["", "7bit", "8bit", "binary", "base64", "BASE64", "quoted-printable", "x-uuencode",
                              "base64 (comment)", "(c)"])
_params = st.lists(st.sampled_from([
    'name="a.pdf"', "name*=utf-8''%E2%82%AC.pdf", "name*=''%ZZ", 'name*0="part"; name*1="two.pdf"',
    "name*0*=utf-8''%E2; name*1*=%82%AC", "name*1=gap", 'filename="=?utf-8?q?x=C3=A9?="', "format=flowed",
    'x="unterminated', "=", "a=b=c", "name=my file.pdf", 'name=""', "name*999=x", "name*=bad'", "junk",
]), max_size=4)
_dispositions = st.sampled_from([None, "inline", "attachment", 'attachment; filename="r.txt"',
                                 "attachment; filename*=utf-8''%F0%9F%98%80.txt", "", ";", "(c)"])


def _field(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


@st.composite
def _body(draw, encoding: str) -> bytes:
    data = draw(st.one_of(
        st.sampled_from([b"Hello\r\n", b"caf\xc3\xa9\r\n", b"\xff\xfe\x00", b"<p>hi</p><script>x</script>\r\n",
                         b"<!-- unterminated", b"&amp;&#x110000;&#99999999;", b"", b"--b1\r\n", b".\r\n"]),
        st.binary(max_size=120),
    ))
    enc = encoding.lower()
    if enc.startswith("base64"):
        return draw(st.sampled_from([base64.encodebytes(data), b"!!!not base64===\r\n", b"QQ\r\n", b"Q\r\n"]))
    if enc == "quoted-printable":
        return draw(st.sampled_from([data.replace(b"=", b"=3D") + b"=\r\n", b"=ZZ=\r\n=4", b"soft=\r\nbreak\r\n"]))
    return data


@st.composite
def _leaf(draw) -> bytes:
    ctype = draw(_leaf_types)
    params = draw(_params)
    if ctype.lower().startswith("text") and draw(st.booleans()):
        params = [f"charset={draw(_charsets)}", *params]
    encoding = draw(_encodings)
    head = b""
    if draw(st.integers(0, 5)):
        head += _field("Content-Type", "; ".join([ctype, *params]))
    if encoding:
        head += _field("Content-Transfer-Encoding", encoding)
    dsp = draw(_dispositions)
    if dsp is not None:
        head += _field("Content-Disposition", dsp)
    for name, value in draw(st.lists(st.sampled_from([
        ("Content-ID", "<part1@x>"), ("Content-Description", "=?utf-8?q?d=C3=A9?="), ("Content-Language", "en, (c) de"),
        ("Content-Location", "http://x/y"), ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ=="), ("X-Folded", "a\r\n\tb"),
        ("content-type", "text/html"), ("Content-Type ", "image/gif"),
    ]), max_size=3)):
        head += _field(name, value)
    return head + b"\r\n" + draw(_body(encoding))


def _message_header(draw) -> bytes:
    head = b""
    for name, values in (("From", _addresses), ("To", _addresses), ("Cc", _addresses), ("Sender", _addresses),
                         ("Reply-To", _addresses), ("Subject", _subjects), ("Date", _dates)):
        if draw(st.booleans()):
            head += _field(name, draw(values))
    if draw(st.booleans()):
        head += _field("Message-ID", draw(st.sampled_from(["<a@b>", "a@b", "<>", "<a@b> <c@d>", "<unterminated"])))
    if draw(st.booleans()):
        head += _field("References", "<a@b> <c@d>\r\n <e@f>")
    if draw(st.booleans()):
        head += _field("In-Reply-To", "<a@b>")
    return head


_boundaries = st.sampled_from(["b1", "b1x", "b", "=_part_", '"quoted boundary"', "with space", "", "x" * 80,
                               "b1--", "'"])


def _node(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def multipart(draw) -> bytes:
        boundary = draw(_boundaries)
        bb = boundary.strip('"').encode()
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "digest", "signed", "encrypted",
                                        "report", "MIXED"]))
        head = _field("Content-Type", f"multipart/{subtype}; boundary={boundary}")
        parts = draw(st.lists(children, max_size=4))
        preamble = draw(st.sampled_from([b"", b"preamble\r\n", b"--" + bb + b"x\r\n"]))
        body = preamble + b"".join(b"--" + bb + draw(st.sampled_from([b"", b" ", b"\t"])) + b"\r\n" + p + b"\r\n"
                                   for p in parts)
        end = draw(st.sampled_from([b"--" + bb + b"--\r\n", b"--" + bb + b"--", b"", b"--" + bb + b"-\r\n"]))
        epilogue = draw(st.sampled_from([b"", b"epilogue\r\n", b"--" + bb + b"\r\nafter close\r\n"]))
        return head + b"\r\n" + body + end + epilogue

    @st.composite
    def message(draw) -> bytes:
        ctype = draw(st.sampled_from(["message/rfc822", "message/global", "MESSAGE/RFC822"]))
        head = _field("Content-Type", ctype)
        enc = draw(st.sampled_from(["", "7bit", "base64", "quoted-printable"]))
        if enc:
            head += _field("Content-Transfer-Encoding", enc)
        return head + b"\r\n" + _message_header(draw) + draw(children)

    return st.one_of(multipart(), message())


mime_part = st.recursive(_leaf(), _node, max_leaves=10)


@st.composite
def _deep(draw) -> bytes:
    """A chain of containers around MAX_NESTING deep."""
    depth = draw(st.integers(MAX_NESTING - 1, MAX_NESTING + 2))
    inner = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    kind = draw(st.sampled_from(["multipart", "message", "mixed"]))
    for i in range(depth):
        if kind == "message" or (kind == "mixed" and i % 2):
            inner = b"Content-Type: message/rfc822\r\n\r\nSubject: level\r\n" + inner
        else:
            b = b"d%d" % i
            inner = b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + inner + \
                b"\r\n--" + b + b"--\r\n"
    return inner


@st.composite
def mime_message(draw) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=400))
    if kind == 1:
        raw = _message_header(draw) + draw(_deep())
    else:
        raw = _message_header(draw) + draw(mime_part)
    for _ in range(draw(st.integers(0, 2)) if draw(st.booleans()) else 0):
        raw = draw(mutated(raw, (MAX_HEADER_FIELD,)))
    return raw


# ------------------------------------------------------------------------------------------------ properties


def check_structure(raw: bytes, bs: dict) -> None:
    """Offsets within the message and ordered: header, body; children in order inside the parent's body."""
    n = len(raw)

    def walk(node: dict, lo: int, hi: int, depth: int) -> None:
        assert depth <= 2 * MAX_NESTING + 2
        hs, bs_, be = node["header_start"], node["body_start"], node["body_end"]
        assert lo <= hs <= bs_ <= be <= hi <= n, (lo, hs, bs_, be, hi, n)
        assert node["size"] == be - bs_
        if node["type"].lower() == "text" or "body" in node:
            assert node["lines"] == raw.count(b"\n", bs_, be)
        children = node.get("children")
        if children is not None:
            assert children, "an empty multipart (IMAP cannot express it)"
            prev = bs_
            for child in children:
                walk(child, prev, be, depth + 1)
                prev = child["body_end"]
        if "body" in node:
            walk(node["body"], bs_, be, depth + 1)
            assert node["body"]["header_start"] == bs_

    walk(bs, 0, n, 0)
    assert bs["header_start"] == 0 and bs["body_end"] == n


def _paths(bs: dict) -> list[tuple[int, ...]]:
    """Every section part number of the tree (RFC 9051 6.4.5), plus a few that name nothing."""
    out: list[tuple[int, ...]] = [(), (1,), (2,), (1, 1), (0,), (1, 2, 3, 4)]

    def walk(body: dict, prefix: tuple[int, ...], depth: int) -> None:
        if depth > 6:
            return
        children = body.get("children")
        nodes = list(enumerate(children, 1)) if children else [(1, body)]
        for i, node in nodes:
            path = prefix + (i,)
            out.append(path)
            if "body" in node:
                walk(node["body"], path, depth + 1)
            elif node.get("children"):
                walk(node, path, depth + 1)

    walk(bs, (), 0)
    return out


def check_rendering(parsed: ParsedMessage) -> None:
    env = render_envelope(parsed.envelope)
    check_one_value(env)
    for extended in (False, True):
        check_one_value(render_bodystructure(parsed.bodystructure, extended))
    again = ParsedMessage.from_json(json.loads(json.dumps(parsed.to_json())))
    assert again == parsed
    assert render_envelope(again.envelope) == env


def check_sections(raw: bytes, bs: dict) -> None:
    for path in _paths(bs):
        for which in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "header.fields.not", "BOGUS"):
            r = section_range(bs, path, which)
            if r is None:
                continue
            start, end = r
            assert 0 <= start <= end <= len(raw), (path, which, r)
            if which.upper().startswith("HEADER"):
                for names, not_ in ((["From", "to", "X-\xe9"], False), (["Subject"], True), ([], False)):
                    out = header_fields(raw[start:end], names, not_)
                    assert out.endswith(b"\r\n")
                    assert len(out) <= end - start + 4  # fields kept byte for byte, CRLF added at most twice
        imapformat.resolve_part(bs, path)


@fuzz(raw=mime_message())
def test_parse_render_extract(raw):
    """parse_message, ENVELOPE/BODYSTRUCTURE, section ranges, extract_text: strict, well-formed, in bounds."""
    with strict():
        parsed = parse_message(raw)
        bs = parsed.bodystructure
        check_structure(raw, bs)
        assert parsed.size == len(raw) and parsed.header_size == bs["body_start"]
        assert len(parsed.preview) <= parse.PREVIEW_CHARS
        for value in (parsed.subject, parsed.from_addr, parsed.to_addr, parsed.cc_addr, parsed.message_id,
                      parsed.in_reply_to, parsed.references):
            assert isinstance(value, str)
        check_rendering(parsed)
        check_sections(raw, bs)
        assert parse.parse_structure(raw) == bs
        found = searchtext.extract_text(raw)
        assert isinstance(found, str)
        assert searchtext.extract_text(raw, bodystructure=bs) == found
        short = searchtext.extract_text(raw, 10, bs)
        assert len(short) <= 10 and found.startswith(short)
        for node in iter_parts(bs):
            parse.part_filename(node)
            if "children" not in node and "body" not in node:
                assert isinstance(text.part_text(raw, node), str)


_header_values = st.one_of(_addresses, _subjects, _dates, st.text(max_size=80),
                           st.binary(max_size=80).map(lambda b: b.decode("latin-1")))


@fuzz(value=_header_values)
def test_header_decoders(value):
    """decode_header_text, parse_addresses, address_list, base_subject: str out (strict), for any str in."""
    with strict():
        assert isinstance(text.decode_header_text(value), str)
        for addr in text.parse_addresses(value):
            assert len(addr) == 4
            check_one_value(imapformat._address(addr))
        for name, spec in text.address_list(value):
            assert isinstance(name, str) and isinstance(spec, str)
        assert isinstance(text.base_subject(value), str)
