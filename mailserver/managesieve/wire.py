"""ManageSieve wire format (RFC 5804 4), sans-IO: bytes in, typed commands out; replies as bytes.

A command is one line of tokens ended by CRLF: an atom (the command name, case-insensitive), quoted strings
(``"..."``, at most :data:`MAX_QUOTED` octets, ``\\"`` and ``\\\\`` the only escapes), literals (``{n+}`` CRLF then
n octets; ``{n}`` is taken as well, as Dovecot does: there is no continuation request in ManageSieve) and numbers
(32-bit unsigned). :class:`CommandReader` buffers what arrived and hands out one :class:`Line` at a time:

* a line segment (outside literals) longer than ``max_line`` octets is :class:`LineTooLong` (the session says BYE:
  there is no safe place to resume);
* a literal longer than ``max_literal`` is :class:`LiteralTooLarge`, raised as soon as its ``{n+}`` is read; the
  reader then discards the n octets and the rest of that line as they arrive (never buffering them), so the
  connection goes on with the next command.

:func:`parse_command` turns a line into one of the typed commands below (one table, :data:`COMMANDS`), raising
:class:`No` for what the client got wrong.  Replies are built by :func:`ok`, :func:`no`, :func:`bye` and
:func:`string`.  No Twisted, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 5804 4: ``quoted = <"> *1024QUOTED-CHAR <">``.
MAX_QUOTED = 1024
#: RFC 5804 4: ``number = 1*DIGIT`` "a 32-bit unsigned number".
MAX_NUMBER = 4294967295
#: Tokens in one command (the longest command, RENAMESCRIPT, has three).
MAX_TOKENS = 8

# RFC 5804 1.3 response codes.
AUTH_TOO_WEAK = "AUTH-TOO-WEAK"
ENCRYPT_NEEDED = "ENCRYPT-NEEDED"
QUOTA = "QUOTA"
QUOTA_MAXSCRIPTS = "QUOTA/MAXSCRIPTS"
QUOTA_MAXSIZE = "QUOTA/MAXSIZE"
TRANSITION_NEEDED = "TRANSITION-NEEDED"
TRYLATER = "TRYLATER"
ACTIVE = "ACTIVE"
NONEXISTENT = "NONEXISTENT"
ALREADYEXISTS = "ALREADYEXISTS"
WARNINGS = "WARNINGS"


class WireError(Exception):
    pass


class LineTooLong(WireError):
    pass


class LiteralTooLarge(WireError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"literal of {size} octets is larger than {limit}")
        self.size, self.limit = size, limit


class No(Exception):
    """A command fails: the session answers ``NO [(code)] "text"`` and goes on."""

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text, self.code = text, code


# --------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Atom:
    value: str


@dataclass(frozen=True)
class String:
    """A quoted string or a literal, as octets (decoded by the command that takes it)."""

    data: bytes
    literal: bool = False


Token = Atom | String | int


@dataclass(frozen=True)
class Line:
    tokens: tuple[Token, ...]


class CommandReader:
    """Buffers client bytes; :meth:`next_line` returns the next complete command line, or None."""

    def __init__(self, max_line: int, max_literal: int):
        self.max_line = max_line
        self.max_literal = max_literal
        self._buf = bytearray()
        self._tokens: list[Token] = []
        self._literal: int | None = None  # octets of the literal being read
        self._literal_is_string = True
        self._skip = 0  # octets of a refused literal still to discard
        self._skip_line = False  # then discard up to the end of that line

    def feed(self, data: bytes) -> None:
        if self._skip or self._skip_line:
            data = self._discard(data)
        self._buf += data

    def clear(self) -> None:
        """Forget everything buffered (RFC 5804 2.2: nothing sent before TLS is read after it)."""
        self._buf.clear()
        self._tokens.clear()
        self._literal = None
        self._skip = 0
        self._skip_line = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_command(self) -> bool:
        """Part of a command has arrived (a literal is being received)."""
        return bool(self._tokens) or self._literal is not None or bool(self._buf)

    def _discard(self, data: bytes) -> bytes:
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if self._skip:
                return b""
        if self._skip_line:
            i = data.find(b"\n")
            if i < 0:
                return b""
            self._skip_line = False
            data = data[i + 1:]
        return data

    def next_line(self) -> Line | None:
        while True:
            if self._literal is not None:
                n = self._literal
                if len(self._buf) < n:
                    return None
                self._tokens.append(String(bytes(self._buf[:n]), literal=True))
                del self._buf[:n]
                self._literal = None
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self.max_line:
                    self.clear()
                    raise LineTooLong(f"line longer than {self.max_line} octets")
                return None
            if i + 1 > self.max_line:
                self.clear()
                raise LineTooLong(f"line longer than {self.max_line} octets")
            segment = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if segment.endswith(b"\r"):
                segment = segment[:-1]
            try:
                literal = _tokenize(segment, self._tokens)
                if len(self._tokens) > MAX_TOKENS:
                    raise No(f"more than {MAX_TOKENS} arguments")
            except No:
                self._tokens = []
                if literal_size(segment) is not None:
                    self._skip_refused(literal_size(segment))
                raise
            if literal is None:
                tokens, self._tokens = tuple(self._tokens), []
                return Line(tokens)
            if literal > self.max_literal:
                self._tokens = []
                self._skip_refused(literal)
                raise LiteralTooLarge(literal, self.max_literal)
            self._literal = literal

    def _skip_refused(self, size: int) -> None:
        """Discard a refused literal of ``size`` octets and the rest of its line, as they arrive."""
        self._skip, self._skip_line = size, True
        rest = self._discard(bytes(self._buf))
        self._buf = bytearray(rest)


def literal_size(segment: bytes) -> int | None:
    """The n of a segment ending in ``{n+}`` or ``{n}``, or None."""
    if not segment.endswith(b"}"):
        return None
    i = segment.rfind(b"{")
    digits = segment[i + 1:-1].rstrip(b"+")
    if i < 0 or not digits.isdigit() or len(digits) > 10:
        return None
    return int(digits)


def _tokenize(segment: bytes, tokens: list[Token]) -> int | None:
    """Append the tokens of one line segment; the size of the literal it announces at its end, or None."""
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == 0x20:
            i += 1
            continue
        if c == 0x22:  # '"'
            out = bytearray()
            i += 1
            while True:
                if i >= n:
                    raise No("unterminated quoted string")
                c = segment[i]
                if c == 0x22:
                    i += 1
                    break
                if c == 0x5C:  # RFC 5804 4: QUOTED-CHAR = SAFE-UTF8-CHAR / "\" QUOTED-SPECIALS
                    if i + 1 >= n or segment[i + 1] not in (0x22, 0x5C):
                        raise No("bad escape in quoted string")
                    i += 1
                    c = segment[i]
                elif c in (0x0D, 0x00):
                    raise No("CR or NUL in quoted string")
                out.append(c)
                i += 1
                if len(out) > MAX_QUOTED:
                    raise No(f"quoted string longer than {MAX_QUOTED} octets: use a literal")
            tokens.append(String(bytes(out)))
            continue
        if c == 0x7B:  # '{'
            size = literal_size(segment[i:])
            if size is None:
                raise No("bad literal")
            if size > MAX_NUMBER:
                raise No("literal size is not a 32-bit number")
            return size
        j = segment.find(b" ", i)
        j = n if j < 0 else j
        word = segment[i:j]
        i = j
        if word.isdigit():
            value = int(word)
            if len(word) > 10 or value > MAX_NUMBER:
                raise No("number is not a 32-bit unsigned number")
            tokens.append(value)
        elif all(0x21 <= b < 0x7F and b not in b'"{}()\\' for b in word):
            tokens.append(Atom(word.decode("ascii")))
        else:
            raise No("unexpected characters")
    return None


# --------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Capability:
    pass


@dataclass(frozen=True)
class StartTls:
    pass


@dataclass(frozen=True)
class Authenticate:
    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True)
class Logout:
    pass


@dataclass(frozen=True)
class Noop:
    tag: str | None


@dataclass(frozen=True)
class Unauthenticate:
    pass


@dataclass(frozen=True)
class HaveSpace:
    name: str
    size: int


@dataclass(frozen=True)
class PutScript:
    name: str
    script: str


@dataclass(frozen=True)
class CheckScript:
    script: str


@dataclass(frozen=True)
class ListScripts:
    pass


@dataclass(frozen=True)
class SetActive:
    name: str  # "" deactivates


@dataclass(frozen=True)
class GetScript:
    name: str


@dataclass(frozen=True)
class DeleteScript:
    name: str


@dataclass(frozen=True)
class RenameScript:
    old: str
    new: str


Command = (Capability | StartTls | Authenticate | Logout | Noop | Unauthenticate | HaveSpace | PutScript
           | CheckScript | ListScripts | SetActive | GetScript | DeleteScript | RenameScript)

STR, OPT_STR, NUM = "string", "optional string", "number"

#: name -> (command class, argument kinds).
COMMANDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "CAPABILITY": (Capability, ()),
    "STARTTLS": (StartTls, ()),
    "AUTHENTICATE": (Authenticate, (STR, OPT_STR)),
    "LOGOUT": (Logout, ()),
    "NOOP": (Noop, (OPT_STR,)),
    "UNAUTHENTICATE": (Unauthenticate, ()),
    "HAVESPACE": (HaveSpace, (STR, NUM)),
    "PUTSCRIPT": (PutScript, (STR, STR)),
    "CHECKSCRIPT": (CheckScript, (STR,)),
    "LISTSCRIPTS": (ListScripts, ()),
    "SETACTIVE": (SetActive, (STR,)),
    "GETSCRIPT": (GetScript, (STR,)),
    "DELETESCRIPT": (DeleteScript, (STR,)),
    "RENAMESCRIPT": (RenameScript, (STR, STR)),
}


def utf8(s: String, what: str) -> str:
    try:
        return s.data.decode("utf-8")
    except UnicodeDecodeError:
        raise No(f"{what} is not UTF-8") from None


def parse_command(line: Line) -> Command:
    """The typed command of a line; :class:`No` for an unknown command or wrong arguments."""
    if not line.tokens or not isinstance(line.tokens[0], Atom):
        raise No("expected a command name")
    name = line.tokens[0].value.upper()
    entry = COMMANDS.get(name)
    if entry is None:
        raise No(f"unknown command {name[:32]}")
    cls, kinds = entry
    args = line.tokens[1:]
    required = sum(1 for k in kinds if k != OPT_STR)
    if not required <= len(args) <= len(kinds):
        raise No(f"{name} takes {required if required == len(kinds) else f'{required} to {len(kinds)}'} "
                 f"argument{'s' if len(kinds) != 1 else ''}")
    values: list = []
    for kind, arg in zip(kinds, args, strict=False):
        if kind == NUM:
            if not isinstance(arg, int):
                raise No(f"{name}: expected a number")
            values.append(arg)
        elif not isinstance(arg, String):
            raise No(f"{name}: expected a string")
        else:
            values.append(arg)
    values += [None] * (len(kinds) - len(values))
    if cls is Authenticate:
        return Authenticate(utf8(values[0], "mechanism"), values[1].data if values[1] is not None else None)
    if cls is PutScript:
        return PutScript(utf8(values[0], "script name"), utf8(values[1], "script"))
    if cls is CheckScript:
        return CheckScript(utf8(values[0], "script"))
    if cls is HaveSpace:
        return HaveSpace(utf8(values[0], "script name"), values[1])
    if cls is Noop:
        return Noop(utf8(values[0], "tag") if values[0] is not None else None)
    if cls is RenameScript:
        return RenameScript(utf8(values[0], "script name"), utf8(values[1], "script name"))
    if cls in (SetActive, GetScript, DeleteScript):
        return cls(utf8(values[0], "script name"))
    return cls()


# --------------------------------------------------------------------------------------------- replies


def string(s: str | bytes) -> bytes:
    """A string as the server sends it: quoted when it can be (short, no CR/LF/NUL), else a literal."""
    data = s.encode("utf-8") if isinstance(s, str) else s
    if len(data) <= MAX_QUOTED and not any(b in data for b in (b"\r", b"\n", b"\0")):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def literal(s: str | bytes) -> bytes:
    """A literal ``{n}`` CRLF octets: how a script goes out (GETSCRIPT), whatever its length, as clients expect."""
    data = s.encode("utf-8") if isinstance(s, str) else s
    return b"{%d}\r\n" % len(data) + data


def _response(word: bytes, text: str, code: str | None, code_arg: str | None = None) -> bytes:
    out = word
    if code:
        out += b" (" + code.encode("ascii") + (b" " + string(code_arg) if code_arg is not None else b"") + b")"
    if text:
        out += b" " + string(text)
    return out + b"\r\n"


def ok(text: str = "", code: str | None = None, code_arg: str | None = None) -> bytes:
    return _response(b"OK", text, code, code_arg)


def no(text: str = "", code: str | None = None) -> bytes:
    return _response(b"NO", text, code)


def bye(text: str = "", code: str | None = None) -> bytes:
    return _response(b"BYE", text, code)
