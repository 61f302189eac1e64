"""Fuzzing the sans-IO POP3 layers: ``pop3/wire.py`` (line framing, command parsing, dot-stuffing, TOP) and the
``pop3/session.py`` state machine.

Input is a script of POP3 commands (USER/PASS, AUTH PLAIN/LOGIN with SASL responses and the RFC 1734 form, CAPA,
STLS, STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT, APOP, unknown ones) with good, missing, zero and huge
arguments, some mutated (fuzzlib.mutated, lines padded around ``pop3_max_line`` and the SASL line limit) or random,
against a maildrop of messages with dots at line starts, LF-only lines and no final line end.

Properties: no exception; every response is one CRLF line of at most 512 octets (RFC 2449 4) starting ``+OK``,
``-ERR`` or ``+ ``, or a dot-stuffed multi-line block ending ``CRLF . CRLF``; RETR returns the message exactly,
TOP its header and first lines; at most one response per line received; nothing after Close; the maildrop lock is
released when the connection ends; the same output whatever the read boundaries.
"""

from __future__ import annotations

import base64
import itertools
import re

from hypothesis import strategies as st

from mailserver.config import LimitsConfig
from mailserver.pop3 import wire
from mailserver.pop3.session import (
    MAX_SASL_LINE,
    Authenticate,
    Close,
    Expunge,
    Maildrop,
    MaildropEntry,
    MaildropLocks,
    OpenMaildrop,
    Pop3Session,
    Retrieve,
    Send,
    StartTls,
)
from tests.fuzz.fuzzlib import (
    byte_by_byte,
    chunks_at,
    forced_splits,
    fuzz,
    lines_of,
    split_points,
    units_script,
)

LIMITS = LimitsConfig(pop3_max_commands_without_progress=15)
MESSAGES = {
    "b1": b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n.dot line\r\n..two dots\r\n.\r\n",
    "b2": b"Subject: two\r\n\r\nl1\r\nl2\r\nl3",  # no final line end
    "b3": b"Subject: three\n\nlf only\n.\n",
    "b4": b"no header or body separator",
    "b5": b"",
}
MAILDROP = Maildrop(mailbox_id=7, uid_validity=1700000000, entries=(
    MaildropEntry(11, len(MESSAGES["b1"]), "b1"), MaildropEntry(12, len(MESSAGES["b2"]), "b2"),
    MaildropEntry(13, len(MESSAGES["b3"]), "b3"), MaildropEntry(14, len(MESSAGES["b4"]), "b4"),
    MaildropEntry(15, len(MESSAGES["b5"]), "b5"), MaildropEntry(16, 10, "gone"),
))
USERS = {"alice@example.org": ("secret", 1), "bob@example.org": ("pw2", 2), "carol@example.org": ("pw3", 3)}
LINE_LIMITS = (LIMITS.pop3_max_line, MAX_SASL_LINE, wire.RFC_MIN_LINE)

# ------------------------------------------------------------------------------------------------ grammar


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


_user = st.sampled_from([b"alice@example.org", b"bob@example.org", b"carol@example.org", b"throttled@x",
                         b"disabled@x", b"error@x", b"nobody", b"", b"\xc3\xa9", b"a b"])
_password = st.sampled_from([b"secret", b"pw2", b"pw3", b"wrong", b"", b"with space", b"\x00"])
_msg = st.sampled_from([b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"0", b"-1", b"01", b"99999999999", b"x",
                        b"1 2", b""])


@st.composite
def _login(draw) -> bytes:
    user, password = draw(_user), draw(_password)
    kind = draw(st.integers(0, 6))
    if kind <= 1:
        return b"USER " + user + b"\r\nPASS " + password + b"\r\n"
    if kind == 2:
        return b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password) + b"\r\n"
    if kind == 3:
        return b"AUTH PLAIN\r\n" + _b64(b"\0" + user + b"\0" + password) + b"\r\n"
    if kind == 4:
        return b"AUTH LOGIN\r\n" + _b64(user) + b"\r\n" + _b64(password) + b"\r\n"
    if kind == 5:
        return b"AUTH LOGIN " + _b64(user) + b"\r\n" + draw(st.sampled_from([b"*", b"!!", _b64(password)])) + b"\r\n"
    return b"AUTH " + draw(st.sampled_from([b"", b"X-BOGUS", b"PLAIN =", b"PLAIN *", b"plain !!!", b"LOGIN a b",
                                            b"CRAM-MD5", b"PLAIN " + b"A" * 5000])) + b"\r\n"


