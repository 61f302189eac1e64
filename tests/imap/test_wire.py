"""ImapReader: command framing, literals (synchronising, LITERAL+/-, literal8, streamed), limits; Tokenizer."""

import pytest

from mailserver.config import LimitsConfig
from mailserver.imap.wire import (
    LITERAL_MINUS_MAX,
    CommandReady,
    CommandRejected,
    Frame,
    ImapReader,
    LiteralAnnounced,
    LiteralChunk,
    LiteralEnd,
    ParseError,
    ParserLimits,
    RejectReason,
    StreamedLiteral,
    Tokenizer,
    find_marker,
)


def drive(reader, chunks, *, accept=True):
    """Feed ``chunks`` one by one, accepting (or rejecting) every announced literal; return all events."""
    out = []
    for chunk in chunks:
        for event in reader.feed(chunk):
            out.append(event)
            if isinstance(event, LiteralAnnounced):
                reader.accept_literal() if accept else reader.reject_literal()
    # Decisions taken in the last feed may unlock buffered data.
    for event in reader.events():
        out.append(event)
    return out


def merge_chunks(events):
    """Collapse LiteralChunk runs so that events from different read splits compare equal."""
    out = []
    for e in events:
        if isinstance(e, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
            out[-1] = LiteralChunk(out[-1].data + e.data)
        else:
            out.append(e)
    return out


def frames(events):
    return [e.frame for e in events if isinstance(e, CommandReady)]


def test_simple_lines_crlf_and_bare_lf():
    """Each CRLF (or bare LF) ends a command without literals."""
    events = drive(ImapReader(), [b"a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n"])
    assert frames(events) == [Frame((b"a NOOP",)), Frame((b"b CAPABILITY",)), Frame((b"c LOGOUT",))]


def test_incomplete_line_waits():
    """No event until the line is complete."""
    r = ImapReader()
    assert list(r.feed(b"a NO")) == []
    assert list(r.feed(b"OP\r")) == []
    assert frames(list(r.feed(b"\n"))) == [Frame((b"a NOOP",))]


def test_synchronizing_literal_pauses_until_accepted():
    """A {n} literal is announced and nothing more is read until the session decides."""
    r = ImapReader()
    events = list(r.feed(b"a1 LOGIN {4}\r\nfred {3}\r\nabc\r\n"))
    assert events == [
        LiteralAnnounced(b"a1", b"LOGIN", 4, True, False, False, Frame((b"a1 LOGIN {4}",)))
    ]
    assert r.paused
    assert list(r.events()) == []
    r.accept_literal()
    events = list(r.events())
    assert events[0].size == 3 and events[0].synchronizing
    r.accept_literal()
    assert frames(list(r.events())) == [Frame((b"a1 LOGIN {4}", b" {3}", b""), (b"fred", b"abc"))]
    assert not r.paused


def test_non_synchronizing_literal_needs_no_continuation():
    """RFC 7888: {n+} literals are read without an event."""
    events = drive(ImapReader(), [b"a LOGIN {4+}\r\nfred {3+}\r\nabc\r\n"])
    assert events == [CommandReady(Frame((b"a LOGIN {4+}", b" {3+}", b""), (b"fred", b"abc")))]


def test_literal8_marker():
    """~{n} (literal8) is framed like a literal, flagged binary."""
    assert find_marker(b"a APPEND x ~{5}") == (5, True, True)
    assert find_marker(b"a APPEND x ~{5+}") == (5, False, True)
    assert find_marker(b"a APPEND x {5-}") is None  # RFC 7888 has no {n-} form


def test_marker_inside_quoted_string_is_text():
    """A "{5}" at the end of a quoted string is not a literal."""
    assert find_marker(b'a SELECT "foo {5}"') is None
    assert find_marker(b'a LOGIN "a\\"b" {5}') == (5, True, False)
    events = drive(ImapReader(), [b'a SELECT "x{5}"\r\n'])
    assert frames(events) == [Frame((b'a SELECT "x{5}"',))]


STREAM = (
    b"a1 LOGIN {4}\r\nfred {6+}\r\nsecret\r\n"
    b"a2 SELECT {5+}\r\nINBOX\r\n"
    b"a3 APPEND {5}\r\nDraft (\\Seen) {12}\r\nhello\r\nworld (\\Flagged) ~{3+}\r\nx\x00y\r\n"
    b"a4 UID FETCH 1:* (FLAGS)\r\n"
)


def test_literals_split_across_reads_at_every_offset():
    """Splitting the byte stream anywhere (once or twice) gives the same frames and literal data."""
    expected = merge_chunks(drive(ImapReader(), [STREAM]))
    assert len(frames(expected)) == 4
    for i in range(len(STREAM) + 1):
        got = merge_chunks(drive(ImapReader(), [STREAM[:i], STREAM[i:]]))
        assert got == expected, i
    for i in range(0, len(STREAM), 7):
        for j in range(i, len(STREAM), 5):
            got = merge_chunks(drive(ImapReader(), [STREAM[:i], STREAM[i:j], STREAM[j:]]))
            assert got == expected, (i, j)


def test_byte_at_a_time():
    """One byte per read works too."""
    expected = merge_chunks(drive(ImapReader(), [STREAM]))
    assert merge_chunks(drive(ImapReader(), [bytes([b]) for b in STREAM])) == expected


def test_append_message_literals_are_streamed():
    """APPEND message data arrives as chunks, never as one buffered literal; the mailbox literal is buffered."""
    r = ImapReader()
    events = drive(r, [b"a3 APPEND {5}\r\nDraft (\\Seen) {12}\r\nhello\r\n", b"world (\\Flagged) ~{3+}\r\nx\x00y\r\n"])
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "LiteralAnnounced", "LiteralAnnounced", "LiteralChunk", "LiteralChunk", "LiteralEnd",
        "LiteralAnnounced", "LiteralChunk", "LiteralEnd", "CommandReady",
    ]
    mailbox_lit, msg1, msg2 = (e for e in events if isinstance(e, LiteralAnnounced))
    assert not mailbox_lit.streamed and mailbox_lit.synchronizing
    assert msg1.streamed and msg1.synchronizing and msg1.size == 12
    assert msg1.prefix == Frame((b"a3 APPEND {5}", b" (\\Seen) {12}"), (b"Draft",))
    assert msg2.streamed and not msg2.synchronizing and msg2.binary
    data = b"".join(e.data for e in events if isinstance(e, LiteralChunk))
    assert data == b"hello\r\nworldx\x00y"
    frame = events[-1].frame
    assert frame.literals == (b"Draft", StreamedLiteral(12, False), StreamedLiteral(3, True))
    assert frame.segments[-1] == b""


