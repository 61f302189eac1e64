"""Fuzzing the sans-IO SMTP layers: ``smtp/wire.py`` framing and the ``smtp/session.py`` state machine.

Input is a script of SMTP units (EHLO/HELO, MAIL/RCPT with paths and ESMTP parameters, DATA with a body, BDAT
chunks, AUTH PLAIN/LOGIN with SASL responses, STARTTLS, RSET/NOOP/VRFY/EXPN/HELP/QUIT, unknown verbs), some of them
mutated (fuzzlib.mutated) or plain random bytes, fed whole (full pipelining), byte by byte, or at random offsets,
with the checks answered at once or only after each read.

Properties: nothing but the documented replies comes out (no exception, no "internal error" 451); each reply is
CRLF-terminated lines of the RFC 5321 4.2 shape with a matching RFC 3463 code; nothing after Close; message events
nest (start, data, one end or abort); at most one reply per input line (plus greeting and the 421); the same events
whatever the read boundaries and whenever the checks are answered.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re

from hypothesis import strategies as st

from mailserver.config import Config, LimitsConfig
from mailserver.smtp import codes
from mailserver.smtp.session import (
    MAX_AUTH_LINE,
    AuthResult,
    CheckAuth,
    CheckMail,
    CheckRcpt,
    Close,
    Identity,
    MessageAbort,
    MessageData,
    MessageEnd,
    MessageStart,
    Peer,
    RcptResult,
    Send,
    SessionConfig,
    SmtpSession,
    StartTlsNow,
)
from mailserver.smtp.wire import BdatReader, CommandFramer, DataReader
from tests.fuzz.fuzzlib import (
    byte_by_byte,
    chunks_at,
    forced_splits,
    fuzz,
    lines_of,
    split_points,
    units_script,
)

# ------------------------------------------------------------------------------------------------ configurations

SMALL = dict(max_command_line=512, max_text_line=1000, max_message_size=5000, max_recipients=4, max_errors=12,
             max_messages=3)
CONFIGS = {
    "mx": SessionConfig(hostname="mx.example.org", **SMALL),
    "mx-no-tls": SessionConfig(hostname="mx.example.org", offer_starttls=False, **SMALL),
    "submission": SessionConfig(hostname="mx.example.org", offer_auth=True, require_auth=True, **SMALL),
    "submissions": SessionConfig(hostname="mx.example.org", offer_auth=True, require_auth=True,
                                 offer_starttls=False, **SMALL),
    # Every limit as LimitsConfig sets it (one byte past smtp_max_command_line / smtp_max_text_line via "pad").
    "defaults": SessionConfig.from_config(Config(hostname="mx.example.org", data_dir="/nonexistent"), "submission"),
}
PEERS = {
    "remote": Peer("192.0.2.10", 40000),
    "loopback": Peer("127.0.0.1", 40000, loopback=True),
    "trusted": Peer("192.0.2.20", 40000, trusted=True),
}
_DEFAULT_LIMITS = LimitsConfig()
# Every SMTP line limit, small and default (LimitsConfig), each to be hit at -2..+1 (fuzzlib.mutated "pad").
LINE_LIMITS = (512, 1000, MAX_AUTH_LINE, _DEFAULT_LIMITS.smtp_max_command_line, _DEFAULT_LIMITS.smtp_max_text_line)

# ------------------------------------------------------------------------------------------------ grammar

_domains = st.sampled_from([
    "example.org", "client.example", "[192.0.2.1]", "[300.1.1.1]", "[IPv6:2001:db8::1]", "[IPv6:zz]",
    "[tag:value]", "bücher.example", "xn--bcher-kva.example", "-bad-.example", "a." * 130 + "org", "localhost",
    "x", "[]", "a..b",
])
_locals = st.sampled_from([
    "alice", "bob", "a.b+tag", '"quoted local"', '"q\\"x"', '"bad\x01"', "ü", "x" * 64, "x" * 65, ".a", "a..b",
    "unknown", "temp", "reject", "postmaster", "",
])


@st.composite
def _path(draw, allow_null: bool) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0 and allow_null:
        return "<>"
    if kind == 1:
        return "<Postmaster>"
    mailbox = f"{draw(_locals)}@{draw(_domains)}"
    if kind == 2:
        return f"<@relay.example,@r2.example:{mailbox}>"
    if kind == 3:
        return mailbox  # no angle brackets
    if kind == 4:
        return f"<{mailbox}"  # unterminated
    return f"<{mailbox}>"


_xtext = st.sampled_from(["abc", "a+2Bb", "a+zz", "+", "x" * 101, "%"])
_mail_params = st.lists(st.one_of(
    st.sampled_from(["SIZE=100", "SIZE=999999999", "SIZE=", "SIZE", "SIZE=1" + "0" * 25, "BODY=8BITMIME",
                     "BODY=7BIT", "BODY=BINARYMIME", "SMTPUTF8", "SMTPUTF8=1", "RET=FULL", "RET=HDRS", "RET=X",
                     "AUTH=<>", "AUTH=alice@example.org", "X-UNKNOWN=1", "=x", "size=5", "BODY=ü"]),
    _xtext.map(lambda x: "ENVID=" + x),
), max_size=4)
_rcpt_params = st.lists(st.sampled_from([
    "NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE", "NOTIFY=DELAY,DELAY", "NOTIFY=", "NOTIFY=NEVER,SUCCESS",
    "ORCPT=rfc822;a@b", "ORCPT=utf-8;ü@b", "ORCPT=rfc822;a+zz", "ORCPT=;x", "ORCPT=" + "x" * 501, "X=Y",
]), max_size=3)


def _line(text: str) -> bytes:
    return text.encode("utf-8") + b"\r\n"


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode("utf-8") if isinstance(text, str) else text).decode()


_body_lines = st.lists(st.one_of(
    st.sampled_from([b"Subject: hi", b"", b".", b"..", b".leading dot", b"REJECT", b"From: a@b", b"\x80\xff",
                     b"a\rb", b"a\nb", b"\x00"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(990, 1010).map(lambda n: b"L" * n),
), max_size=8)


@st.composite
def _data_unit(draw) -> bytes:
    """DATA, its body (dot-stuffed or not) and an end marker (or a wrong one)."""
    lines = draw(_body_lines)
    if draw(st.booleans()):
        lines = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    end = draw(st.sampled_from([b".\r\n", b".\r\n", b".\r\n", b"\n.\n", b".\n", b"\r\n.\r\n", b""]))
    return b"DATA\r\n" + b"".join(ln + b"\r\n" for ln in lines) + end


@st.composite
def _bdat_unit(draw) -> bytes:
    payload = draw(st.one_of(st.binary(max_size=60), st.sampled_from([b"a\r\n", b"\r", b"\n", b"x" * 300])))
    size = len(payload) + draw(st.sampled_from([0, 0, 0, -1, 1, 5]))
    size = max(size, 0)
    last = draw(st.sampled_from(["", " LAST", " last", " LAST x", " END"]))
    return f"BDAT {size}{last}\r\n".encode() + payload


@st.composite
def _auth_unit(draw) -> bytes:
    user = draw(st.sampled_from(["alice@example.org", "temp@example.org", "mallory", "", "x" * 600]))
    password = draw(st.sampled_from(["secret", "wrong", "", "p\x00w"]))
    authzid = draw(st.sampled_from(["", "", user, "bob@example.org"]))
    plain = _b64(f"{authzid}\0{user}\0{password}")
    choice = draw(st.integers(0, 8))
    if choice == 0:
        return _line(f"AUTH PLAIN {plain}")
    if choice == 1:
        return _line("AUTH PLAIN") + _line(plain)
    if choice == 2:
        return _line(f"AUTH LOGIN {_b64(user)}") + _line(_b64(password))
    if choice == 3:
        return _line("AUTH LOGIN") + _line(_b64(user)) + _line(_b64(password))
    if choice == 4:
        return _line("AUTH PLAIN") + _line("*")
    if choice == 5:
        return _line("AUTH PLAIN =")
    if choice == 6:
        return _line("AUTH " + draw(st.sampled_from(["CRAM-MD5", "plain", "PLAIN !!!", "LOGIN a b", "", "PL*"])))
    if choice == 7:
        return _line("AUTH PLAIN") + _line("not base64!")
    return _line("AUTH LOGIN") + _line("A" * 5000)


_simple = st.sampled_from([
    "RSET", "NOOP", "NOOP anything", "QUIT", "VRFY alice", "VRFY", "EXPN list", "HELP", "HELP MAIL", "STARTTLS",
    "STARTTLS now", "starttls", "RSET x", "DATA x", "XYZZY", "", " ", "MAIL", "RCPT", "EHLO", "HELO", "BDAT",
    "BDAT x", "BDAT 1 2 3", "BDAT -1",
]).map(_line)

smtp_unit = st.one_of(
    st.tuples(st.sampled_from(["EHLO", "HELO", "ehlo"]), _domains).map(lambda t: _line(f"{t[0]} {t[1]}")),
    st.tuples(_path(True), _mail_params).map(lambda t: _line(" ".join(["MAIL FROM:" + t[0], *t[1]]))),
    st.tuples(_path(False), _rcpt_params).map(lambda t: _line(" ".join(["RCPT TO:" + t[0], *t[1]]))),
    _data_unit(),
    _bdat_unit(),
    _auth_unit(),
    _simple,
)


@st.composite
def smtp_units(draw, max_size: int = 14) -> list[bytes]:
    """Usually starts like a real client (EHLO, MAIL, RCPT), then anything."""
    units = []
    if draw(st.booleans()):
        units += [b"EHLO client.example\r\n", b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<bob@example.org>\r\n"]
    if draw(st.integers(0, 49)) == 0:
        units.append(b"NOOP\r\nXYZZY\r\n" * 25)  # past smtp_max_errors
    return units + draw(units_script(smtp_unit, limits=LINE_LIMITS, max_size=max_size))


def smtp_script(max_size: int = 14) -> st.SearchStrategy[bytes]:
    return smtp_units(max_size).map(b"".join)


# ------------------------------------------------------------------------------------------------ the driver


class _InternalErrors(logging.Handler):
    """Collects what the session logs when a handler raised something unexpected (answered 451 4.3.0)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _answer(action):
    """Deterministic checks, decided by the input (so every read split gets the same answers)."""
    if isinstance(action, CheckMail):
        rp = action.envelope.reverse_path
        return codes.RELAY_DENIED if rp is not None and rp.local_part.startswith("reject") else None
    if isinstance(action, CheckRcpt):
        local = action.recipient.mailbox.local_part
        if local.startswith("unknown"):
            return RcptResult(codes.UNKNOWN_USER)
        if local.startswith("temp"):
            return RcptResult(codes.OVER_QUOTA_TEMP)  # (not 451 4.3.0: that one marks the catch-all)
        return RcptResult(None, route="local")
    if isinstance(action, CheckAuth):
        if action.username == "alice@example.org" and action.password == "secret":
            return AuthResult(Identity(action.username, 1, action.username))
        if action.username.startswith("temp"):
            return AuthResult(None, codes.AUTH_TEMPFAIL)
        return AuthResult(None)
    if isinstance(action, MessageEnd):
        return codes.TRANSACTION_FAILED if action.envelope.size % 5 == 4 else codes.QUEUED
    raise AssertionError(f"unexpected action {action!r}")


