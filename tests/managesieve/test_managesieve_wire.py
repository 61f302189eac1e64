"""The ManageSieve wire parser (RFC 5804 4): tokens, literals, limits one byte past, every split offset."""

import pytest

from mailserver.managesieve import wire
from mailserver.managesieve.wire import Atom, CommandReader, Line, No, String

MAX_LINE = 200
MAX_LITERAL = 100


def lines(data: bytes, chunks=None, max_line=MAX_LINE, max_literal=MAX_LITERAL):
    r = CommandReader(max_line, max_literal)
    out = []
    for part in (chunks or [data]):
        r.feed(part)
        while True:
            try:
                line = r.next_line()
            except wire.WireError as e:
                out.append(type(e).__name__)
                continue
            except No as e:
                out.append(("NO", e.text))
                continue
            if line is None:
                break
            out.append(line.tokens)
    return out


@pytest.mark.parametrize("data, tokens", [
    (b"LISTSCRIPTS\r\n", (Atom("LISTSCRIPTS"),)),
    (b'getscript "main"\r\n', (Atom("getscript"), String(b"main"))),
    (b'HAVESPACE "a b" 4294967295\r\n', (Atom("HAVESPACE"), String(b"a b"), 4294967295)),
    (b'PUTSCRIPT "x" {5+}\r\nkeep;\r\n', (Atom("PUTSCRIPT"), String(b"x"), String(b"keep;", True))),
    (b'PUTSCRIPT "x" {5}\r\nkeep;\r\n', (Atom("PUTSCRIPT"), String(b"x"), String(b"keep;", True))),
    (b'RENAMESCRIPT {1+}\r\na {1+}\r\nb\r\n', (Atom("RENAMESCRIPT"), String(b"a", True), String(b"b", True))),
    (b'NOOP "a\\"b\\\\c"\r\n', (Atom("NOOP"), String(b'a"b\\c'))),
    (b"NOOP\n", (Atom("NOOP"),)),  # a bare LF ends a line too
    (b'PUTSCRIPT "x" {0+}\r\n\r\n', (Atom("PUTSCRIPT"), String(b"x"), String(b"", True))),
])
def test_tokens(data, tokens):
    assert lines(data) == [tokens]


@pytest.mark.parametrize("data", [
    b'PUTSCRIPT "x" {5+}\r\nkeep;\r\nLISTSCRIPTS\r\n',
    b'AUTHENTICATE "PLAIN" "AGEAYg=="\r\nNOOP "t"\r\n',
    b'RENAMESCRIPT {3+}\r\na\r\n {1+}\r\nb\r\n',
])
def test_every_split_offset_gives_the_same_lines(data):
    whole = lines(data)
    for i in range(1, len(data)):
        assert lines(data, [data[:i], data[i:]]) == whole, i
    assert lines(data, [data[i:i + 1] for i in range(len(data))]) == whole


@pytest.mark.parametrize("data, message", [
    (b'NOOP "abc\r\n', "unterminated quoted string"),
    (b'NOOP "a\\b"\r\n', "bad escape in quoted string"),
    (b"HAVESPACE \"a\" 4294967296\r\n", "number is not a 32-bit unsigned number"),
    (b"NOOP {abc}\r\n", "bad literal"),
    (b"NOOP (x)\r\n", "unexpected characters"),
])
def test_malformed_lines_are_no(data, message):
    assert lines(data) == [("NO", message)]


def test_quoted_string_at_its_limit_and_one_past():
    at = b'NOOP "' + b"a" * wire.MAX_QUOTED + b'"\r\n'
    past = b'NOOP "' + b"a" * (wire.MAX_QUOTED + 1) + b'"\r\n'
    assert lines(at, max_line=4096) == [(Atom("NOOP"), String(b"a" * wire.MAX_QUOTED))]
    assert lines(past, max_line=4096)[0][0] == "NO"