def test_streamed_empty_literal():
    """A zero-length streamed literal gives LiteralEnd with no chunk."""
    events = drive(ImapReader(), [b"a APPEND INBOX {0+}\r\n\r\n"])
    assert [type(e) for e in events] == [LiteralAnnounced, LiteralEnd, CommandReady]


def test_streaming_can_be_turned_off():
    """With stream_commands=() APPEND literals are buffered like any other."""
    events = drive(ImapReader(stream_commands=()), [b"a APPEND INBOX {3+}\r\nabc\r\n"])
    assert events == [CommandReady(Frame((b"a APPEND INBOX {3+}", b""), (b"abc",)))]


def test_reject_synchronizing_literal_drops_command():
    """After reject_literal() on {n} the next line is a new command (the client sent no data)."""
    r = ImapReader()
    events = drive(r, [b"a APPEND INBOX {100}\r\nb NOOP\r\n"], accept=False)
    assert [type(e) for e in events] == [LiteralAnnounced, CommandReady]
    assert events[1].frame == Frame((b"b NOOP",))


def test_reject_non_synchronizing_streamed_literal_swallows_data():
    """Rejecting a {n+} APPEND discards its data and the rest of the command, which is never executed."""
    payload = b"x DELETE INBOX\r\n" * 3
    stream = b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload + b" (\\Seen) {2+}\r\nzz\r\nb NOOP\r\n"
    events = drive(ImapReader(), [stream], accept=False)
    assert [type(e) for e in events] == [LiteralAnnounced, CommandReady]
    assert events[1].frame == Frame((b"b NOOP",))