_BODY_PROBLEMS = {r.lines[0] for r in (codes.BARE_NEWLINE_DATA, codes.TEXT_LINE_TOO_LONG, codes.MESSAGE_TOO_BIG)}


class Recorder:
    """Runs one session over a list of reads and records what it did, normalised for comparison:
    consecutive MessageData merged, and the data of an aborted message dropped (how much of a message that is
    refused anyway was handed out before the refusal depends on the reads, and so does the problem the abort
    names)."""

    def __init__(self, config: SessionConfig, peer: Peer, tls: bool, deferred: bool):
        self.session = SmtpSession(config, peer, tls=tls)
        self.deferred = deferred
        self.events: list[tuple] = []
        self.pending: list = []
        self.closed_at: int | None = None
        self.replies = 0
        self.out_bytes = 0
        self._handle(self.session.start())

    def _handle(self, actions) -> None:
        for a in actions:
            assert self.closed_at is None, f"{a!r} after Close"
            if isinstance(a, Send):
                check_reply(a.reply)
                wire = a.reply.encode()
                self.replies += 1
                self.out_bytes += len(wire)
                self.events.append(("send", wire))
            elif isinstance(a, MessageData):
                assert self.events and any(e[0] == "start" for e in self.events), "data before start"
                if self.events[-1][0] == "data":
                    self.events[-1] = ("data", self.events[-1][1] + a.data)
                else:
                    self.events.append(("data", a.data))
            elif isinstance(a, MessageStart):
                self.events.append(("start", a.envelope.body))
            elif isinstance(a, MessageAbort):
                while self.events and self.events[-1][0] == "data":
                    self.events.pop()
                # A refused body is aborted at the first problem seen, which depends on the reads; the reply at
                # its end names the gravest problem found (compared through the Send that follows).
                self.events.append(("abort", "refused" if a.reason in _BODY_PROBLEMS else a.reason))
            elif isinstance(a, StartTlsNow):
                self.events.append(("starttls",))
            elif isinstance(a, Close):
                self.events.append(("close",))
                self.closed_at = len(self.events)
            else:
                self.events.append(("check", type(a).__name__, _summary(a)))
                assert not self.pending, "a second check while one is pending"
                self.pending.append(a)
                if not self.deferred:
                    self._resolve()

    def _resolve(self) -> None:
        while self.pending:
            a = self.pending.pop(0)
            self._handle(self.session.resolve(_answer(a)))

    def feed(self, reads: list[bytes]) -> "Recorder":
        for chunk in reads:
            out = self.session.receive(chunk)
            if self.closed_at is not None:
                assert out == [], "output after Close"
            self._handle(out)
            self._resolve()
        return self

    def end(self, how: str) -> "Recorder":
        if how == "lost":
            self._handle(self.session.connection_lost())
        elif self.closed_at is None:
            self._handle(self.session.timeout() if how == "timeout" else self.session.shutdown())
        return self


