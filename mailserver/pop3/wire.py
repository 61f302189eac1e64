"""POP3 wire format, sans-IO: command lines in, typed commands out; multi-line bodies encoded as streams.

Nothing here does I/O or imports Twisted.  Three pieces:

* :class:`LineReader` frames the client's byte stream into command lines with a length limit and a limit on
  how much pipelined input may wait unprocessed;
* :func:`parse_command` turns one line into a typed, frozen command object (or raises :class:`SyntaxError_`);
* :class:`DotStuffer` and :class:`TopFilter` encode a message body as an RFC 1939 multi-line response, one
  chunk at a time, correct whatever the chunk boundaries are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CRLF = b"\r\n"

#: RFC 2449 section 4: a command line is at most 255 octets including CRLF; we accept up to
#: ``LimitsConfig.pop3_max_line`` (default 512), which also leaves room for an RFC 5034 initial response.
RFC_MIN_LINE = 255
#: Most unprocessed pipelined input (octets) held while a command is in progress (RFC 2449 section 6.6
#: allows clients to send commands without waiting; this bounds what they can queue).
MAX_PIPELINED = 64 * 1024
#: RFC 1939 section 3: arguments are at most 40 characters; message numbers are checked for at most this
#: many digits (a maildrop of more than 10**10 messages cannot exist).
MAX_NUMBER_DIGITS = 10


class WireError(Exception):
    """The client sent something that cannot be framed or parsed."""


class LineTooLong(WireError):
    """A command line longer than the limit; the reader discards it up to its end."""


class PipelineOverflow(WireError):
    """More unprocessed pipelined input than :data:`MAX_PIPELINED`."""


class SyntaxError_(WireError):  # noqa: N801 - keeps clear of the builtin
    """A line that is not a well-formed command; ``str()`` is the text for the -ERR reply."""


class UnknownCommand(SyntaxError_):
    """A keyword we do not implement."""


# --------------------------------------------------------------------------------------------- framing


class LineReader:
    """Frames a byte stream into lines, on demand.

    ``feed()`` appends received bytes; ``next_line()`` returns the next complete line without its line end
    (CRLF, or a bare LF, which is tolerated), ``None`` when no complete line is buffered, and raises
    :class:`LineTooLong` once for a line whose length including its line end exceeds ``max_line``; the rest of
    that line is then discarded as it arrives.  Lines are pulled one at a time so that a session can stop
    between commands (while an asynchronous command runs, or after STLS when the rest must be thrown away).
    """

    def __init__(self, max_line: int, max_buffer: int = MAX_PIPELINED):
        if max_line < 3:
            raise ValueError("max_line must allow at least one character and CRLF")
        self.max_line = max_line
        self.max_buffer = max(max_buffer, max_line)
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> None:
        """Append ``data`` (the caller checks :meth:`check_backlog` after taking the lines it can)."""
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._discarding = False
            data = data[nl + 1:]
        self._buf += data

    def check_backlog(self) -> None:
        """Raise :class:`PipelineOverflow` if more than ``max_buffer`` octets wait unprocessed."""
        if len(self._buf) > self.max_buffer:
            raise PipelineOverflow(f"more than {self.max_buffer} octets of pipelined input")

    def next_line(self) -> bytes | None:
        nl = self._buf.find(b"\n", 0, self.max_line)
        if nl < 0:
            if len(self._buf) >= self.max_line:
                # No line end within max_line octets: the line, with its terminator, is longer than allowed.
                rest = self._buf.find(b"\n", self.max_line)
                if rest < 0:
                    self._buf.clear()
                    self._discarding = True
                else:
                    del self._buf[:rest + 1]
                raise LineTooLong(f"line longer than {self.max_line} octets")
            return None
        line = bytes(self._buf[:nl])
        del self._buf[:nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def buffered(self) -> int:
        """Octets received and not yet returned as lines."""
        return len(self._buf)

    def clear(self) -> None:
        """Forget everything buffered (RFC 2595 section 4: plaintext received before TLS is discarded)."""
        self._buf.clear()
        self._discarding = False


# --------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class User:
    name: str


@dataclass(frozen=True)
class Pass:
    password: str = field(repr=False)


@dataclass(frozen=True)
class Auth:
    """RFC 5034 AUTH; ``mechanism`` None is the RFC 1734 form that lists mechanisms."""

    mechanism: str | None
    initial_response: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Capa:
    pass


@dataclass(frozen=True)
class Stls:
    pass


@dataclass(frozen=True)
class Stat:
    pass


@dataclass(frozen=True)
class ListCmd:
    msg: int | None


@dataclass(frozen=True)
class Retr:
    msg: int


@dataclass(frozen=True)
class Dele:
    msg: int


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Top:
    msg: int
    lines: int


@dataclass(frozen=True)
class Uidl:
    msg: int | None


@dataclass(frozen=True)
class Apop:
    """Parsed only to be refused: APOP needs plaintext passwords on the server."""


Command = User | Pass | Auth | Capa | Stls | Stat | ListCmd | Retr | Dele | Noop | Rset | Quit | Top | Uidl | Apop


def _number(text: str, what: str, minimum: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_NUMBER_DIGITS:
        raise SyntaxError_(f"invalid {what}")
    n = int(text)
    if n < minimum:
        raise SyntaxError_(f"invalid {what}")
    return n


def _args(rest: str, names: tuple[str, ...], optional: int = 0) -> list[str]:
    """Split ``rest`` into single-space separated arguments (RFC 1939 section 3)."""
    parts = rest.split(" ") if rest else []
    if "" in parts:
        raise SyntaxError_("arguments are separated by a single space")
    if not len(names) - optional <= len(parts) <= len(names):
        raise SyntaxError_("wrong number of arguments")
    return parts


def _no_args(cls):
    def parse(rest: str):
        _args(rest, ())
        return cls()

    return parse


def _msg_and_opt(cls):
    def parse(rest: str):
        parts = _args(rest, ("msg",), optional=1)
        return cls(_number(parts[0], "message number", 1) if parts else None)

    return parse


def _msg(cls):
    def parse(rest: str):
        (msg,) = _args(rest, ("msg",))
        return cls(_number(msg, "message number", 1))

    return parse


def _parse_user(rest: str) -> User:
    name = rest.strip(" ")
    if not name:
        raise SyntaxError_("USER needs a name")
    return User(name)


def _parse_pass(rest: str) -> Pass:
    # RFC 1939 section 7: PASS has exactly one argument, so spaces are part of the password.
    if not rest:
        raise SyntaxError_("PASS needs a password")
    return Pass(rest)


def _parse_auth(rest: str) -> Auth:
    parts = _args(rest, ("mechanism", "initial-response"), optional=2)
    if not parts:
        return Auth(None)
    mech = parts[0].upper()
    if not mech.replace("-", "").replace("_", "").isalnum() or len(mech) > 20:
        raise SyntaxError_("invalid mechanism name")
    # RFC 5034 section 4: an initial response of "=" is a zero-length one; the SASL layer decodes it.
    return Auth(mech, parts[1] if len(parts) == 2 else None)


def _parse_top(rest: str) -> Top:
    msg, lines = _args(rest, ("msg", "n"))
    # RFC 1939 section 7: n is a non-negative number of lines.
    return Top(_number(msg, "message number", 1), _number(lines, "number of lines", 0))


#: Keyword -> parser of the text after "KEYWORD ".  RFC 1939 section 3: keywords are case-insensitive.
PARSERS = {
    "USER": _parse_user,
    "PASS": _parse_pass,
    "AUTH": _parse_auth,
    "APOP": lambda rest: Apop(),
    "CAPA": _no_args(Capa),
    "STLS": _no_args(Stls),
    "STAT": _no_args(Stat),
    "LIST": _msg_and_opt(ListCmd),
    "RETR": _msg(Retr),
    "DELE": _msg(Dele),
    "NOOP": _no_args(Noop),
    "RSET": _no_args(Rset),
    "QUIT": _no_args(Quit),
    "TOP": _parse_top,
    "UIDL": _msg_and_opt(Uidl),
}


#: C0 controls and DEL.  Searched in the octets: no octet of a multi-octet UTF-8 sequence is below 0x80.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


#: The commands of a transaction that take one message number, and their common well-formed shape (trailing spaces
#: tolerated, as below): parsed without the general path.
_NUMBERED = {b"RETR": Retr, b"DELE": Dele, b"LIST": ListCmd, b"UIDL": Uidl}
_NUMBERED_LINE = re.compile(rb"([A-Za-z]{4}) ([0-9]{1,%d}) *" % MAX_NUMBER_DIGITS)


def parse_command(line: bytes) -> Command:
    """Parse one command line (without its line end) into a typed command.

    Raises :class:`UnknownCommand` for an unknown keyword and :class:`SyntaxError_` for bad arguments.
    """
    m = _NUMBERED_LINE.fullmatch(line)
    if m is not None:
        cls = _NUMBERED.get(m[1].upper())
        if cls is not None:
            n = int(m[2])
            if n >= 1:  # else the general path gives the error
                return cls(n)
    return parse_general(line)


def parse_general(line: bytes) -> Command:
    """:func:`parse_command` without its shortcut for the commands that take one message number."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise SyntaxError_("command is not valid UTF-8") from None
    if _CONTROL.search(line) is not None:
        raise SyntaxError_("control characters in command")
    keyword, sep, rest = text.partition(" ")
    keyword = keyword.upper()
    parser = PARSERS.get(keyword)
    if parser is None:
        raise UnknownCommand("unknown command")
    if keyword != "PASS":
        rest = rest.rstrip(" ")  # tolerate trailing spaces some clients send
    return parser(rest)


