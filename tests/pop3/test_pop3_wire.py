"""POP3 wire format: framing limits, command parsing, and streaming dot-stuffing at every split offset."""

import pytest

from mailserver.pop3 import wire
from mailserver.pop3.wire import (
    Apop,
    Auth,
    BodyEncoder,
    Capa,
    Dele,
    DotStuffer,
    LineReader,
    ListCmd,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    TopFilter,
    Uidl,
    User,
    parse_command,
)

# --------------------------------------------------------------------------------------------- framing


def lines_of(reader):
    out = []
    while (line := reader.next_line()) is not None:
        out.append(line)
    return out


def test_line_reader_splits_crlf_and_bare_lf():
    """Lines end with CRLF; a bare LF is tolerated; the line end is removed."""
    r = LineReader(512)
    r.feed(b"STAT\r\nLIST 1\nNOOP")
    assert lines_of(r) == [b"STAT", b"LIST 1"]
    r.feed(b"\r\n")
    assert lines_of(r) == [b"NOOP"]
    assert r.buffered() == 0


def test_line_reader_byte_at_a_time():
    """A line delivered one octet per read is framed the same."""
    r = LineReader(512)
    got = []
    for b in b"USER a\r\nPASS b c\r\n":
        r.feed(bytes([b]))
        got += lines_of(r)
    assert got == [b"USER a", b"PASS b c"]


@pytest.mark.parametrize("max_line", [16, 255, 512])
def test_line_at_limit_is_accepted(max_line):
    """A line of exactly max_line octets including CRLF is accepted."""
    r = LineReader(max_line)
    body = b"X" * (max_line - 2)
    r.feed(body + b"\r\n")
    assert lines_of(r) == [body]


@pytest.mark.parametrize("max_line", [16, 255, 512])
def test_line_one_byte_over_limit_is_refused_and_discarded(max_line):
    """One octet over the limit raises LineTooLong once; the rest of that line is dropped, the next is read."""
    r = LineReader(max_line)
    r.feed(b"X" * (max_line - 1) + b"\r\nNOOP\r\n")
    with pytest.raises(wire.LineTooLong):
        r.next_line()
    assert lines_of(r) == [b"NOOP"]


def test_line_too_long_without_line_end_discards_until_it_arrives():
    """An overlong line still arriving is dropped as it comes, never buffered."""
    r = LineReader(16)
    r.feed(b"Y" * 16)
    with pytest.raises(wire.LineTooLong):
        r.next_line()
    r.feed(b"Y" * 10_000)
    assert r.buffered() == 0
    r.feed(b"YY\r\nSTAT\r\n")
    assert lines_of(r) == [b"STAT"]


def test_bare_lf_line_counts_its_terminator():
    """With a bare LF the limit counts the LF: max_line - 1 characters + LF fit."""
    r = LineReader(16)
    r.feed(b"Z" * 15 + b"\n")
    assert lines_of(r) == [b"Z" * 15]
    r.feed(b"Z" * 16 + b"\n")
    with pytest.raises(wire.LineTooLong):
        r.next_line()


def test_backlog_limit_one_byte_over():
    """Unprocessed pipelined input may reach max_buffer octets; one more is an overflow."""
    r = LineReader(16, max_buffer=100)
    r.feed(b"a" * 100)
    r.check_backlog()
    r.feed(b"a")
    with pytest.raises(wire.PipelineOverflow):
        r.check_backlog()


def test_clear_forgets_buffered_plaintext():
    """clear() drops everything buffered (used by STLS)."""
    r = LineReader(512)
    r.feed(b"STLS\r\nUSER injected\r\n")
    assert r.next_line() == b"STLS"
    r.clear()
    assert r.next_line() is None


# --------------------------------------------------------------------------------------------- commands