def _summary(action) -> tuple:
    if isinstance(action, CheckMail):
        return (str(action.envelope.reverse_path), action.envelope.mail_params)
    if isinstance(action, CheckRcpt):
        return (str(action.recipient.mailbox), action.recipient.params)
    if isinstance(action, CheckAuth):
        return (action.mechanism, action.username, action.password)
    if isinstance(action, MessageEnd):
        env = action.envelope
        return (env.body, env.size, tuple(str(r.mailbox) for r in env.recipients))
    return ()


_REPLY_LINE = re.compile(rb"([2-5][0-9]{2})([ -])([^\r\n]*)\r\n")
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


def check_reply(reply) -> None:
    """RFC 5321 4.2: ``code-text`` lines then ``code text``, CRLF each; RFC 3463 class = reply class."""
    wire = reply.encode()
    lines = _REPLY_LINE.findall(wire)
    assert b"".join(c + s + t + b"\r\n" for c, s, t in lines) == wire, wire
    assert {c for c, _, _ in lines} == {str(reply.code).encode()}, wire
    assert [s for _, s, _ in lines] == [b"-"] * (len(lines) - 1) + [b" "], wire
    if reply.enhanced:
        assert _ENHANCED.fullmatch(reply.enhanced) and reply.enhanced[0] == str(reply.code)[0], wire