def test_literal_size_limit_synchronizing():
    """A {n} literal one byte over max_literal is refused before any data is read; at the limit it is announced."""
    limits = ParserLimits(max_literal=100, max_command=1000)
    events = drive(ImapReader(limits), [b"a APPEND INBOX {101}\r\nb NOOP\r\n"])
    assert events == [CommandRejected(b"a", RejectReason.LITERAL_TOO_LARGE, 101), CommandReady(Frame((b"b NOOP",)))]
    events = list(ImapReader(limits).feed(b"a APPEND INBOX {100}\r\n"))
    assert isinstance(events[0], LiteralAnnounced) and events[0].size == 100


def test_literal_size_limit_non_synchronizing_swallows_then_reports():
    """A {n+} literal over the limit is read and dropped, then reported in order; the data is never a command."""
    limits = ParserLimits(max_literal=100, max_command=1000)
    data = b"z LOGOUT\r\n" * 11  # 110 octets
    stream = b"a NOOP\r\nb SEARCH TEXT {110+}\r\n" + data + b" ALL\r\nc NOOP\r\n"
    for split in range(len(stream) + 1):
        events = drive(ImapReader(limits), [stream[:split], stream[split:]])
        assert events == [
            CommandReady(Frame((b"a NOOP",))),
            CommandRejected(b"b", RejectReason.LITERAL_TOO_LARGE, 110),
            CommandReady(Frame((b"c NOOP",))),
        ], split


def test_big_literal_not_buffered_when_rejected():
    """Swallowing an oversized literal holds no more than one read in memory."""
    r = ImapReader(ParserLimits(max_literal=10))
    list(r.feed(b"a SEARCH TEXT {1000000+}\r\n"))
    for _ in range(100):
        assert list(r.feed(b"x" * 10000)) == []
        assert r.buffered == 0
    assert r.discarding
    assert list(r.feed(b"\r\nb NOOP\r\n")) == [
        CommandRejected(b"a", RejectReason.LITERAL_TOO_LARGE, 1000000),
        CommandReady(Frame((b"b NOOP",))),
    ]


def test_line_length_limit():
    """A line of max_line octets passes; one more octet is refused and the line skipped."""
    limits = ParserLimits(max_line=20)
    ok = b"a SEARCH TEXT " + b"x" * 6  # 20 octets
    too_long = ok + b"y"
    events = drive(ImapReader(limits), [ok + b"\r\n" + too_long + b"\r\nb NOOP\r\n"])
    assert events == [
        CommandReady(Frame((ok,))),
        CommandRejected(b"a", RejectReason.LINE_TOO_LONG, None),
        CommandReady(Frame((b"b NOOP",))),
    ]


def test_endless_line_is_not_buffered():
    """A line without end is dropped as it arrives and reported once it ends."""
    r = ImapReader(ParserLimits(max_line=100))
    assert list(r.feed(b"t1 " + b"x" * 200)) == []
    assert r.discarding and r.buffered == 0
    for _ in range(50):
        assert list(r.feed(b"y" * 1000)) == []
        assert r.buffered == 0
    assert list(r.feed(b"\r\nb NOOP\r\n")) == [
        CommandRejected(b"t1", RejectReason.LINE_TOO_LONG, None),
        CommandReady(Frame((b"b NOOP",))),
    ]


@pytest.mark.parametrize("tag", [b"a1", b"t" * 99, b"t" * 100, b"t" * 5000])
def test_over_long_line_tag_does_not_depend_on_the_reads(tag):
    """The tag reported for an over-long first line is the same whether the line came in one read or in many
    (found by tests/fuzz): only a tag ending within the first 100 octets is echoed, never a truncated one."""
    limits = ParserLimits(max_line=300)
    stream = tag + b" NOOP " + b"x" * 6000 + b"\r\nb NOOP\r\n"
    whole = drive(ImapReader(limits), [stream])
    for step in (1, 7, 301, 1000):
        assert drive(ImapReader(limits), [stream[i:i + step] for i in range(0, len(stream), step)]) == whole
    expected = tag if len(tag) < 100 else None
    assert whole == [CommandRejected(expected, RejectReason.LINE_TOO_LONG, None), CommandReady(Frame((b"b NOOP",)))]