PARSE_OK = [
    (b"USER alice@example.org", User("alice@example.org")),
    (b"user alice", User("alice")),
    (b"PASS secret", Pass("secret")),
    (b"PASS with  two spaces ", Pass("with  two spaces ")),
    (b"AUTH", Auth(None)),
    (b"AUTH plain", Auth("PLAIN")),
    (b"AUTH PLAIN AGFsaWNlAHB3", Auth("PLAIN", "AGFsaWNlAHB3")),
    (b"AUTH PLAIN =", Auth("PLAIN", "=")),
    (b"AUTH LOGIN", Auth("LOGIN")),
    (b"APOP mrose c4c9334bac560ecc979e58001b3e22fb", Apop()),
    (b"CAPA", Capa()),
    (b"STLS", Stls()),
    (b"STAT", Stat()),
    (b"stat", Stat()),
    (b"LIST", ListCmd(None)),
    (b"LIST 2", ListCmd(2)),
    (b"LIST 007", ListCmd(7)),
    (b"RETR 1", Retr(1)),
    (b"DELE 3", Dele(3)),
    (b"NOOP", Noop()),
    (b"NOOP ", Noop()),
    (b"RSET", Rset()),
    (b"QUIT", Quit()),
    (b"TOP 1 0", Top(1, 0)),
    (b"TOP 2 10", Top(2, 10)),
    (b"UIDL", Uidl(None)),
    (b"UIDL 4", Uidl(4)),
]


@pytest.mark.parametrize("line,expected", PARSE_OK)
def test_parse_ok(line, expected):
    assert parse_command(line) == expected


PARSE_BAD = [
    (b"", wire.UnknownCommand),
    (b"XYZZY", wire.UnknownCommand),
    (b"RETRX 1", wire.UnknownCommand),
    (b"USER", wire.SyntaxError_),
    (b"USER ", wire.SyntaxError_),
    (b"PASS", wire.SyntaxError_),
    (b"STAT 1", wire.SyntaxError_),
    (b"LIST 0", wire.SyntaxError_),
    (b"LIST -1", wire.SyntaxError_),
    (b"LIST +1", wire.SyntaxError_),
    (b"LIST a", wire.SyntaxError_),
    (b"LIST 1 2", wire.SyntaxError_),
    (b"LIST  1", wire.SyntaxError_),
    (b"LIST 12345678901", wire.SyntaxError_),
    (b"LIST \xd9\xa1", wire.SyntaxError_),  # ARABIC-INDIC DIGIT ONE is not a digit here
    (b"RETR", wire.SyntaxError_),
    (b"RETR 0", wire.SyntaxError_),
    (b"DELE", wire.SyntaxError_),
    (b"TOP 1", wire.SyntaxError_),
    (b"TOP 1 -1", wire.SyntaxError_),
    (b"TOP 0 1", wire.SyntaxError_),
    (b"TOP 1 1 1", wire.SyntaxError_),
    (b"UIDL x", wire.SyntaxError_),
    (b"QUIT now", wire.SyntaxError_),
    (b"CAPA x", wire.SyntaxError_),
    (b"STLS x", wire.SyntaxError_),
    (b"AUTH PLAIN a b", wire.SyntaxError_),
    (b"AUTH PL@IN", wire.SyntaxError_),
    (b"USER \xff\xfe", wire.SyntaxError_),
    (b"USER a\x00b", wire.SyntaxError_),
]


@pytest.mark.parametrize("line,exc", PARSE_BAD)
def test_parse_bad(line, exc):
    with pytest.raises(exc):
        parse_command(line)


def test_pass_repr_hides_password():
    """A password never appears in the repr of a command (logs)."""
    assert "hunter2" not in repr(parse_command(b"PASS hunter2"))
    assert "AGFs" not in repr(parse_command(b"AUTH PLAIN AGFsaWNlAHB3"))


def test_responses():
    assert wire.ok() == b"+OK\r\n"
    assert wire.ok("1 2") == b"+OK 1 2\r\n"
    assert wire.err("locked", "IN-USE") == b"-ERR [IN-USE] locked\r\n"
    assert wire.err("x" * 1000).endswith(b"\r\n") and len(wire.err("x" * 1000)) == 512
    assert wire.multiline(wire.ok(), [b"TOP", b".dot"]) == b"+OK\r\nTOP\r\n..dot\r\n.\r\n"


def test_uidl_format():
    """UIDL is "<uid_validity>.<uid>": 1-70 characters of 0x21-0x7E (RFC 1939 section 7)."""
    u = wire.uidl_for(4294967295, 4294967295)
    assert u == "4294967295.4294967295"
    assert 1 <= len(u) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in u)


# --------------------------------------------------------------------------------------------- bodies


def reference_stuff(body: bytes) -> bytes:
    """Line-by-line reference: every line starting with "." gets another (RFC 1939 section 3)."""
    parts = body.split(b"\n")
    out = b"\n".join((b"." + p if p.startswith(b".") else p) for p in parts)
    if body and not body.endswith(b"\n"):
        out += b"\r\n"
    return out + b".\r\n"