def check_events(rec: Recorder, data: bytes) -> None:
    """Message events nest; replies are bounded by the input."""
    assert rec.events[0][0] == "send" and rec.events[0][1].startswith(b"220 ")
    in_message = False
    for e in rec.events:
        if e[0] == "start":
            assert not in_message, "nested MessageStart"
            in_message = True
        elif e[0] == "data":
            assert in_message
        elif e[0] == "abort" or (e[0] == "check" and e[1] == "MessageEnd"):
            assert in_message, f"{e} without a message"
            in_message = False
    # At most one reply per line received, plus the greeting and the closing 421 (no amplification); each reply
    # is at most a few hundred octets plus what it echoes (the EHLO domain).
    assert rec.replies <= lines_of(data) + 3
    assert rec.out_bytes <= 400 * (lines_of(data) + 3) + len(data)
    # A check never raised past the session: no generic 451 from the catch-all.
    assert b"451 4.3.0 Local error" not in b"".join(e[1] for e in rec.events if e[0] == "send")


_STARTTLS_LINE = re.compile(rb"starttls *\r\n", re.I)


def _run(config_name, peer_name, tls, raw, reads, deferred, how):
    rec = Recorder(CONFIGS[config_name], PEERS[peer_name], tls, deferred)
    return rec.feed(reads).end(how)


