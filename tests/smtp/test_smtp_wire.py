"""Framing: command lines, the DATA body (dot-unstuffing, end marker, smuggling) and BDAT, at every read boundary."""

from __future__ import annotations

import pytest

from mailserver.smtp import codes
from mailserver.smtp.wire import LINE_TOO_LONG, BdatReader, CommandFramer, DataReader


def feed_all(reader: DataReader, data: bytes, splits: list[int]) -> tuple[bytes, bool, bytes]:
    buf = bytearray()
    out = bytearray()
    done = False
    last = 0
    for cut in [*splits, len(data)]:
        buf += data[last:cut]
        last = cut
        if done:
            continue
        chunks, done = reader.feed(buf)
        out += b"".join(chunks)
    return bytes(out), done, bytes(buf)


# ------------------------------------------------------------------------------------------ command lines


def test_command_line_at_limit_is_accepted_and_one_past_is_refused():
    """The limit counts the CRLF (RFC 5321 4.5.3.1.4): 512 octets pass, 513 give LINE_TOO_LONG."""
    f = CommandFramer(512)
    ok = b"N" * 510 + b"\r\n"
    long = b"N" * 511 + b"\r\n"
    buf = bytearray(ok + long + b"NOOP\r\n")
    assert f.next_line(buf) == b"N" * 510
    assert f.next_line(buf) is LINE_TOO_LONG
    assert f.next_line(buf) == b"NOOP"
    assert f.next_line(buf) is None


def test_over_long_line_is_discarded_while_streaming_and_reported_once_in_order():
    f = CommandFramer(512)
    buf = bytearray()
    seen = []
    data = b"X" * 5000 + b"\r\nQUIT\r\n"
    for i in range(0, len(data), 7):
        buf += data[i:i + 7]
        while (line := f.next_line(buf)) is not None:
            seen.append(line)
        assert len(buf) <= 512
    assert seen == [LINE_TOO_LONG, b"QUIT"]


@pytest.mark.parametrize("cut", range(0, 14))
def test_command_line_split_at_every_offset(cut):
    data = b"EHLO a\r\nNOOP\r\n"
    f = CommandFramer(512)
    buf = bytearray(data[:cut])
    lines = []
    while (line := f.next_line(buf)) is not None:
        lines.append(line)
    buf += data[cut:]
    while (line := f.next_line(buf)) is not None:
        lines.append(line)
    assert lines == [b"EHLO a", b"NOOP"]


def test_cr_split_from_lf_at_the_limit_boundary():
    f = CommandFramer(512)
    buf = bytearray(b"N" * 510 + b"\r")
    assert f.next_line(buf) is None
    buf += b"\n"
    assert f.next_line(buf) == b"N" * 510


# ------------------------------------------------------------------------------------------ DATA

BODY = (b"Subject: dots\r\n\r\n"
        b".leading dot\r\n"
        b"..two dots\r\n"
        b".\tdot tab\r\n"
        b"middle . dot\r\n"
        b"..\r\n"
        b"last\r\n")
UNSTUFFED = (b"Subject: dots\r\n\r\n"
             b"leading dot\r\n"
             b".two dots\r\n"
             b"\tdot tab\r\n"
             b"middle . dot\r\n"
             b".\r\n"
             b"last\r\n")
WIRE = BODY + b".\r\nQUIT\r\n"


@pytest.mark.parametrize("cut", range(len(WIRE) + 1))
def test_dot_unstuffing_and_end_marker_at_every_split_offset(cut):
    """RFC 5321 4.5.2: unstuffing and the end marker are right wherever the read boundary falls."""
    reader = DataReader(10_000, 1000)
    out, done, rest = feed_all(reader, WIRE, [cut])
    assert (out, done, rest, reader.error) == (UNSTUFFED, True, b"QUIT\r\n", None)
    assert reader.size == len(UNSTUFFED)


def test_dot_unstuffing_with_two_splits_everywhere():
    data = b"..a\r\n.\r\n"
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            reader = DataReader(10_000, 1000)
            out, done, rest = feed_all(reader, data, [i, j])
            assert (out, done, rest) == (b".a\r\n", True, b""), (i, j)


def test_byte_at_a_time():
    reader = DataReader(10_000, 1000)
    out, done, rest = feed_all(reader, WIRE, list(range(1, len(WIRE))))
    assert (out, done, rest) == (UNSTUFFED, True, b"QUIT\r\n")


def test_empty_body():
    reader = DataReader(10_000, 1000)
    out, done, rest = feed_all(reader, b".\r\nNOOP\r\n", [])
    assert (out, done, rest) == (b"", True, b"NOOP\r\n")


# SMTP smuggling (SEC Consult, December 2023): every non-CRLF end-of-data variant.  None of them may end the
# message; the message is rejected once the real <CRLF>.<CRLF> arrives and nothing inside runs as a command.
SMUGGLE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r.\r\n",
                b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDS)
def test_smuggled_end_of_data_never_ends_the_message(fake_end):
    smuggled = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nspoofed\r\n"
    data = b"Subject: x\r\n\r\nhello" + fake_end + smuggled + b".\r\nNOOP\r\n"
    for cut in range(len(data) + 1):
        reader = DataReader(10_000, 1000)
        out, done, rest = feed_all(reader, data, [cut])
        assert done and rest == b"NOOP\r\n", cut
        if fake_end != b"\r\n\x00.\r\n":
            assert reader.error == codes.BARE_NEWLINE_DATA
            # Lines before the offending one may already be out (the session then aborts the message); nothing
            # from the offending line on is handed out.
            assert b"MAIL FROM" not in out and b"spoofed" not in out


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n\r\n", b"x\r\n\n", b"\r"])
def test_bare_cr_or_lf_anywhere_rejects(body):
    reader = DataReader(10_000, 1000)
    out, done, rest = feed_all(reader, body + b"\r\n.\r\n", [])
    assert done and reader.error == codes.BARE_NEWLINE_DATA