pop3_unit = st.one_of(
    _login(),
    st.tuples(st.sampled_from([b"LIST", b"RETR", b"DELE", b"UIDL", b"list", b"Retr"]), _msg).map(
        lambda t: t[0] + (b" " + t[1] if t[1] else b"") + b"\r\n"),
    st.tuples(_msg, st.sampled_from([b"0", b"1", b"2", b"100", b"-1", b"4294967296", b""])).map(
        lambda t: b"TOP " + t[0] + b" " + t[1] + b"\r\n"),
    st.sampled_from([b"CAPA", b"STLS", b"STAT", b"LIST", b"UIDL", b"NOOP", b"RSET", b"QUIT", b"APOP a b", b"AUTH",
                     b"STAT x", b"NOOP ", b"XYZZY", b"", b" ", b"LIST  1", b"QUIT now", b"PASS", b"USER"]).map(
        lambda c: c + b"\r\n"),
)
pop3_units = st.tuples(st.booleans(), units_script(pop3_unit, limits=LINE_LIMITS)).map(
    lambda t: ([b"USER alice@example.org\r\nPASS secret\r\n"] if t[0] else []) + t[1])

# ------------------------------------------------------------------------------------------------ the driver


class Recorder:
    """Runs a session, answering its requests as the glue would (the maildrop and blobs are in memory)."""

    def __init__(self, *, tls: bool, plaintext: bool):
        self.locks = MaildropLocks()
        self.locks.acquire(3)  # carol has a session elsewhere: IN-USE
        self.s = Pop3Session(hostname="mx.example.org", limits=LIMITS, locks=self.locks, tls_active=tls,
                             tls_available=not tls, plaintext_without_tls=plaintext)
        self.out: list[bytes] = []
        self.closed = False
        self.handle(self.s.greeting())

    def handle(self, outputs) -> None:
        for o in outputs:
            assert not self.closed, f"{o!r} after Close"
            if isinstance(o, Send):
                check_response(o.data)
                self.out.append(o.data)
            elif isinstance(o, Close):
                self.closed = True
                self.out.append(b"<close>")
            elif isinstance(o, StartTls):
                self.out.append(b"<starttls>")
            elif isinstance(o, Authenticate):
                self.handle(self._auth(o))
            elif isinstance(o, OpenMaildrop):
                self.handle(self.s.maildrop_opened(MAILDROP, "user"))
            elif isinstance(o, Retrieve):
                self.handle(self._retrieve(o))
            elif isinstance(o, Expunge):
                assert set(o.uids) <= {e.uid for e in MAILDROP.entries}
                self.handle(self.s.update_done(len(o.uids) != 2))
            else:
                raise AssertionError(f"unknown output {o!r}")

    def _auth(self, o: Authenticate):
        if o.username.startswith("error"):
            return self.s.auth_error()
        known = USERS.get(o.username)
        if known and known[0] == o.password:
            return self.s.auth_result(True, known[1])
        reason = "throttled" if o.username.startswith("throttled") else (
            "disabled" if o.username.startswith("disabled") else "invalid")
        return self.s.auth_result(False, None, reason)

    def _retrieve(self, o: Retrieve):
        blob = MESSAGES.get(o.entry.blob_id)
        if blob is None:
            return self.s.retrieve_failed()
        begin = self.s.retrieve_begin()
        assert len(begin) == 1 and isinstance(begin[0], Send) and begin[0].data.startswith(b"+OK")
        enc = wire.BodyEncoder(o.top_lines)
        body = b""
        for i in range(0, len(blob), 5):  # the glue streams the blob in chunks
            body += enc.encode(blob[i:i + 5])
            if enc.done:
                break
        body += enc.finish()
        check_body(blob, o.top_lines, body)
        self.out.append(begin[0].data + body)
        return self.s.retrieve_done()

    def feed(self, reads: list[bytes]) -> "Recorder":
        for chunk in reads:
            outputs = self.s.data_received(chunk)
            if self.closed:
                assert outputs == []
            self.handle(outputs)
        self.s.connection_lost()
        assert not self.locks.held(1) and not self.locks.held(2), "maildrop lock left after the connection"
        return self


_SINGLE = re.compile(rb"(\+OK|-ERR|\+)( [^\r\n]*)?\r\n")