# ------------------------------------------------------------------------------------------------ the tests


@fuzz(config_name=st.sampled_from(sorted(CONFIGS)), peer_name=st.sampled_from(sorted(PEERS)), tls=st.booleans(),
      units=smtp_units(), data=st.data())
def test_session_any_reads_same_events(config_name, peer_name, tls, units, data):
    """Whatever the input and the read boundaries, only documented replies come out, well-formed, and the events
    are the same as when everything arrives in one read with every check answered at once (full pipelining), as
    when each unit comes in its own read (no pipelining), byte by byte, or cut anywhere."""
    raw = b"".join(units)
    handler = _InternalErrors()
    logger = logging.getLogger("mailserver.smtp.session")
    logger.addHandler(handler)
    try:
        forced = forced_splits(raw, _STARTTLS_LINE)
        how = data.draw(st.sampled_from(["lost", "timeout", "shutdown"]), label="end")
        whole = _run(config_name, peer_name, tls, raw, chunks_at(raw, forced), False, how)
        check_events(whole, raw)
        offsets = data.draw(split_points(len(raw)), label="splits")
        deferred = data.draw(st.booleans(), label="deferred")
        split = _run(config_name, peer_name, tls, raw, chunks_at(raw, forced + offsets), deferred, how)
        assert split.events == whole.events
        at_units = list(itertools.accumulate(len(u) for u in units))
        one_by_one = _run(config_name, peer_name, tls, raw, chunks_at(raw, forced + at_units), True, how)
        assert one_by_one.events == whole.events
        if len(raw) <= 1500:
            tiny = _run(config_name, peer_name, tls, raw, chunks_at(raw, forced + list(range(1, len(raw)))), True,
                        how)
            assert tiny.events == whole.events
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]


@fuzz(prefix=smtp_script(6), injected=smtp_script(6))
def test_starttls_never_runs_pipelined_plaintext(prefix, injected):
    """RFC 3207 4.2 (CVE-2011-0411 class): whatever came in the same read as an accepted STARTTLS is dropped, and
    the session inside TLS starts from scratch (EHLO needed again)."""
    s = SmtpSession(CONFIGS["submission"], PEERS["remote"])
    s.start()
    actions = s.receive(b"EHLO client.example\r\n" + prefix)
    if any(isinstance(a, Close) for a in actions) or s.waiting or s.tls:
        return
    actions = s.receive(b"STARTTLS\r\n" + injected)
    if not any(isinstance(a, StartTlsNow) for a in actions):
        return  # STARTTLS was data (inside DATA / BDAT / AUTH) or refused
    tail = actions[[isinstance(a, StartTlsNow) for a in actions].index(True) + 1:]
    assert tail == [], f"pipelined plaintext executed after STARTTLS: {tail!r}"
    assert s.tls and s.helo is None and s.identity is None and s.envelope is None
    out = s.receive(b"MAIL FROM:<a@example.net>\r\n")
    # (The error count survives STARTTLS, so this may also be the 421 for too many errors.)
    assert [a.reply for a in out if isinstance(a, Send)][0] == codes.HELO_FIRST