@pytest.mark.parametrize("body", [
    b"L" * 1000 + b"\r\nok\r\nbare\rcr\r\n",  # an over-long line, then a bare CR
    b"bare\nlf\r\n" + b"L" * 1000 + b"\r\n",  # a bare LF, then an over-long line
    b"L" * 3000 + b"\n" + b"L" * 3000 + b"\r\n",  # a bare LF inside an over-long line
])
def test_refusal_does_not_depend_on_the_reads(body):
    """Found by tests/fuzz: a body with several problems gets the same reply whatever the read boundaries (the
    gravest wins: bare CR/LF, then line length, then size), and a bare LF inside a skipped over-long line counts."""
    data = body + b".\r\n"
    verdicts = set()
    for step in (1, 7, 500, 1001, len(data)):
        reader = DataReader(10**6, 1000)
        out, done, rest = feed_all(reader, data, list(range(step, len(data), step)))
        assert done and rest == b""
        verdicts.add(reader.error)
    assert verdicts == {codes.BARE_NEWLINE_DATA}


def test_over_long_line_outranks_message_size():
    """An over-long line and a message over the size limit: 500 5.5.6 whatever the reads."""
    data = b"L" * 1200 + b"\r\n" + b"x" * 400 + b"\r\n.\r\n"
    for step in (1, 999, 1000, len(data)):
        reader = DataReader(1500, 1000)
        feed_all(reader, data, list(range(step, len(data), step)))
        assert reader.error == codes.TEXT_LINE_TOO_LONG, step


def test_text_line_at_limit_passes_and_one_past_fails():
    """RFC 5321 4.5.3.1.6: the text line limit counts the CRLF."""
    for extra, error in ((0, None), (1, codes.TEXT_LINE_TOO_LONG)):
        line = b"x" * (998 + extra) + b"\r\n"
        reader = DataReader(100_000, 1000)
        out, done, rest = feed_all(reader, line + b".\r\n", [500])
        assert done and reader.error == error, extra


def test_over_long_line_is_not_held_in_memory():
    reader = DataReader(10**9, 1000)
    buf = bytearray()
    for _ in range(100):
        buf += b"y" * 977
        reader.feed(buf)
        assert len(buf) <= 1000
    buf += b"\r\n.\r\nNOOP\r\n"
    chunks, done = reader.feed(buf)
    assert done and reader.error == codes.TEXT_LINE_TOO_LONG and bytes(buf) == b"NOOP\r\n"


def test_end_marker_right_after_over_long_line_split_everywhere():
    data = b"z" * 1200 + b"\r\n.\r\nQUIT\r\n"
    for cut in range(1190, len(data) + 1):
        reader = DataReader(10**6, 1000)
        out, done, rest = feed_all(reader, data, [cut])
        assert done and rest == b"QUIT\r\n" and reader.error == codes.TEXT_LINE_TOO_LONG, cut


def test_message_size_limit_exact_and_one_past():
    """RFC 1870: the unstuffed size (with CRLFs) may equal the limit; one more octet is refused with 552 5.3.4."""
    body = b"a" * 98 + b"\r\n"  # 100 octets
    for limit, error in ((100, None), (99, codes.MESSAGE_TOO_BIG)):
        reader = DataReader(limit, 1000)
        out, done, _ = feed_all(reader, body + b".\r\n", [])
        assert done and reader.error == error
        assert out == (body if error is None else b"")


def test_chunks_stream_out_per_read():
    reader = DataReader(10**7, 2000)
    buf = bytearray()
    sizes = []
    for _ in range(10):
        buf += b"0123456789" * 100 + b"\r\n"
        chunks, done = reader.feed(buf)
        sizes.append(sum(map(len, chunks)))
        assert not done
    assert sizes == [1002] * 10


# ------------------------------------------------------------------------------------------ BDAT


@pytest.mark.parametrize("cut", range(0, 12))
def test_bdat_exact_octets_and_bare_newline_across_reads(cut):
    data = b"ab\r\ncd\r\nEF"  # 10 octets, then "EF" belongs to the next command
    r = BdatReader(100)
    r.start_chunk(8)
    buf = bytearray(data[:cut])
    got, complete = r.feed(buf)
    buf += data[cut:]
    more, complete = r.feed(buf)
    assert (got + more, complete, bytes(buf), r.error) == (b"ab\r\ncd\r\n", True, b"EF", None)


@pytest.mark.parametrize("chunks", [[b"a\r", b"b"], [b"a", b"\nb"], [b"a\n"], [b"a\r"], [b"\r", b"\r\n"]])
def test_bdat_bare_cr_lf_across_chunks(chunks):
    r = BdatReader(100)
    for c in chunks:
        r.start_chunk(len(c))
        r.feed(bytearray(c))
    r.finish_message()
    assert r.error == codes.BARE_NEWLINE_DATA


def test_bdat_crlf_split_across_chunks_is_fine():
    r = BdatReader(100)
    for c in (b"a\r", b"\nb\r", b"\n"):
        r.start_chunk(len(c))
        r.feed(bytearray(c))
    r.finish_message()
    assert r.error is None and r.size == 6


def test_bdat_size_limit_exact_and_one_past():
    for size, error in ((100, None), (101, codes.MESSAGE_TOO_BIG)):
        r = BdatReader(100)
        r.start_chunk(size)
        data, complete = r.feed(bytearray(b"x" * size))
        assert complete and r.error == error
