"""IMAP command framing and tokenizing, sans-IO (RFC 3501 / RFC 9051 section 9, RFC 7888).

Framing
-------
``ImapReader(limits: ParserLimits, *, literal_minus: bool = False, stream_commands=("APPEND",))``

- ``feed(data: bytes) -> Iterator[Event]``: buffer ``data`` and return :meth:`events`.
- ``events() -> Iterator[Event]``: a *lazy* iterator over the events the buffered bytes make. Nothing past the
  event just returned is interpreted, so after ``CommandReady`` for STARTTLS (or COMPRESS) the session can stop
  iterating and call ``discard_buffer()``: pipelined plaintext is never executed (CVE-2011-0411 class).
- ``next_event() -> Event | None``: one event, or None when more bytes are needed or the reader is paused.
- ``accept_literal()`` / ``reject_literal()``: answer a :class:`LiteralAnnounced` (the reader is paused until one of
  them is called). Accept: the session sends ``+ Ready`` if ``event.synchronizing``. Reject: the session answers the
  tagged NO/BAD itself; for a synchronising literal the command is dropped (the client sends nothing more of it), for
  a non-synchronising one the reader swallows the announced bytes and the rest of the command without storing them.
- ``discard_buffer() -> int``: drop buffered, uninterpreted bytes (after STARTTLS); returns how many.
- ``paused``, ``discarding`` (skipping the rest of a rejected command), ``buffered`` (bytes held).

Events (frozen dataclasses):

- ``CommandReady(frame: Frame)``: one complete command.
- ``LiteralAnnounced(tag, command, size, synchronizing, binary, streamed, prefix: Frame)``: emitted for every
  synchronising literal and for every streamed literal (the message data of APPEND, whatever its form).
  ``prefix`` holds the command up to and including the literal marker (its last segment ends with the marker).
- ``LiteralChunk(data: bytes)`` ... ``LiteralEnd()``: the data of an accepted streamed literal, in the order
  received, never buffered whole. The frame of the final ``CommandReady`` holds a ``StreamedLiteral(size, binary)``
  placeholder in that literal's slot.
- ``CommandRejected(tag, reason: RejectReason, size: int | None)``: the reader gave up on a command (line longer
  than ``max_line``, literal larger than ``max_literal``, buffered command larger than ``max_command``, or with
  ``literal_minus`` a non-synchronising literal over 4096 octets). It is emitted once the rest of the command has
  been skipped, so it keeps its place among pipelined commands. ``tag`` is None when none could be read.

A :class:`Frame` is ``segments`` (command text without CRLF, split at literals) and ``literals``: every segment
but the last ends with a literal marker (``{n}``, ``{n+}``, ``~{n}``, ``~{n+}``) whose data is
``literals[i]``. Example: ``a LOGIN {4}\\r\\nfred {3+}\\r\\nabc\\r\\n`` is
``Frame((b"a LOGIN {4}", b" {3+}", b""), (b"fred", b"abc"))``. Bare LF is accepted as a line end.

Tokenizing
----------
``Tokenizer(frame, limits=DEFAULT_LIMITS, tag="*")`` walks a frame for the parsers: ``peek() -> bytes`` (b"" at a
segment end), ``at_end()``, ``expect_end()``, ``sp()``, ``take(b) -> bool`` (ASCII case-insensitive),
``expect(b)``, ``atom() -> bytes``, ``astring() -> bytes``, ``string() -> bytes``, ``nstring() -> bytes | None``,
``quoted() -> bytes``, ``literal() -> (bytes | StreamedLiteral, binary: bool)``, ``at_literal() -> bool``,
``list_mailbox() -> bytes``, ``number(nz=False) -> int`` (32 bit), ``number64(nz=False) -> int`` (63 bit),
``tag_token() -> bytes``, ``open_paren()`` / ``close_paren()`` (nesting limit), ``error(msg) -> ParseError``.

Helpers: ``tag_of(line) -> bytes | None`` (RFC 3501 9 tag), ``find_marker(line) -> (size, synchronizing, binary)
| None`` (a literal marker ending ``line`` outside a quoted string); character sets ``ATOM_CHARS``,
``ASTRING_CHARS``, ``LIST_CHARS``, ``TAG_CHARS`` (frozensets of octets). ``Frame.tag`` and ``Frame.line`` (the text
of a frame without literals, e.g. IDLE's ``DONE`` or a SASL response line).

Errors: :class:`ParseError(tag, message, status="BAD", code=None)`; the session answers
``<tag> <status> [<code>] <message>``.

Limits: :class:`ParserLimits` (``max_line``, ``max_literal``, ``max_command``, ``max_nesting``,
``max_sequence_ranges``), built with ``ParserLimits.from_config(config.limits)``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

# RFC 7888 4: with LITERAL- only non-synchronising literals of at most 4096 octets are allowed.
LITERAL_MINUS_MAX = 4096

# A literal marker at the very end of a line (RFC 3501 9 literal, RFC 7888 literal+, RFC 3516 literal8).
_MARKER_RE = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_SKIP_TAIL = 32
#: Octets at the start of an over-long line in which its tag must end to be echoed: the whole line is never
#: buffered, so the reply must not depend on how much of it had arrived.
_TAG_WINDOW = 100


@dataclass(frozen=True)
class ParserLimits:
    """Every limit the wire layer enforces (see mailserver.config.LimitsConfig)."""

    max_line: int = 65536  # octets of one line, without CRLF
    max_literal: int = 50 * 1024 * 1024  # octets of one literal
    max_command: int = 1024 * 1024  # octets of one command held in memory (streamed literals not counted)
    max_nesting: int = 32  # parenthesis depth
    max_sequence_ranges: int = 10000  # comma-separated elements of one sequence set

    @classmethod
    def from_config(cls, limits, *, max_command: int | None = None) -> ParserLimits:
        """Build from a ``LimitsConfig``; ``max_command`` defaults to max(1 MiB, 2 * imap_max_line)."""
        return cls(
            max_line=limits.imap_max_line,
            max_literal=limits.imap_max_literal,
            max_command=max_command if max_command is not None else max(1024 * 1024, 2 * limits.imap_max_line),
            max_nesting=limits.imap_max_nesting,
            max_sequence_ranges=limits.imap_max_sequence_ranges,
        )


DEFAULT_LIMITS = ParserLimits()


class ParseError(Exception):
    """The client sent something the grammar does not allow: answered ``<tag> BAD <message>`` (or NO + code)."""

    def __init__(self, tag: str, message: str, *, status: str = "BAD", code: str | None = None):
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"ParseError({self.tag!r}, {self.message!r}, status={self.status!r}, code={self.code!r})"


@dataclass(frozen=True)
class StreamedLiteral:
    """Stands in a frame for a literal whose data went out as LiteralChunk events."""

    size: int
    binary: bool


@dataclass(frozen=True)
class Frame:
    """One command as received: text segments split at literals (see the module docstring)."""

    segments: tuple[bytes, ...]
    literals: tuple[bytes | StreamedLiteral, ...] = ()

    @property
    def tag(self) -> bytes | None:
        """The tag if the frame starts with a well-formed one, else None."""
        return tag_of(self.segments[0]) if self.segments else None

    @property
    def line(self) -> bytes | None:
        """The whole text of a frame without literals (IDLE's DONE, SASL responses), else None."""
        return self.segments[0] if len(self.segments) == 1 else None


def tag_of(line: bytes) -> bytes | None:
    """RFC 3501 9: tag = 1*<any ASTRING-CHAR except "+">; the tag of a line, or None."""
    head = line.split(b" ", 1)[0]
    return head if head and all(b in TAG_CHARS for b in head) else None


class RejectReason(enum.Enum):
    LINE_TOO_LONG = "line too long"
    LITERAL_TOO_LARGE = "literal too large"
    COMMAND_TOO_LARGE = "command too large"
    NON_SYNC_LITERAL_TOO_LARGE = "non-synchronizing literal over 4096 octets"


@dataclass(frozen=True)
class CommandReady:
    frame: Frame


@dataclass(frozen=True)
class LiteralAnnounced:
    tag: bytes | None
    command: bytes  # upper-cased command name, b"" if none
    size: int
    synchronizing: bool
    binary: bool  # literal8 (RFC 3516 / RFC 9051 ~{n})
    streamed: bool
    prefix: Frame


@dataclass(frozen=True)
class LiteralChunk:
    data: bytes


@dataclass(frozen=True)
class LiteralEnd:
    pass


@dataclass(frozen=True)
class CommandRejected:
    tag: bytes | None
    reason: RejectReason
    size: int | None = None


Event = CommandReady | LiteralAnnounced | LiteralChunk | LiteralEnd | CommandRejected


def find_marker(line: bytes) -> tuple[int, bool, bool] | None:
    """(size, synchronizing, binary) if ``line`` ends with a literal marker outside a quoted string."""
    if not line.endswith(b"}"):
        return None
    m = _MARKER_RE.search(line)
    if m is None:
        return None
    if _inside_quotes(line, m.start()):
        return None
    return int(m.group(2)), m.group(3) != b"+", m.group(1) == b"~"


def _inside_quotes(line: bytes, end: int) -> bool:
    """RFC 3501 9: is offset ``end`` inside a quoted string (DQUOTE, with backslash escapes)?"""
    if b'"' not in line[:end]:
        return False
    inside = False
    i = 0
    while i < end:
        c = line[i]
        if inside and c == 0x5C:  # backslash escapes the next character inside a quoted string
            i += 2
            continue
        if c == 0x22:
            inside = not inside
        i += 1
    return inside


class _State(enum.Enum):
    LINE = 1
    LITERAL = 2
    STREAM = 3
    PAUSED = 4
    SKIP_LITERAL = 5
    SKIP_LINE = 6


class ImapReader:
    """Turns received bytes into command frames; see the module docstring for the contract."""

    def __init__(
        self,
        limits: ParserLimits = DEFAULT_LIMITS,
        *,
        literal_minus: bool = False,
        stream_commands: tuple[str, ...] = ("APPEND",),
    ):
        self.limits = limits
        self.literal_minus = literal_minus
        self._stream_commands = frozenset(c.upper().encode() for c in stream_commands)
        self._buf = bytearray()
        self._pos = 0  # bytes before _pos are consumed; compacted lazily so pipelining stays linear
        self._scan_from = 0  # offset in _buf up to which the current line has no LF
        self._state = _State.LINE
        self._remaining = 0
        self._reset_command()
        self._pending: tuple[int, bool, bool, bool] | None = None  # size, sync, binary, streamed
        self._reject: CommandRejected | None = None
        self._skip_tail = b""

    # -- public API -----------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> Iterator[Event]:
        self._buf += data
        return self.events()

    def events(self) -> Iterator[Event]:
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    @property
    def paused(self) -> bool:
        return self._state is _State.PAUSED

    @property
    def discarding(self) -> bool:
        return self._state in (_State.SKIP_LINE, _State.SKIP_LITERAL)

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def discard_buffer(self) -> int:
        """Drop bytes received but not yet interpreted (RFC 3207 / RFC 9051 6.2.1: after STARTTLS)."""
        n = self.buffered
        self._clear()
        return n

    def accept_literal(self) -> None:
        if self._state is not _State.PAUSED or self._pending is None:
            raise RuntimeError("no literal is waiting for a decision")
        size, _sync, binary, streamed = self._pending
        self._pending = None
        self._remaining = size
        self._state = _State.STREAM if streamed else _State.LITERAL

    def reject_literal(self) -> None:
        if self._state is not _State.PAUSED or self._pending is None:
            raise RuntimeError("no literal is waiting for a decision")
        size, sync, _binary, _streamed = self._pending
        self._pending = None
        self._reset_command()
        if sync:
            # RFC 3501 7.5: the client waits for "+"; a tagged reply ends the command instead.
            self._state = _State.LINE
        else:
            # RFC 7888 4: the data is already on its way: read and drop it and the rest of the command.
            self._reject = None
            self._start_skip_literal(size)

    def next_event(self) -> Event | None:
        while True:
            state = self._state
            if state is _State.PAUSED:
                return None
            if state is _State.LINE:
                event, progressed = self._step_line()
            elif state is _State.LITERAL:
                event, progressed = self._step_literal()
            elif state is _State.STREAM:
                event, progressed = self._step_stream()
            elif state is _State.SKIP_LITERAL:
                event, progressed = self._step_skip_literal()
            else:
                event, progressed = self._step_skip_line()
            if event is not None:
                return event
            if not progressed:
                return None

    # -- buffer ---------------------------------------------------------------------------------------------
    def _clear(self) -> None:
        self._buf.clear()
        self._pos = 0
        self._scan_from = 0

    def _consume(self, n: int) -> None:
        self._pos += n
        if self._pos >= len(self._buf):
            self._clear()
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._scan_from = max(0, self._scan_from - self._pos)
            self._pos = 0

    # -- states ---------------------------------------------------------------------------------------------
    def _reset_command(self) -> None:
        self._segments: list[bytes] = []
        self._literals: list[bytes | StreamedLiteral] = []
        self._size = 0

    def _frame(self) -> Frame:
        return Frame(tuple(self._segments), tuple(self._literals))

    def _command_tag(self, text: bytes) -> bytes | None:
        first = self._segments[0] if self._segments else text
        return tag_of(first)

    def _long_line_tag(self, start: bytes) -> bytes | None:
        """The tag of a command refused for an over-long line: taken from the command's first line when that was
        complete, else only if it ends (with SP) within the first _TAG_WINDOW octets (never a truncated tag)."""
        if self._segments:
            return tag_of(self._segments[0])
        head, sep, _ = start[: min(_TAG_WINDOW, self.limits.max_line + 1)].partition(b" ")
        return tag_of(head) if sep else None

    def _command_name(self) -> bytes:
        parts = self._segments[0].split(b" ", 2) if self._segments else []
        if len(parts) < 2:
            return b""
        return re.sub(rb"~?\{[0-9]+\+?\}\Z", b"", parts[1]).upper()

    def _step_line(self) -> tuple[Event | None, bool]:
        buf = self._buf
        pos = self._pos
        lf = buf.find(b"\n", max(pos, self._scan_from))
        if lf < 0:
            # +1: a line of exactly max_line octets may still be waiting for its CR LF.
            if len(buf) - pos > self.limits.max_line + 1:
                self._reject = CommandRejected(
                    self._long_line_tag(bytes(buf[pos : pos + _TAG_WINDOW])), RejectReason.LINE_TOO_LONG
                )
                self._reset_command()
                self._skip_tail = bytes(buf[-_SKIP_TAIL:])
                self._clear()
                self._state = _State.SKIP_LINE
                return None, True
            self._scan_from = len(buf)
            return None, False
        end = lf - 1 if lf > pos and buf[lf - 1] == 0x0D else lf
        line = bytes(buf[pos:end])
        self._scan_from = 0
        self._consume(lf + 1 - pos)
        marker = find_marker(line)
        if len(line) > self.limits.max_line:
            return self._reject_line(line, marker, RejectReason.LINE_TOO_LONG)
        self._size += len(line)
        if self._size > self.limits.max_command:
            return self._reject_line(line, marker, RejectReason.COMMAND_TOO_LARGE)
        self._segments.append(line)
        if marker is None:
            frame = self._frame()
            self._reset_command()
            return CommandReady(frame), True
        size, sync, binary = marker
        tag = self._command_tag(line)
        name = self._command_name()
        streamed = name in self._stream_commands and not self._is_mailbox_literal(name)
        reason = None
        if size > self.limits.max_literal:
            reason = RejectReason.LITERAL_TOO_LARGE
        elif not streamed and self._size + size > self.limits.max_command:
            reason = RejectReason.COMMAND_TOO_LARGE
        elif not sync and self.literal_minus and size > LITERAL_MINUS_MAX:
            reason = RejectReason.NON_SYNC_LITERAL_TOO_LARGE  # RFC 7888 4
        if reason is not None:
            self._reset_command()
            rejected = CommandRejected(tag, reason, size)
            if sync:
                # RFC 9051 7.1.5 / RFC 7889: answer before the client sends the data; the command is over.
                return rejected, True
            self._reject = rejected
            self._start_skip_literal(size)
            return None, True
        if sync or streamed:
            self._pending = (size, sync, binary, streamed)
            self._state = _State.PAUSED
            return LiteralAnnounced(tag, name, size, sync, binary, streamed, self._frame()), True
        self._remaining = size
        self._state = _State.LITERAL
        return None, True

    def _is_mailbox_literal(self, name: bytes) -> bool:
        """Is the literal being announced the mailbox argument (first argument) of the command?"""
        if len(self._segments) != 1:
            return False
        parts = self._segments[0].split(b" ", 2)
        return len(parts) == 3 and _MARKER_RE.fullmatch(parts[2]) is not None

    def _reject_line(self, line: bytes, marker, reason: RejectReason) -> tuple[Event | None, bool]:
        tag = self._long_line_tag(line) if reason is RejectReason.LINE_TOO_LONG else self._command_tag(line)
        self._reset_command()
        rejected = CommandRejected(tag, reason, None)
        if marker is not None and not marker[1]:
            # The non-synchronising literal that follows is data, never commands: skip it too.
            self._reject = rejected
            self._start_skip_literal(marker[0])
            return None, True
        return rejected, True

    def _step_literal(self) -> tuple[Event | None, bool]:
        if self.buffered < self._remaining:
            return None, False
        data = bytes(self._buf[self._pos : self._pos + self._remaining])
        self._consume(self._remaining)
        self._literals.append(data)
        self._size += len(data)
        self._state = _State.LINE
        return None, True

    def _step_stream(self) -> tuple[Event | None, bool]:
        if self._remaining == 0:
            marker = find_marker(self._segments[-1])
            size, _sync, binary = marker if marker else (0, True, False)
            self._literals.append(StreamedLiteral(size, binary))
            self._state = _State.LINE
            return LiteralEnd(), True
        if not self.buffered:
            return None, False
        n = min(self.buffered, self._remaining)
        data = bytes(self._buf[self._pos : self._pos + n])
        self._consume(n)
        self._remaining -= n
        return LiteralChunk(data), True

    def _start_skip_literal(self, size: int) -> None:
        self._remaining = size
        self._skip_tail = b""
        self._state = _State.SKIP_LITERAL

    def _step_skip_literal(self) -> tuple[Event | None, bool]:
        if self._remaining == 0:
            self._skip_tail = b""
            self._state = _State.SKIP_LINE
            return None, True
        if not self.buffered:
            return None, False
        n = min(self.buffered, self._remaining)
        self._consume(n)
        self._remaining -= n
        return None, True

    def _step_skip_line(self) -> tuple[Event | None, bool]:
        buf = self._buf
        pos = self._pos
        lf = buf.find(b"\n", pos)
        if lf < 0:
            if not self.buffered:
                return None, False
            self._skip_tail = (self._skip_tail + bytes(buf[max(pos, len(buf) - _SKIP_TAIL) :]))[-_SKIP_TAIL:]
            self._clear()
            return None, False
        tail = (self._skip_tail + bytes(buf[max(pos, lf - _SKIP_TAIL) : lf]))[-_SKIP_TAIL:]
        self._consume(lf + 1 - pos)
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        m = _MARKER_RE.search(tail)
        if m is not None and m.group(3) == b"+":
            # The rejected command goes on with another non-synchronising literal: skip that too.
            self._start_skip_literal(int(m.group(2)))
            return None, True
        self._state = _State.LINE
        self._skip_tail = b""
        rejected, self._reject = self._reject, None
        return rejected, True


# -- tokenizing ---------------------------------------------------------------------------------------------

def _charset(excluded: bytes, extra: bytes = b"") -> frozenset[int]:
    return frozenset(c for c in range(0x01, 0x80) if c >= 0x20 and c != 0x7F and c not in excluded) | frozenset(
        extra
    )


# RFC 3501 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
ATOM_CHARS = _charset(b'(){ %*"\\]')
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ASTRING_CHARS | {ord("%"), ord("*")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
DIGITS = frozenset(b"0123456789")
_FULL_MARKER_RE = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}")


class Tokenizer:
    """A cursor over a :class:`Frame` with the RFC 3501 9 lexical rules."""

    def __init__(self, frame: Frame, limits: ParserLimits = DEFAULT_LIMITS, tag: str = "*"):
        self.segments = frame.segments or (b"",)
        self.literals = frame.literals
        self.limits = limits
        self.tag = tag
        self.i = 0
        self.p = 0
        self.depth = 0

    # -- basics
    def error(self, message: str) -> ParseError:
        return ParseError(self.tag, message)

    @property
    def _seg(self) -> bytes:
        return self.segments[self.i]

    def peek(self) -> bytes:
        return self._seg[self.p : self.p + 1]

    def at_end(self) -> bool:
        return self.i == len(self.segments) - 1 and self.p >= len(self._seg)

    def expect_end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters at end of command")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("expected SP")
        self.p += 1

    def take(self, text: bytes) -> bool:
        """Consume ``text`` (ASCII case-insensitive) if it comes next."""
        seg = self._seg
        if seg[self.p : self.p + len(text)].upper() == text.upper():
            self.p += len(text)
            return True
        return False

    def expect(self, text: bytes, what: str | None = None) -> None:
        if not self.take(text):
            raise self.error(f"expected {what or text.decode()}")

    def read_chars(self, allowed: frozenset[int]) -> bytes:
        seg = self._seg
        start = p = self.p
        n = len(seg)
        while p < n and seg[p] in allowed:
            p += 1
        self.p = p
        return seg[start:p]

    def atom(self, what: str = "atom") -> bytes:
        value = self.read_chars(ATOM_CHARS)
        if not value:
            raise self.error(f"expected {what}")
        return value

    def tag_token(self) -> bytes:
        value = self.read_chars(TAG_CHARS)
        if not value:
            raise self.error("missing or invalid tag")
        return value

    def number(self, *, nz: bool = False, maximum: int = 0xFFFFFFFF) -> int:
        """RFC 3501 9 number / nz-number: unsigned 32-bit."""
        digits = self.read_chars(DIGITS)
        if not digits or len(digits) > 20:
            raise self.error("expected number")
        value = int(digits)
        if value > maximum:
            raise self.error("number out of range")
        if nz and value == 0:
            raise self.error("expected non-zero number")
        return value

    def number64(self, *, nz: bool = False) -> int:
        """RFC 9051 9 number64: 0 .. 2^63-1."""
        return self.number(nz=nz, maximum=2**63 - 1)

    # -- nesting
    def open_paren(self) -> None:
        self.expect(b"(")
        self.depth += 1
        if self.depth > self.limits.max_nesting:
            raise self.error("too deeply nested")

    def close_paren(self) -> None:
        self.expect(b")")
        self.depth -= 1

    # -- strings
    def at_literal(self) -> bool:
        if self.i >= len(self.literals) or self.peek() not in (b"{", b"~"):
            return False
        return _FULL_MARKER_RE.fullmatch(self._seg, self.p) is not None

    def literal(self, *, allow_binary: bool = False) -> tuple[bytes | StreamedLiteral, bool]:
        """RFC 3501 9 literal / RFC 7888 literal+ / RFC 3516 literal8: the data and whether it was literal8."""
        if not self.at_literal():
            raise self.error("expected literal")
        m = _FULL_MARKER_RE.fullmatch(self._seg, self.p)
        binary = m.group(1) == b"~"
        if binary and not allow_binary:
            raise self.error("literal8 not allowed here")
        data = self.literals[self.i]
        self.i += 1
        self.p = 0
        if isinstance(data, bytes) and not binary and b"\x00" in data:
            # RFC 3501 9: CHAR8 excludes NUL in a literal; only literal8 may carry it.
            raise self.error("NUL in literal")
        return data, binary

    def quoted(self) -> bytes:
        """RFC 3501 9 quoted, with RFC 9051 UTF-8 allowed; returns the unescaped content."""
        seg = self._seg
        if self.peek() != b'"':
            raise self.error("expected quoted string")
        p = self.p + 1
        out = bytearray()
        n = len(seg)
        while p < n:
            c = seg[p]
            if c == 0x22:
                self.p = p + 1
                return bytes(out)
            if c == 0x5C:
                if p + 1 < n and seg[p + 1] in (0x22, 0x5C):
                    out.append(seg[p + 1])
                    p += 2
                    continue
                raise self.error("invalid escape in quoted string")
            if c in (0x00, 0x0D, 0x0A):
                raise self.error("invalid character in quoted string")
            out.append(c)
            p += 1
        raise self.error("unterminated quoted string")

    def string(self) -> bytes:
        if self.peek() == b'"':
            return self.quoted()
        data, _ = self.literal()
        if isinstance(data, StreamedLiteral):
            raise self.error("unexpected streamed literal")
        return data

    def astring(self, what: str = "astring") -> bytes:
        c = self.peek()
        if c == b'"' or self.at_literal():
            return self.string()
        value = self.read_chars(ASTRING_CHARS)
        if not value:
            raise self.error(f"expected {what}")
        return value

    def nstring(self) -> bytes | None:
        if self.take_word(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """RFC 3501 9 list-mailbox = 1*list-char / string."""
        c = self.peek()
        if c == b'"' or self.at_literal():
            return self.string()
        value = self.read_chars(LIST_CHARS)
        if not value:
            raise self.error("expected mailbox pattern")
        return value

    def take_word(self, word: bytes) -> bool:
        """Consume ``word`` only if it is a whole atom (not the prefix of a longer one)."""
        seg = self._seg
        end = self.p + len(word)
        if seg[self.p : end].upper() != word.upper():
            return False
        if end < len(seg) and seg[end] in ASTRING_CHARS:
            return False
        self.p = end
        return True