# --------------------------------------------------------------------------------------------- responses


def ok(text: str = "") -> bytes:
    """A single-line positive response; RFC 2449 section 4: at most 512 octets with CRLF."""
    line = b"+OK " + text.encode("utf-8") if text else b"+OK"
    return line[:510] + CRLF


def err(text: str, code: str | None = None) -> bytes:
    """A negative response; ``code`` is an RFC 2449 section 8 response code such as "IN-USE"."""
    body = f"[{code}] {text}" if code else text
    return (b"-ERR " + body.encode("utf-8"))[:510] + CRLF


def multiline(first: bytes, lines: list[bytes]) -> bytes:
    """A complete multi-line response from short lines (CAPA, LIST, UIDL), dot-stuffed (RFC 1939 section 3)."""
    body = b"".join((b"." + ln if ln.startswith(b".") else ln) + CRLF for ln in lines)
    return first + body + b"." + CRLF


# --------------------------------------------------------------------------------------------- bodies


#: A line that starts with "." (after the first): RFC 1939 section 3's dot-stuffing doubles the dot.  ``sub`` with
#: this pattern gives the same bytes as ``replace(b"\n.", b"\n..")`` in about half the time (5 KB: 6 us against 9.4
#: with 54 dot lines, 2.2 against 4.6 with none; re's literal-prefix search beats bytes.replace's count-then-copy).
_DOT_AFTER_LF = re.compile(rb"\n\.")


