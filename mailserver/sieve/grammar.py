"""The Sieve language (RFC 5228 section 8): tokens and the parse tree, with the line and column of every node.

Our own parser rather than sievelib's: ManageSieve PUTSCRIPT and ``mailserver sieve check`` report errors by line
and column, and the parser must refuse hostile nesting before it recurses (:data:`MAX_NESTING`).  No I/O, no
Twisted: ``parse(text) -> list[Command]`` or :class:`SieveSyntaxError`.

Strings are kept as written (escapes undone, multi-line dot-unstuffed); what the extensions do to them
(encoded-character, variables) happens in ``validate.py`` and at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Blocks and tests may nest this deep (Pigeonhole allows 32 of each); one more is a syntax error.
MAX_NESTING = 32
#: Most items in one string list and most tests in one test list.
MAX_LIST_ITEMS = 1024
#: RFC 5228 2.4.1: numbers are unsigned 32-bit (larger ones, with their quantifier, are an error).
MAX_NUMBER = 2**32 - 1


class SieveSyntaxError(Exception):
    """A script that is not valid Sieve: ``line`` and ``col`` (1-based, in characters) say where."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(f"line {line}, column {col}: {message}")
        self.message = message
        self.line = line
        self.col = col


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass
class String:
    value: str
    pos: Pos
    multiline: bool = False


@dataclass
class StringList:
    items: list[String]
    pos: Pos
    bracketed: bool = True

    @property
    def values(self) -> list[str]:
        return [s.value for s in self.items]


@dataclass
class Number:
    value: int
    pos: Pos


@dataclass
class Tag:
    name: str  # without the colon, lower-cased
    pos: Pos


@dataclass
class Test:
    name: str  # lower-cased identifier
    args: list  # StringList | Number | Tag
    tests: list["Test"]
    pos: Pos
    #: Filled by validate.py: tagged arguments by name and the positional values.
    opts: dict = field(default_factory=dict)
    values: list = field(default_factory=list)