def test_line_too_long_with_trailing_literal_skips_the_literal():
    """An over-long line ending in {n+} also drops the literal (it is data, not commands)."""
    limits = ParserLimits(max_line=30)
    stream = b"a APPEND " + b"m" * 40 + b" {10+}\r\nx LOGOUT\r\n\r\nb NOOP\r\n"
    events = drive(ImapReader(limits), [stream])
    assert events == [CommandRejected(b"a", RejectReason.LINE_TOO_LONG, None), CommandReady(Frame((b"b NOOP",)))]


def test_command_size_limit():
    """Buffered lines plus literals of one command are bounded by max_command (one octet over is refused)."""
    limits = ParserLimits(max_line=100, max_literal=1000, max_command=50)
    head = b"a LOGIN {26+}\r\n"  # 13 octets of line text
    events = drive(ImapReader(limits), [head + b"u" * 26 + b" p\r\n"])  # 13 + 26 + 2 = 41
    assert isinstance(events[0], CommandReady)
    events = drive(ImapReader(limits), [b"a LOGIN {37+}\r\n" + b"u" * 37 + b"\r\n"])  # 13 + 37 = 50
    assert isinstance(events[0], CommandReady)
    events = drive(ImapReader(limits), [b"a LOGIN {38+}\r\n" + b"u" * 38 + b"\r\nb NOOP\r\n"])  # 51
    assert events == [CommandRejected(b"a", RejectReason.COMMAND_TOO_LARGE, 38), CommandReady(Frame((b"b NOOP",)))]


def test_command_size_limit_counts_continuation_lines():
    """The line after a literal counts against max_command too."""
    limits = ParserLimits(max_line=100, max_literal=1000, max_command=30)
    events = drive(ImapReader(limits), [b"a LOGIN {5+}\r\nuuuuu " + b"p" * 20 + b"\r\nb NOOP\r\n"])
    assert events == [CommandRejected(b"a", RejectReason.COMMAND_TOO_LARGE, None), CommandReady(Frame((b"b NOOP",)))]


def test_literal_minus():
    """With LITERAL- (RFC 7888 4) a {n+} literal of 4096 octets passes, 4097 is refused after being skipped."""
    r = ImapReader(literal_minus=True)
    events = drive(r, [b"a SEARCH TEXT {4096+}\r\n" + b"x" * LITERAL_MINUS_MAX + b"\r\n"])
    assert isinstance(events[0], CommandReady)
    events = drive(r, [b"a SEARCH TEXT {4097+}\r\n" + b"x" * 4097 + b"\r\nb NOOP\r\n"])
    assert events == [
        CommandRejected(b"a", RejectReason.NON_SYNC_LITERAL_TOO_LARGE, 4097),
        CommandReady(Frame((b"b NOOP",))),
    ]
    # Synchronising literals are not limited by LITERAL-.
    events = list(r.feed(b"a SEARCH TEXT {5000}\r\n"))
    assert isinstance(events[0], LiteralAnnounced)


def test_events_are_lazy_so_starttls_can_drop_pipelined_plaintext():
    """Nothing after STARTTLS is interpreted until asked for; discard_buffer() drops it (CVE-2011-0411 class)."""
    r = ImapReader()
    it = r.feed(b"a STARTTLS\r\nb DELETE INBOX\r\n")
    first = next(it)
    assert first == CommandReady(Frame((b"a STARTTLS",)))
    assert r.discard_buffer() == len(b"b DELETE INBOX\r\n")
    assert list(it) == []
    assert frames(list(r.feed(b"c NOOP\r\n"))) == [Frame((b"c NOOP",))]


def test_accept_without_pending_literal_is_an_error():
    r = ImapReader()
    with pytest.raises(RuntimeError):
        r.accept_literal()
    with pytest.raises(RuntimeError):
        r.reject_literal()


def test_rejection_without_tag():
    """A line without a valid tag is reported with tag None."""
    events = drive(ImapReader(ParserLimits(max_line=5)), [b"+++++++\r\n"])
    assert events == [CommandRejected(None, RejectReason.LINE_TOO_LONG, None)]