class DotStuffer:
    """Streaming encoder of a message body as the data of a multi-line response.

    RFC 1939 section 3: each line of the body that starts with "." gets another "." in front, and the
    response ends with CRLF "." CRLF.  The encoder remembers whether the previous chunk ended a line, so a
    "." at the start of a chunk is stuffed exactly when it starts a line, whatever the chunk boundaries.
    A body that does not end with a line end gets CRLF before the terminator.
    """

    def __init__(self) -> None:
        self._at_line_start = True
        self.octets_in = 0
        self.finished = False

    def encode(self, chunk: bytes) -> bytes:
        if self.finished:
            raise ValueError("encode() after finish()")
        if not chunk:
            return b""
        self.octets_in += len(chunk)
        out = _DOT_AFTER_LF.sub(b"\n..", chunk)
        if self._at_line_start and chunk[0] == 0x2E:  # "."
            out = b"." + out
        self._at_line_start = chunk[-1] == 0x0A  # "\n"
        return out

    def finish(self) -> bytes:
        """The end of the response: CRLF (if the body did not end a line) and "." CRLF."""
        self.finished = True
        return (b"" if self._at_line_start else CRLF) + b"." + CRLF


def stuff_whole(body: bytes) -> bytes:
    """A whole body as the data of a multi-line response, terminator included: what :class:`DotStuffer`'s
    ``encode(body) + finish()`` returns, in one pass over the body."""
    if not body:
        return b"." + CRLF
    out = _DOT_AFTER_LF.sub(b"\n..", body)
    if body[0] == 0x2E:  # "."
        out = b"." + out
    return out + (b".\r\n" if body[-1] == 0x0A else b"\r\n.\r\n")


class TopFilter:
    """Streaming cut of a message to its header, the blank line, and the first ``lines`` body lines.

    RFC 1939 section 7 (TOP).  ``feed()`` returns the part of each chunk to send; once ``done`` is true the
    rest of the message is not needed.  A message without a blank line is all header and passes whole.
    """

    def __init__(self, lines: int):
        if lines < 0:
            raise ValueError("lines must be non-negative")
        self._lines_left = lines
        self._in_header = True
        self._line_prefix = b""  # the first (up to 3) octets of the header line in progress
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        pos = 0
        while self._in_header:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                if len(self._line_prefix) < 3:
                    self._line_prefix += chunk[pos:pos + 3 - len(self._line_prefix)]
                return chunk
            line_start = self._line_prefix + chunk[pos:nl + 1][:3]
            self._line_prefix = b""
            pos = nl + 1
            if line_start in (b"\n", b"\r\n"):  # RFC 5322 2.1: the empty line ends the header
                self._in_header = False
        while self._lines_left > 0:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                return chunk
            pos = nl + 1
            self._lines_left -= 1
        self.done = True
        return chunk[:pos]


def uidl_for(uid_validity: int, uid: int) -> str:
    """The RFC 1939 section 7 unique-id of a message: stable across sessions and never reused.

    IMAP guarantees (uid_validity, uid) is never reused for different content in a mailbox (RFC 9051
    2.3.1.1), so "<uid_validity>.<uid>" inherits that; it is 3 to 21 characters of 0x21..0x7E (limit: 70).
    """
    return f"{uid_validity}.{uid}"


class BodyEncoder:
    """RETR (``top_lines`` None) or TOP body encoder: :class:`TopFilter` then :class:`DotStuffer`.

    ``encode(chunk)`` returns the octets to send for each chunk of the stored message, ``finish()`` the
    terminator; ``done`` turns true when TOP has all it needs (the caller may stop reading).
    """

    def __init__(self, top_lines: int | None = None):
        self._top = TopFilter(top_lines) if top_lines is not None else None
        self._stuffer = DotStuffer()

    @property
    def done(self) -> bool:
        return self._top is not None and self._top.done

    def encode(self, chunk: bytes) -> bytes:
        if self._top is not None:
            chunk = self._top.feed(chunk)
        return self._stuffer.encode(chunk)

    def finish(self) -> bytes:
        return self._stuffer.finish()