@dataclass
class Command:
    name: str
    args: list
    tests: list[Test]
    block: list["Command"] | None
    pos: Pos
    opts: dict = field(default_factory=dict)
    values: list = field(default_factory=list)


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*)
  | (?P<multiline>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<quoted>")
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[;,()\[\]{}])
""", re.X)

_QUANTIFIER = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_QUOTED_STOP = re.compile(r'["\\]')
_MULTILINE_END = re.compile(r"(?m)^\.\r?$\n?")
_DOT_STUFFED = re.compile(r"(?m)^\.\.")


@dataclass
class _Tok:
    kind: str  # ident, tag, number, string, punct, eof
    value: object
    pos: Pos
    multiline: bool = False


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def _pos(self, i: int) -> Pos:
        line = self.text.count("\n", 0, i) + 1
        return Pos(line, i - (self.text.rfind("\n", 0, i) + 1) + 1)

    def error(self, message: str, i: int) -> SieveSyntaxError:
        p = self._pos(i)
        return SieveSyntaxError(message, p.line, p.col)

    def tokens(self):
        text = self.text
        # Positions are counted incrementally: line of self.i and where that line starts.
        line, line_start = 1, 0

        def advance(j: int):
            nonlocal line, line_start
            n = text.count("\n", self.i, j)
            if n:
                line += n
                line_start = text.rindex("\n", self.i, j) + 1
            self.i = j

        while True:
            pos = Pos(line, self.i - line_start + 1)
            if self.i >= len(text):
                yield _Tok("eof", None, pos)
                return
            m = _TOKEN.match(text, self.i)
            if m is None:
                raise SieveSyntaxError(f"unexpected character {text[self.i]!r}", pos.line, pos.col)
            kind = m.lastgroup
            start = self.i
            if kind in ("ws", "hash"):
                advance(m.end())
            elif kind == "bracket":
                end = text.find("*/", m.end())
                if end < 0:
                    raise SieveSyntaxError("unterminated comment /* ... */", pos.line, pos.col)
                advance(end + 2)
            elif kind == "quoted":
                value, end = self._quoted(start, pos)
                advance(end)
                yield _Tok("string", value, pos)
            elif kind == "multiline":
                end_m = _MULTILINE_END.search(text, m.end())
                if end_m is None:
                    raise SieveSyntaxError('unterminated multi-line string (no line with "." alone)', pos.line,
                                           pos.col)
                raw = text[m.end():end_m.start()]
                advance(end_m.end())
                # RFC 5228 2.4.2: a line starting with "." has it doubled (dot-stuffing).
                yield _Tok("string", _DOT_STUFFED.sub(".", raw), pos, multiline=True)
            else:
                advance(m.end())
                value = m.group()
                if kind == "number":
                    q = _QUANTIFIER.get(value[-1].lower(), 1)
                    n = int(value.rstrip("KkMmGg")) * q
                    if n > MAX_NUMBER:
                        raise SieveSyntaxError("number too large (at most 4G - 1)", pos.line, pos.col)
                    yield _Tok("number", n, pos)
                elif kind == "tag":
                    yield _Tok("tag", value[1:].lower(), pos)
                elif kind == "ident":
                    yield _Tok("ident", value.lower(), pos)
                else:
                    yield _Tok("punct", value, pos)

    def _quoted(self, start: int, pos: Pos) -> tuple[str, int]:
        text, out, i = self.text, [], start + 1
        while True:
            j = _QUOTED_STOP.search(text, i)
            if j is None or (text[j.start()] == "\\" and j.start() + 1 >= len(text)):
                raise SieveSyntaxError("unterminated string", pos.line, pos.col)
            k = j.start()
            out.append(text[i:k])
            if text[k] == '"':
                return "".join(out), k + 1
            out.append(text[k + 1])  # RFC 5228 2.4.2: "\\" and "\"" escape; any other "\x" is "x"
            i = k + 2


class _Parser:
    def __init__(self, text: str):
        self._toks = _Lexer(text).tokens()
        self.tok = next(self._toks)

    def _next(self) -> _Tok:
        t = self.tok
        self.tok = next(self._toks)
        return t

    def _err(self, message: str, tok: _Tok | None = None) -> SieveSyntaxError:
        t = tok or self.tok
        return SieveSyntaxError(message, t.pos.line, t.pos.col)

    def _is(self, value: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == value

    def _describe(self) -> str:
        t = self.tok
        if t.kind == "eof":
            return "end of script"
        if t.kind == "string":
            return "a string"
        if t.kind == "tag":
            return f"tag :{t.value}"
        return f"{t.value!r}"

    def commands(self, depth: int) -> list[Command]:
        out = []
        while self.tok.kind != "eof" and not self._is("}"):
            out.append(self.command(depth))
        return out

    def command(self, depth: int) -> Command:
        t = self.tok
        if t.kind != "ident":
            raise self._err(f"expected a command, found {self._describe()}")
        self._next()
        args, tests = self.arguments(depth)
        if self._is(";"):
            self._next()
            return Command(t.value, args, tests, None, t.pos)
        if self._is("{"):
            if depth >= MAX_NESTING:
                raise self._err(f"blocks nested deeper than {MAX_NESTING}")
            self._next()
            block = self.commands(depth + 1)
            if not self._is("}"):
                raise self._err(f"expected '}}', found {self._describe()}")
            self._next()
            return Command(t.value, args, tests, block, t.pos)
        raise self._err(f"expected ';' or '{{' after {t.value}, found {self._describe()}")

    def arguments(self, depth: int) -> tuple[list, list[Test]]:
        args: list = []
        while True:
            t = self.tok
            if t.kind == "string":
                self._next()
                args.append(StringList([String(t.value, t.pos, t.multiline)], t.pos, bracketed=False))
            elif self._is("["):
                args.append(self.string_list())
            elif t.kind == "number":
                self._next()
                args.append(Number(t.value, t.pos))
            elif t.kind == "tag":
                self._next()
                args.append(Tag(t.value, t.pos))
            else:
                break
        tests: list[Test] = []
        if self.tok.kind == "ident":
            tests = [self.test(depth + 1)]
        elif self._is("("):
            tests = self.test_list(depth + 1)
        return args, tests

    def string_list(self) -> StringList:
        start = self._next()
        items = []
        while True:
            t = self.tok
            if t.kind != "string":
                raise self._err(f"expected a string in the list, found {self._describe()}")
            self._next()
            items.append(String(t.value, t.pos, t.multiline))
            if len(items) > MAX_LIST_ITEMS:
                raise self._err(f"more than {MAX_LIST_ITEMS} strings in a list", t)
            if self._is(","):
                self._next()
                continue
            if self._is("]"):
                self._next()
                return StringList(items, start.pos)
            raise self._err(f"expected ',' or ']', found {self._describe()}")

    def test(self, depth: int) -> Test:
        t = self.tok
        if depth > MAX_NESTING:
            raise self._err(f"tests nested deeper than {MAX_NESTING}")
        if t.kind != "ident":
            raise self._err(f"expected a test, found {self._describe()}")
        self._next()
        args, tests = self.arguments(depth)
        return Test(t.value, args, tests, t.pos)

    def test_list(self, depth: int) -> list[Test]:
        if depth > MAX_NESTING:
            raise self._err(f"tests nested deeper than {MAX_NESTING}")
        self._next()
        tests = [self.test(depth)]
        while self._is(","):
            self._next()
            tests.append(self.test(depth))
            if len(tests) > MAX_LIST_ITEMS:
                raise self._err(f"more than {MAX_LIST_ITEMS} tests in a list")
        if not self._is(")"):
            raise self._err(f"expected ',' or ')', found {self._describe()}")
        self._next()
        return tests


def parse(text: str) -> list[Command]:
    """The commands of a script, or :class:`SieveSyntaxError` with the line and column of the first error."""
    p = _Parser(text)
    cmds = p.commands(0)
    if p.tok.kind != "eof":
        raise p._err(f"unexpected {p._describe()}")
    return cmds