def check_response(data: bytes) -> None:
    """RFC 1939 3 / RFC 2449 4: one status line of at most 512 octets, or a dot-stuffed multi-line block."""
    first_end = data.find(b"\r\n") + 2
    first = data[:first_end]
    assert _SINGLE.fullmatch(first), data[:100]
    assert len(first) <= 512
    if first_end == len(data):
        return
    assert first.startswith(b"+OK") and data.endswith(b"\r\n.\r\n"), data[-50:]
    body = data[first_end:-3].split(b"\r\n")[:-1]
    assert all(line != b"." for line in body)


def _unstuff(encoded: bytes) -> bytes:
    assert encoded.endswith(b".\r\n")
    lines = encoded[:-3].split(b"\n")
    return b"\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)


def check_body(blob: bytes, top_lines: int | None, encoded: bytes) -> None:
    """RETR gives the message exactly (CRLF added if it did not end a line); TOP the header, blank line, n lines."""
    got = _unstuff(encoded)
    if top_lines is None:
        expected = blob
    else:
        lines = blob.split(b"\n")
        lines = [ln + b"\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        blank = next((i for i, ln in enumerate(lines) if ln in (b"\n", b"\r\n")), len(lines))
        expected = b"".join(lines[: blank + 1 + top_lines])  # RFC 5322 2.1: the first empty line ends the header
    if expected and not expected.endswith(b"\n"):
        expected += b"\r\n"
    assert got == expected, (got, expected)
    for line in encoded[:-3].split(b"\n"):
        if line.startswith(b".") and line not in (b"", b"\r"):
            assert line.startswith(b".."), "a line starting with '.' was not stuffed"


_STLS = re.compile(rb"stls *\r?\n", re.I)


@fuzz(units=pop3_units, tls=st.booleans(), plaintext=st.booleans(), data=st.data())
def test_session_any_reads(units, tls, plaintext, data):
    """Well-formed responses, exact RETR/TOP bodies, bounded output, no lock left, the same whatever the reads
    (all at once, one command per read, byte by byte, cut anywhere)."""
    raw = b"".join(units)
    forced = forced_splits(raw, _STLS)
    whole = Recorder(tls=tls, plaintext=plaintext).feed(chunks_at(raw, forced))
    responses = [o for o in whole.out if not o.startswith(b"<")]
    assert len(responses) <= lines_of(raw) + 3  # + greeting and the closing -ERR for no progress or overflow
    assert sum(map(len, responses)) <= 600 * (lines_of(raw) + 2) + 2 * sum(map(len, MESSAGES.values())) * lines_of(raw)
    if len(raw) > wire.MAX_PIPELINED:
        # More than RFC 2449 6.6 lets us queue: whether it overflows depends on how much waited at once (by design).
        return
    split = Recorder(tls=tls, plaintext=plaintext).feed(chunks_at(raw, forced + data.draw(split_points(len(raw)))))
    assert split.out == whole.out
    at_units = list(itertools.accumulate(len(u) for u in units))
    assert Recorder(tls=tls, plaintext=plaintext).feed(chunks_at(raw, forced + at_units)).out == whole.out
    if len(raw) <= 1500:
        tiny = Recorder(tls=tls, plaintext=plaintext).feed(chunks_at(raw, forced + list(range(1, len(raw)))))
        assert tiny.out == whole.out


@fuzz(line=st.one_of(pop3_unit, st.binary(max_size=80)))
def test_parse_command_raises_only_syntax_errors(line):
    """parse_command: a typed command or SyntaxError_ (UnknownCommand), for any line."""
    for one in line.split(b"\r\n"):
        try:
            cmd = wire.parse_command(one)
        except wire.SyntaxError_:
            continue
        repr(cmd)


@fuzz(blob=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(
    [b".", b"..", b".x", b"", b"Subject: s", b"\r", b"a"]), max_size=12).map(lambda ls: b"\r\n".join(ls))),
    top=st.one_of(st.none(), st.integers(0, 5)), data=st.data())
def test_body_encoder_any_chunks(blob, top, data):
    """BodyEncoder (TOP filter + dot-stuffing) gives the same octets whatever the chunks of the stored message."""

    def encode(chunks):
        enc = wire.BodyEncoder(top)
        out = b""
        for chunk in chunks:
            out += enc.encode(chunk)
            if enc.done:
                break
        return out + enc.finish()

    whole = encode([blob])
    assert encode(chunks_at(blob, data.draw(split_points(len(blob))))) == whole
    assert encode(byte_by_byte(blob)) == whole
    if b"\r" not in blob.replace(b"\r\n", b""):
        check_body(blob, top, whole)