def test_line_at_its_limit_and_one_past():
    # the limit counts the line end: CRLF included
    at = b"NOOP " + b"x" * (MAX_LINE - 7) + b"\r\n"
    assert len(at) == MAX_LINE
    assert lines(at) == [(Atom("NOOP"), Atom("x" * (MAX_LINE - 7)))]
    past = b"NOOP " + b"x" * (MAX_LINE - 6) + b"\r\n"
    assert lines(past) == ["LineTooLong"]
    # without its line end yet: refused as soon as more than the limit is buffered
    assert lines(b"x" * (MAX_LINE + 1)) == ["LineTooLong"]
    assert lines(b"x" * MAX_LINE) == []


def test_literal_at_its_limit_and_one_past_is_skipped_and_the_next_command_read():
    at = b'PUTSCRIPT "s" {%d+}\r\n' % MAX_LITERAL + b"k" * MAX_LITERAL + b"\r\nLISTSCRIPTS\r\n"
    assert lines(at) == [(Atom("PUTSCRIPT"), String(b"s"), String(b"k" * MAX_LITERAL, True)),
                         (Atom("LISTSCRIPTS"),)]
    past = b'PUTSCRIPT "s" {%d+}\r\n' % (MAX_LITERAL + 1) + b"k" * (MAX_LITERAL + 1) + b" trailing\r\nLISTSCRIPTS\r\n"
    assert lines(past) == ["LiteralTooLarge", (Atom("LISTSCRIPTS"),)]
    for i in range(1, len(past)):
        assert lines(past, [past[:i], past[i:]]) == ["LiteralTooLarge", (Atom("LISTSCRIPTS"),)], i


def test_a_refused_literal_is_never_buffered():
    r = CommandReader(MAX_LINE, MAX_LITERAL)
    r.feed(b'PUTSCRIPT "s" {4000000000+}\r\n')
    with pytest.raises(wire.LiteralTooLarge):
        r.next_line()
    for _ in range(100):
        r.feed(b"z" * 65536)
        assert r.next_line() is None
    assert r.buffered == 0


def test_too_many_tokens():
    assert lines(b"NOOP" + b" a" * wire.MAX_TOKENS + b"\r\n")[0][0] == "NO"
    assert lines(b"NOOP" + b" a" * (wire.MAX_TOKENS - 1) + b"\r\n")[0][0] == Atom("NOOP")


@pytest.mark.parametrize("tokens, command", [
    ((Atom("listscripts"),), wire.ListScripts()),
    ((Atom("PUTSCRIPT"), String(b"n\xc3\xa9"), String(b"keep;", True)), wire.PutScript("n\u00e9", "keep;")),
    ((Atom("HaveSpace"), String(b"n"), 10), wire.HaveSpace("n", 10)),
    ((Atom("SETACTIVE"), String(b"")), wire.SetActive("")),
    ((Atom("AUTHENTICATE"), String(b"PLAIN")), wire.Authenticate("PLAIN", None)),
    ((Atom("AUTHENTICATE"), String(b"PLAIN"), String(b"AGEAYg==")), wire.Authenticate("PLAIN", b"AGEAYg==")),
    ((Atom("NOOP"), String(b"tag")), wire.Noop("tag")),
    ((Atom("RENAMESCRIPT"), String(b"a"), String(b"b")), wire.RenameScript("a", "b")),
])
def test_parse_command(tokens, command):
    assert wire.parse_command(Line(tokens)) == command


@pytest.mark.parametrize("tokens", [
    (Atom("FROB"),),
    (String(b"LISTSCRIPTS"),),
    (Atom("GETSCRIPT"),),
    (Atom("GETSCRIPT"), String(b"a"), String(b"b")),
    (Atom("HAVESPACE"), String(b"a"), String(b"10")),
    (Atom("GETSCRIPT"), 5),
    (Atom("PUTSCRIPT"), String(b"a"), String(b"\xff", True)),
])
def test_parse_command_refuses(tokens):
    with pytest.raises(No):
        wire.parse_command(Line(tokens))


def test_replies():
    assert wire.ok() == b"OK\r\n"
    assert wire.no("gone", wire.NONEXISTENT) == b'NO (NONEXISTENT) "gone"\r\n'
    assert wire.ok("Done", "TAG", 'a"b') == b'OK (TAG "a\\"b") "Done"\r\n'
    assert wire.string("a\r\nb") == b"{4}\r\na\r\nb"
    assert wire.string("x" * 1025).startswith(b"{1025}\r\n")