def test_limits_from_config():
    limits = ParserLimits.from_config(LimitsConfig())
    assert limits.max_line == LimitsConfig().imap_max_line
    assert limits.max_literal == LimitsConfig().imap_max_literal
    assert limits.max_nesting == LimitsConfig().imap_max_nesting
    assert limits.max_sequence_ranges == LimitsConfig().imap_max_sequence_ranges
    assert limits.max_command >= 2 * limits.max_line


# -- Tokenizer ----------------------------------------------------------------------------------------------

def tok(text: bytes, literals=(), **kw):
    segments = tuple(text.split(b"\x01"))
    return Tokenizer(Frame(segments, tuple(literals)), **kw)


def test_tokenizer_strings():
    t = tok(b'"a\\"b\\\\c" atom {3}\x01 NIL "x"', [b"lit"])
    assert t.astring() == b'a"b\\c'
    t.sp()
    assert t.astring() == b"atom"
    t.sp()
    assert t.astring() == b"lit"
    t.sp()
    assert t.nstring() is None
    t.sp()
    assert t.nstring() == b"x"
    t.expect_end()


def test_tokenizer_quoted_errors():
    for bad in (b'"abc', b'"a\\x"', b'"a\rb"'):
        with pytest.raises(ParseError):
            tok(bad).quoted()


def test_tokenizer_quoted_allows_utf8():
    """RFC 9051 9: quoted strings may carry UTF-8."""
    assert tok('"Entwürfe"'.encode()).quoted() == "Entwürfe".encode()


def test_tokenizer_literal8_only_where_allowed():
    with pytest.raises(ParseError):
        tok(b"~{3}\x01", [b"abc"]).string()
    assert tok(b"~{3}\x01", [b"a\x00c"]).literal(allow_binary=True) == (b"a\x00c", True)


def test_tokenizer_nul_in_plain_literal_is_rejected():
    with pytest.raises(ParseError):
        tok(b"{3}\x01", [b"a\x00c"]).string()


def test_tokenizer_numbers():
    assert tok(b"4294967295").number() == 4294967295
    with pytest.raises(ParseError):
        tok(b"4294967296").number()
    with pytest.raises(ParseError):
        tok(b"0").number(nz=True)
    assert tok(b"9223372036854775807").number64() == 2**63 - 1
    with pytest.raises(ParseError):
        tok(b"9223372036854775808").number64()


def test_tokenizer_nesting_limit():
    """max_nesting parentheses pass, one more is refused."""
    limits = ParserLimits(max_nesting=3)
    t = tok(b"(((", limits=limits)
    for _ in range(3):
        t.open_paren()
    t = tok(b"((((", limits=limits)
    with pytest.raises(ParseError, match="nested"):
        for _ in range(4):
            t.open_paren()


def test_take_word_matches_whole_atoms_only():
    t = tok(b"NILS")
    assert not t.take_word(b"NIL")
    assert t.take_word(b"nils")


def test_pipelining_50000_commands_in_one_read():
    """Thousands of pipelined commands in one read are all framed, in order (their speed is measured by
    scripts/bench/parsers.py, not here: a timing assertion fails on a loaded machine)."""
    data = b"".join(b"a%d UID FETCH %d:* (FLAGS)\r\n" % (i, i) for i in range(50000))
    events = list(ImapReader().feed(data))
    assert len(events) == 50000
    assert events[-1] == CommandReady(Frame((b"a49999 UID FETCH 49999:* (FLAGS)",)))


def test_large_mixed_stream_in_uneven_reads():
    """Buffer compaction keeps frames intact across reads of any size."""
    import random

    rng = random.Random(7)
    parts = []
    for i in range(3000):
        n = rng.randrange(0, 200)
        parts.append(b"c%d SEARCH TEXT {%d+}\r\n" % (i, n) + bytes(rng.randrange(1, 256) for _ in range(n)) + b"\r\n")
    data = b"".join(parts)
    expected = drive(ImapReader(), [data])
    assert len(expected) == 3000
    pos = 0
    chunks = []
    while pos < len(data):
        step = rng.randrange(1, 100000)
        chunks.append(data[pos : pos + step])
        pos += step
    assert drive(ImapReader(), chunks) == expected