_body = st.binary(max_size=3000) | st.lists(
    st.sampled_from([b".", b"..", b".x", b"abc", b"", b"\r", b"\n", b"L" * 999, b"L" * 1000, b"\x00"]),
    max_size=20).map(lambda ls: b"\r\n".join(ls) + b"\r\n.\r\n")


@fuzz(body=_body, data=st.data())
def test_data_reader_any_reads(body, data):
    """DataReader: the end of data is found at the same place, the error is the same, and when there is no error
    the size and the unstuffed body are the same, whatever the reads (smuggling: no read boundary ends a message)."""

    def run(reads):
        reader, buf, out, done_at = DataReader(5000, 1000), bytearray(), [], None
        for i, chunk in enumerate(reads):
            buf += chunk
            chunks, done = reader.feed(buf)
            out += chunks
            assert len(buf) <= 1000 + len(chunk) or done, "DataReader held more than a line"
            if done:
                done_at = (sum(map(len, reads[: i + 1])) - len(buf))
                break
        # (The size of a refused body is not used: octets of a skipped over-long line are not counted.)
        return done_at, reader.error, (reader.size, b"".join(out)) if reader.error is None else None

    whole = run([body])
    offsets = data.draw(split_points(len(body)))
    assert run(chunks_at(body, offsets)) == whole
    if whole[0] is not None:
        end = whole[0]
        assert body[:end].endswith(b"\r\n.\r\n") or body[:end] == b".\r\n"


@fuzz(sizes=st.lists(st.integers(0, 70), min_size=1, max_size=5), payload=st.binary(max_size=400), data=st.data())
def test_bdat_reader_any_reads(sizes, payload, data):
    """BdatReader: chunks take exactly their octets; the bare CR/LF verdict does not depend on the reads."""

    def run(reads):
        reader, buf, got = BdatReader(300), bytearray(reads[0]), []
        rest = list(reads[1:])
        for size in sizes:
            reader.start_chunk(size)
            while True:
                part, complete = reader.feed(buf)
                got.append(part)
                if complete or not rest:
                    break
                buf += rest.pop(0)
            if not complete:
                return None
        reader.finish_message()
        return reader.error, reader.size, b"".join(got) if reader.error is None else None

    whole = run([payload])
    offsets = data.draw(split_points(len(payload)))
    assert run(chunks_at(payload, offsets)) == whole


@fuzz(lines=st.lists(st.one_of(st.binary(max_size=30), st.integers(500, 520).map(lambda n: b"x" * n)),
                     max_size=8), data=st.data())
def test_command_framer_any_reads(lines, data):
    """CommandFramer: the same lines and LINE_TOO_LONG markers, in the same order, whatever the reads."""
    raw = b"\r\n".join(lines) + b"\r\n"

    def run(reads):
        framer, buf, out = CommandFramer(512), bytearray(), []
        for chunk in reads:
            buf += chunk
            while (line := framer.next_line(buf)) is not None:
                out.append(line if isinstance(line, bytes) else "TOO LONG")
            assert len(buf) <= 512 + 1
        return out

    whole = run([raw])
    assert run(chunks_at(raw, data.draw(split_points(len(raw))))) == whole
    assert run(byte_by_byte(raw)) == whole
    assert all(isinstance(x, str) or len(x) + 2 <= 512 for x in whole)