def unstuff(data: bytes) -> bytes:
    """What a client does: remove the terminator and one leading "." of each line."""
    assert data.endswith(b"\r\n.\r\n") or data == b".\r\n"
    data = data[:-3]
    return b"\n".join(p[1:] if p.startswith(b".") else p for p in data.split(b"\n"))


def encode_split(body: bytes, cuts) -> bytes:
    enc = DotStuffer()
    out = b""
    prev = 0
    for c in list(cuts) + [len(body)]:
        out += enc.encode(body[prev:c])
        prev = c
    return out + enc.finish()


DOT_BODIES = [
    b"",
    b".",
    b"..",
    b".\r\n",
    b"..\r\n.\r\n",
    b"Subject: x\r\n\r\n.\r\n..\r\n.hidden\r\nend\r\n",
    b"a\r\n.\r\nQUIT\r\n",
    b"no final newline\r\n.last",
    b"bare\n.lf\n",
    b".a.b.\r\n.\r\n.\r\n",
]


@pytest.mark.parametrize("body", DOT_BODIES)
def test_dot_stuffing_at_every_split_offset(body):
    """For every single split point, and every pair of split points, the encoding equals the reference."""
    expected = reference_stuff(body)
    for i in range(len(body) + 1):
        assert encode_split(body, [i]) == expected, i
        for j in range(i, len(body) + 1):
            assert encode_split(body, [i, j]) == expected, (i, j)


def test_dot_stuffing_byte_by_byte_and_round_trip():
    """One octet per chunk gives the same octets, and a client's unstuffing returns the body exactly."""
    body = b"".join(b"." * (k % 4) + b"line %d\r\n" % k for k in range(200))
    out = encode_split(body, range(1, len(body)))
    assert out == reference_stuff(body)
    assert unstuff(out) == body


def test_dot_stuffing_on_every_chunk_boundary_of_a_large_body():
    """A line starting with "." at every offset modulo the chunk size is stuffed (the twisted.mail bug)."""
    chunk = 4096
    lines = []
    size = 0
    while size < 3 * chunk:
        ln = b"x" * (len(lines) % 97) + b"\r\n"
        lines.append(ln)
        lines.append(b".dot\r\n")
        size += len(ln) + 6
    body = b"".join(lines)
    enc = DotStuffer()
    out = b"".join(enc.encode(body[k:k + chunk]) for k in range(0, len(body), chunk)) + enc.finish()
    assert out == reference_stuff(body)
    assert unstuff(out) == body
    assert enc.octets_in == len(body)


def test_dot_stuffer_refuses_after_finish():
    enc = DotStuffer()
    enc.finish()
    with pytest.raises(ValueError):
        enc.encode(b"x")


def top_split(body: bytes, n: int, cuts) -> bytes:
    f = TopFilter(n)
    out = b""
    prev = 0
    for c in list(cuts) + [len(body)]:
        out += f.feed(body[prev:c])
        prev = c
    return out


def reference_top(body: bytes, n: int) -> bytes:
    lines = body.splitlines(keepends=True)
    for k, ln in enumerate(lines):
        if ln == b"\r\n":
            return b"".join(lines[:k + 1 + n])
    return body


TOP_BODIES = [
    b"Subject: a\r\n\r\nl1\r\nl2\r\nl3\r\n",
    b"Subject: a\r\nX: b\r\n\r\n\r\n.\r\nl3",
    b"Subject: only header\r\n",
    b"\r\nbody right away\r\nsecond\r\n",
    b"A: 1\r\n\r\n",
]


@pytest.mark.parametrize("body", TOP_BODIES)
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_top_filter_at_every_split_offset(body, n):
    """TOP sends the header, the blank line and n body lines, whatever the chunking (RFC 1939 section 7)."""
    expected = reference_top(body, n)
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert top_split(body, n, [i, j]) == expected, (i, j)


def test_top_filter_done_and_body_encoder():
    """BodyEncoder(top) stops early and stuffs the kept lines; BodyEncoder() is RETR."""
    body = b"H: v\r\n\r\n.one\r\ntwo\r\nthree\r\n"
    enc = BodyEncoder(1)
    out = enc.encode(body[:10])
    out += enc.encode(body[10:])
    assert enc.done
    out += enc.finish()
    assert out == b"H: v\r\n\r\n..one\r\n.\r\n"
    enc = BodyEncoder()
    assert enc.encode(body) + enc.finish() == reference_stuff(body)
    assert not enc.done
