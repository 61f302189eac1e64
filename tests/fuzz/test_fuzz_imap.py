"""Fuzzing the sans-IO IMAP layers: ``imap/wire.py`` framing (literals of every kind), ``imap/parser.py`` with
``seqset.py`` and ``searchkeys.py``, and ``imap/session.py`` before login (no store is needed there).

Input is a script of IMAP commands built from the RFC 9051 grammar and its extensions (every command word, sequence
sets, FETCH items with sections and partials, SEARCH programs nested in parentheses, NOT and OR, APPEND with
flags, dates, literal8 and MULTIAPPEND, LIST-EXTENDED, QRESYNC ...), arguments as atoms, quoted strings or
literals ({n}, {n+}, ~{n}, and literals whose size is wrong), some units mutated (fuzzlib.mutated) or random.

Properties: the reader gives the same events whatever the read boundaries, its frames are well-formed and it never
holds more than its limits; the parser raises nothing but ParseError and keeps the tag; sequence sets round-trip;
the session answers every command with a tagged response carrying its tag (or ``*`` when there is none), its
output is CRLF-terminated IMAP lines, the same whatever the reads, bounded by the input, never SERVERBUG.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from types import SimpleNamespace

from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from mailserver.config import Config, LimitsConfig
from mailserver.imap import commands as c
from mailserver.imap.parser import is_idle_done, parse_append_prefix, parse_command, parse_sasl_response
from mailserver.imap.seqset import SeqSet
from mailserver.imap.session import ImapSession
from mailserver.imap.wire import (
    TAG_CHARS,
    CommandReady,
    CommandRejected,
    Frame,
    ImapReader,
    LiteralAnnounced,
    LiteralChunk,
    ParseError,
    ParserLimits,
    StreamedLiteral,
    find_marker,
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

SMALL = ParserLimits(max_line=300, max_literal=2000, max_command=3000, max_nesting=6, max_sequence_ranges=12)
_LIMITS = LimitsConfig()
DEFAULT = ParserLimits.from_config(_LIMITS)
# One byte past each: the small limits and LimitsConfig's imap_max_line (the pad mutation aims at -2..+2 of each).
LINE_LIMITS = (SMALL.max_line, SMALL.max_line + 2, DEFAULT.max_line, DEFAULT.max_line + 2)
LITERAL_LIMITS = tuple(n + d for n in (SMALL.max_literal, DEFAULT.max_literal, 4096) for d in (0, 1))

# ------------------------------------------------------------------------------------------------ grammar


@st.composite
def astring(draw, values=None) -> bytes:
    """One value as an atom, a quoted string or a literal of any kind (sometimes of the wrong size)."""
    v = draw(values if values is not None else st.sampled_from(
        [b"alice", b"INBOX", b"a b", b'q"uote', b"back\\slash", b"", b"\xc3\xa9t\xc3\xa9", b"\x00", b"x" * 40,
         b"line\r\nbreak", b"&AOk-", b"&", b"]", b"%*"]))
    form = draw(st.integers(0, 9))
    if form <= 2 and v and re.fullmatch(rb"[A-Za-z0-9&\]%*.\-]+", v):
        return v
    if form <= 5:
        return b'"' + v.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    size = len(v) + (draw(st.sampled_from([-1, 1, 1000])) if form == 9 else 0)
    if form == 9 and draw(st.integers(0, 3)) == 0:
        size = draw(st.sampled_from(LITERAL_LIMITS))  # announced at / one past imap_max_literal, data never sent
    marker = draw(st.sampled_from([b"{%d}", b"{%d+}", b"~{%d}", b"~{%d+}"])) % max(size, 0)
    return marker + b"\r\n" + v


_mailbox = astring(st.sampled_from([b"INBOX", b"inbox", b"inbox/Sub", b"Sent", b"&AOk-t&AOk-", b"&Jjo-!", b"&",
                                    b"&AGE-", b"caf\xc3\xa9", b"a/b/c", b"", b"\x01", b"x" * 200]))
_seq = st.sampled_from([b"1", b"*", b"1:*", b"1,2,3", b"5:1", b"0", b"4294967295", b"4294967296", b"1:", b",",
                        b"1,,2", b"$", b"1:2:3", b"*:*", b",".join([b"1"] * 13), b"2," * 5 + b"7", b"9" * 25,
                        # imap_max_sequence_ranges (LimitsConfig) and one past
                        b",".join([b"3"] * _LIMITS.imap_max_sequence_ranges),
                        b",".join([b"3"] * (_LIMITS.imap_max_sequence_ranges + 1))])
_flags = st.lists(st.sampled_from([b"\\Seen", b"\\Deleted", b"\\Flagged", b"$Junk", b"\\*", b"\\", b"kw", b"(",
                                   b"\\Recent", b"\xc3\xa9"]), max_size=4).map(lambda fs: b"(" + b" ".join(fs) + b")")
_date_time = st.sampled_from([b'"17-Jul-1996 02:44:25 -0700"', b'" 1-Jan-2024 00:00:00 +0000"',
                              b'"31-Feb-2024 00:00:00 +0000"', b'"1-Jan-2024 00:00:00 +0000"',
                              b'"01-Xyz-2024 00:00:00 +0000"', b'"01-Jan-2024 25:00:00 +0099"', b'"bad"'])
_date = st.sampled_from([b"1-Jan-2024", b'"1-Jan-2024"', b"31-Feb-2024", b"1-Jan-24", b"1-XXX-2024",
                         b"99-Jan-2024", b"1-Jan-0000"])
_section = st.sampled_from([b"", b"HEADER", b"TEXT", b"1", b"1.2.3", b"1.MIME", b"MIME", b"HEADER.FIELDS (From To)",
                            b"1.HEADER.FIELDS.NOT (Subject)", b"HEADER.FIELDS ()", b"0", b"1.", b"4294967296",
                            b"2.TEXT", b"X"])
_partial = st.sampled_from([b"", b"", b"<0.100>", b"<5.0>", b"<0.9223372036854775808>", b"<1>"])


@st.composite
def _fetch_item(draw) -> bytes:
    name = draw(st.sampled_from([b"ENVELOPE", b"FLAGS", b"INTERNALDATE", b"RFC822", b"RFC822.HEADER",
                                 b"RFC822.SIZE", b"RFC822.TEXT", b"BODY", b"BODYSTRUCTURE", b"UID", b"MODSEQ",
                                 b"BODY[]", b"BODY.PEEK[]", b"BINARY[]", b"BINARY.PEEK[]", b"BINARY.SIZE[]",
                                 b"ALL", b"FAST", b"FULL", b"BOGUS"]))
    if name.endswith(b"[]"):
        name = name[:-2] + b"[" + draw(_section) + b"]" + draw(_partial)
    return name


@st.composite
def _fetch_items(draw) -> bytes:
    items = draw(st.lists(_fetch_item(), min_size=1, max_size=4))
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return b"(" + b" ".join(items) + b")"


_search_leaf = st.one_of(
    st.sampled_from([b"ALL", b"SEEN", b"UNSEEN", b"NEW", b"OLD", b"RECENT", b"DELETED", b"DRAFT", b"FLAGGED",
                     b"ANSWERED", b"UNANSWERED", b"BOGUS", b"LARGER 100", b"SMALLER 9223372036854775808",
                     b"OLDER 0", b"YOUNGER 60", b"MODSEQ 5", b'MODSEQ "/flags/\\\\Seen" all 5',
                     b'MODSEQ "/bad" all 5', b"KEYWORD $Junk", b"UNKEYWORD x", b"UID 1:*"]),
    _seq,
    st.tuples(st.sampled_from([b"FROM", b"TO", b"CC", b"BCC", b"SUBJECT", b"BODY", b"TEXT"]), astring()).map(
        b" ".join),
    st.tuples(st.just(b"HEADER"), astring(), astring()).map(b" ".join),
    st.tuples(st.sampled_from([b"BEFORE", b"ON", b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE"]), _date).map(
        b" ".join),
)
search_program = st.recursive(
    _search_leaf,
    lambda inner: st.one_of(
        inner.map(lambda k: b"NOT " + k),
        st.tuples(inner, inner).map(lambda t: b"OR " + t[0] + b" " + t[1]),
        st.lists(inner, min_size=1, max_size=3).map(lambda ks: b"(" + b" ".join(ks) + b")"),
    ),
    max_leaves=8,
)
_deep = st.integers(1, 40).map(lambda d: b"(" * d + b"ALL" + b")" * d) | st.integers(1, 40).map(
    lambda d: b"NOT " * d + b"ALL")
_return = st.sampled_from([b"", b"RETURN () ", b"RETURN (MIN MAX COUNT) ", b"RETURN (ALL PARTIAL 1:10) ",
                           b"RETURN (PARTIAL 5:1) ", b"RETURN (PARTIAL 1:5 PARTIAL 1:5) ", b"RETURN (CONTEXT UPDATE) ",
                           b"RETURN (SAVE) ", b"RETURN ("])
_charset = st.sampled_from([b"", b"CHARSET UTF-8 ", b"CHARSET US-ASCII ", b"CHARSET KOI8-R ", b'CHARSET "utf-8" '])


def _cmd(*parts: st.SearchStrategy[bytes] | bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(*(p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts)).map(b"".join)


@st.composite
def _append(draw) -> bytes:
    out = b"APPEND " + draw(_mailbox)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            out += b" " + draw(_flags)
        if draw(st.booleans()):
            out += b" " + draw(_date_time)
        msg = draw(st.sampled_from([b"Subject: x\r\n\r\nbody\r\n", b"", b"\x00\x01", b"x" * 2500]))
        marker = draw(st.sampled_from([b"{%d}", b"{%d+}", b"~{%d}", b"~{%d+}"])) % len(msg)
        if draw(st.integers(0, 4)) == 0:
            out += b" UTF8 (" + marker + b"\r\n" + msg + b")"
        else:
            out += b" " + marker + b"\r\n" + msg
    return out


_qresync = st.sampled_from([b" (CONDSTORE)", b" (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
                            b" (QRESYNC (1 2 1:* (1:3 1:3)))", b" (QRESYNC (1 2 (1 2)))", b" ()", b" (FOO)",
                            b" (QRESYNC (0 0))", b""])

imap_command = st.one_of(
    st.sampled_from([b"CAPABILITY", b"NOOP", b"LOGOUT", b"STARTTLS", b"NAMESPACE", b"CHECK", b"CLOSE", b"UNSELECT",
                     b"EXPUNGE", b"IDLE", b"ID NIL", b'ID ("name" "x" "version" NIL)', b'ID ("a")',
                     b"COMPRESS DEFLATE", b"COMPRESS X", b"ENABLE CONDSTORE UTF8=ACCEPT", b"ENABLE IMAP4rev2",
                     b"ENABLE", b"XYZZY", b"UID NOOP", b"UID", b"", b"CANCELUPDATE \"a1\"", b"CANCELUPDATE",
                     b"AUTHENTICATE PLAIN", b"AUTHENTICATE PLAIN =", b"AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==",
                     b"AUTHENTICATE LOGIN", b"AUTHENTICATE X-BOGUS", b"AUTHENTICATE PLAIN !!",
                     b"SETQUOTA \"\" (STORAGE 100)", b"SETQUOTA x (STORAGE 99999999999999999999)",
                     b"GETQUOTA \"\"", b"THREAD REFERENCES UTF-8 ALL", b"THREAD BOGUS UTF-8 ALL"]),
    _cmd(b"LOGIN ", astring(), b" ", astring()),
    _cmd(st.sampled_from([b"SELECT ", b"EXAMINE "]), _mailbox, _qresync),
    _cmd(b"CREATE ", _mailbox, st.sampled_from([b"", b" (USE (\\Drafts))", b" (USE (Drafts))", b" (X)"])),
    _cmd(st.sampled_from([b"DELETE ", b"SUBSCRIBE ", b"UNSUBSCRIBE ", b"GETQUOTAROOT "]), _mailbox),
    _cmd(b"RENAME ", _mailbox, b" ", _mailbox),
    _cmd(b"LIST ", st.sampled_from([b"", b"(SUBSCRIBED) ", b"(RECURSIVEMATCH) ", b"(SPECIAL-USE REMOTE) ", b"() "]),
         _mailbox, b" ", st.sampled_from([b"*", b"%", b"INBOX/*", b'"a*"', b"(* %)", b"&-*", b"&*"]),
         st.sampled_from([b"", b" RETURN (CHILDREN)", b" RETURN (STATUS (MESSAGES UIDNEXT SIZE))", b" RETURN (X)"])),
    _cmd(b"LSUB ", _mailbox, b" *"),
    _cmd(b"STATUS ", _mailbox, st.sampled_from([b" (MESSAGES UNSEEN)", b" (X)", b" ()", b" (SIZE HIGHESTMODSEQ)"])),
    _append(),
    _cmd(st.sampled_from([b"", b"UID "]), b"FETCH ", _seq, b" ", _fetch_items(),
         st.sampled_from([b"", b" (CHANGEDSINCE 5)", b" (CHANGEDSINCE 5 VANISHED)", b" (VANISHED)", b" (X)"])),
    _cmd(st.sampled_from([b"", b"UID "]), b"STORE ", _seq, b" ",
         st.sampled_from([b"", b"(UNCHANGEDSINCE 7) ", b"(UNCHANGEDSINCE x) "]),
         st.sampled_from([b"FLAGS ", b"+FLAGS ", b"-FLAGS.SILENT ", b"FLAGZ "]), _flags),
    _cmd(st.sampled_from([b"", b"UID "]), st.sampled_from([b"COPY ", b"MOVE "]), _seq, b" ", _mailbox),
    _cmd(b"UID EXPUNGE ", _seq),
    _cmd(st.sampled_from([b"", b"UID "]), b"SEARCH ", _return, _charset, st.one_of(search_program, _deep)),
    _cmd(st.sampled_from([b"", b"UID "]), b"SORT ", _return,
         st.sampled_from([b"(DATE) ", b"(REVERSE ARRIVAL SUBJECT) ", b"(DISPLAYFROM) ", b"() ", b"(BOGUS) "]),
         st.sampled_from([b"UTF-8 ", b"X "]), search_program),
)
_tags = st.sampled_from([b"a1", b"A002", b"x", b"tag.with.dots", b"*", b"+", b"", b"t{1}", b"\xc3\xa9", b"a" * 80])


@st.composite
def imap_unit(draw) -> bytes:
    command = draw(imap_command)
    tag = draw(st.one_of(st.sampled_from([b"a1", b"a2", b"b3"]), _tags))
    unit = tag + b" " + command + b"\r\n"
    if command in (b"IDLE", b"AUTHENTICATE PLAIN", b"AUTHENTICATE LOGIN"):
        unit += draw(st.sampled_from([b"DONE\r\n", b"done\r\n", b"AGFsaWNlAHNlY3JldA==\r\n", b"*\r\n", b"!!\r\n",
                                      b"{3}\r\nabc\r\n", b"YWxpY2U=\r\nc2VjcmV0\r\n"]))
    return unit


@st.composite
def imap_units(draw) -> list[bytes]:
    units = draw(units_script(imap_unit(), limits=LINE_LIMITS))
    if draw(st.integers(0, 49)) == 0:
        units.append(b"z BOGUS\r\n" * (_LIMITS.imap_max_commands_without_progress + 1))
    return units


imap_script = imap_units().map(b"".join)

# ------------------------------------------------------------------------------------------------ the reader


def _decide(event: LiteralAnnounced) -> bool:
    """Deterministic literal decisions (accept most, refuse some) so every read split decides alike."""
    return event.size % 4 != 3


def read_events(reads: list[bytes], limits: ParserLimits, literal_minus: bool) -> list:
    reader = ImapReader(limits, literal_minus=literal_minus)
    out: list = []

    def take(events):
        for e in events:
            if isinstance(e, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
                out[-1] = LiteralChunk(out[-1].data + e.data)
            else:
                out.append(e)
            if isinstance(e, LiteralAnnounced):
                reader.accept_literal() if _decide(e) else reader.reject_literal()

    for chunk in reads:
        take(reader.feed(chunk))
        if not reader.paused:
            # Holds no more than one line, one literal and one command (RFC 7889 / our named limits).
            assert reader.buffered <= limits.max_command + limits.max_line + 2
    return out


def check_frames(events: list, limits: ParserLimits) -> None:
    for e in events:
        if isinstance(e, CommandReady):
            frame = e.frame
            assert len(frame.segments) == len(frame.literals) + 1
            for seg, lit in zip(frame.segments[:-1], frame.literals, strict=True):
                marker = find_marker(seg)
                assert marker is not None, seg[-40:]
                if isinstance(lit, bytes):
                    assert len(lit) == marker[0]
            assert all(b"\n" not in s for s in frame.segments)
            assert all(len(s) <= limits.max_line for s in frame.segments)
            assert sum(len(s) for s in frame.segments) + sum(
                len(x) for x in frame.literals if isinstance(x, bytes)) <= limits.max_command
        elif isinstance(e, CommandRejected):
            assert e.tag is None or all(b in TAG_CHARS for b in e.tag)


def _cmd_tag(frame: Frame) -> str:
    return frame.tag.decode("ascii")


def check_parse(events: list, limits: ParserLimits) -> None:
    """Every frame parses to a command with its tag, or raises ParseError; nothing else."""
    for e in events:
        if isinstance(e, LiteralAnnounced) and e.streamed:
            try:
                prefix = parse_append_prefix(e.prefix, limits=limits)
                assert isinstance(prefix.message.data, StreamedLiteral)
            except ParseError:
                pass
        if not isinstance(e, CommandReady):
            continue
        frame = e.frame
        for utf8 in (False, True):
            try:
                cmd = parse_command(frame, limits=limits, utf8=utf8)
            except ParseError as err:
                assert err.tag == "*" or err.tag == _cmd_tag(frame)
                assert err.status in ("BAD", "NO")
                continue
            assert isinstance(cmd, c.Command)
            assert cmd.tag == _cmd_tag(frame)
            repr(cmd)
            for seq in _seq_sets(cmd):
                again = SeqSet.parse(seq.render(), max_ranges=limits.max_sequence_ranges)
                assert again == seq
                for largest in (0, 1, 7):
                    spans = seq.resolve(largest)
                    assert spans == sorted(spans)
                    assert all(1 <= lo <= hi for lo, hi in spans)
                    assert all(b[0] > a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))
                    assert all(hi <= largest for _, hi in seq.resolve(largest, clip=True))
        is_idle_done(frame)
        try:
            parse_sasl_response(frame)
        except ParseError:
            pass


def _seq_sets(cmd) -> list[SeqSet]:
    out = []
    for name in ("seq_set", "uid_set"):
        v = getattr(cmd, name, None)
        if isinstance(v, SeqSet):
            out.append(v)
    return out


@fuzz(raw=imap_script, small=st.booleans(), literal_minus=st.booleans(), data=st.data())
def test_reader_and_parser_any_reads(raw, small, literal_minus, data):
    """Same events whatever the reads; well-formed frames within the limits; the parser raises only ParseError."""
    limits = SMALL if small else DEFAULT
    whole = read_events([raw], limits, literal_minus)
    check_frames(whole, limits)
    assert read_events(chunks_at(raw, data.draw(split_points(len(raw)))), limits, literal_minus) == whole
    if len(raw) <= 3000:
        assert read_events(byte_by_byte(raw), limits, literal_minus) == whole
    check_parse(whole, limits)


@fuzz(frame=st.tuples(st.sampled_from([b"a1 ", b"a1 UID ", b"t "]), imap_command).map(lambda t: t[0] + t[1]))
def test_parser_on_single_line_frames(frame):
    """The parser straight on a frame, literal markers left in the text (what a confused reader could hand it)."""
    check_parse([CommandReady(Frame((frame.replace(b"\r\n", b" "),)))], SMALL)


# ------------------------------------------------------------------------------------------------ the session


class _Conn:
    def __init__(self):
        self.out = bytearray()
        self.closed = False
        self.tls = self.compress = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def start_tls(self) -> None:
        self.tls += 1

    def start_compress(self) -> None:
        self.compress += 1

    def close(self) -> None:
        self.closed = True

    def set_reading(self, on: bool) -> None:
        pass

    def writable(self):
        return None

    def activity(self, idle: bool = False) -> None:
        pass


class _RefusingAuth:
    """Stands in for the Authenticator before login: every password is wrong (some accounts throttled), so the
    session never leaves NOT AUTHENTICATED and needs no store."""

    def plaintext_allowed(self, client_ip: str, tls_active: bool) -> bool:
        return tls_active or client_ip == "127.0.0.1"

    def authenticate(self, username: str, password: str, client_ip: str):
        reason = "throttled" if username.startswith("t") else "invalid"
        return defer.succeed(SimpleNamespace(ok=False, reason=reason, account_id=None, address=""))


_CONFIG = Config(hostname="mx.example.org", data_dir="/nonexistent")


def run_session(reads: list[bytes], *, client_ip: str, tls: bool, limits: ParserLimits):
    clock = task.Clock()
    server = SimpleNamespace(config=_CONFIG, auth=_RefusingAuth(), reactor=clock, hub=None, astore=None, store=None)
    conn = _Conn()
    s = ImapSession(server, conn, client_ip=client_ip, tls_active=tls, tls_available=not tls, limits=limits)
    s.greeting()
    for chunk in reads:
        s.data_received(chunk)
        clock.advance(0)
    s.connection_lost()
    clock.advance(0)
    return bytes(conn.out), conn


_LINE = re.compile(rb"(\* |\+ |[^ \r\n]+ (?:OK|NO|BAD) )[^\r\n]*\r\n")
_STARTTLS = re.compile(rb"^[^ \r\n]+ starttls *\r?\n", re.I | re.M)  # at line starts: linear


def check_output(out: bytes, raw: bytes) -> None:
    pos = 0
    # A tagged response answers a line that started with its tag: never more of them than such lines.
    sent = Counter(re.findall(rb"(?:^|\n)([^ \r\n]+)(?=[ \r\n])", raw))
    answered: Counter[bytes] = Counter()
    while pos < len(out):
        m = _LINE.match(out, pos)
        assert m, f"malformed response at {pos}: {out[pos:pos + 80]!r}"
        head = m.group(1)
        if head not in (b"* ", b"+ "):
            tag = head.split(b" ")[0]
            assert all(b in TAG_CHARS for b in tag), tag
            answered[tag] += 1
            assert answered[tag] <= sent[tag], f"tagged response with a tag not sent (that often): {tag[:40]!r}"
        pos = m.end()
    assert b"[SERVERBUG]" not in out
    # At most one response per line or literal received, plus greeting and BYE (no amplification).
    n_in = lines_of(raw) + raw.count(b"}")
    assert out.count(b"\r\n") <= 2 * n_in + 3
    assert len(out) <= 600 * (n_in + 3) + 2 * len(raw)


@fuzz(units=imap_units(), client_ip=st.sampled_from(["192.0.2.7", "127.0.0.1"]), tls=st.booleans(),
      small=st.booleans(), data=st.data())
def test_session_before_login_any_reads(units, client_ip, tls, small, data):
    """The session before login: well-formed answers with the right tags, the same whatever the reads, nothing
    logged as a failure (the catch-all answers NO [SERVERBUG] and logs the traceback)."""
    raw = b"".join(units)
    limits = SMALL if small else DEFAULT
    failures = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("log_level") is not None and \
                event["log_level"].name in ("error", "critical"):
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        forced = forced_splits(raw, _STARTTLS)
        whole, conn = run_session(chunks_at(raw, forced), client_ip=client_ip, tls=tls, limits=limits)
        check_output(whole, raw)
        offsets = data.draw(split_points(len(raw)))
        split, _ = run_session(chunks_at(raw, forced + offsets), client_ip=client_ip, tls=tls, limits=limits)
        assert split == whole
        at_units = list(itertools.accumulate(len(u) for u in units))
        one_by_one, _ = run_session(chunks_at(raw, forced + at_units), client_ip=client_ip, tls=tls, limits=limits)
        assert one_by_one == whole
        if len(raw) <= 1500:
            tiny, _ = run_session(chunks_at(raw, forced + list(range(1, len(raw)))), client_ip=client_ip, tls=tls,
                                  limits=limits)
            assert tiny == whole
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not failures, [str(f.get("log_failure") or f.get("log_format")) for f in failures]
