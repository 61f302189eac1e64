"""What each command and test accepts, checked once when a script is compiled (no I/O).

:data:`COMMANDS` and :data:`TESTS` are the one table: the extension that brings each (``require``), its tagged
arguments (by group: one tag of a group at most), its positional arguments and whether it takes tests or a block.
``check(commands)`` fills each node's ``opts`` (group -> (tag, argument)) and ``values`` (the positional ones) or
raises :class:`SieveSyntaxError` at the offending node, so a ManageSieve PUTSCRIPT can answer with a line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.sieve.grammar import Command, Number, SieveSyntaxError, StringList, Tag, Test

#: Every extension a script may ``require`` (the SIEVE capability string of a ManageSieve listener).
EXTENSIONS = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character",
    "comparator-i;octet", "comparator-i;ascii-casemap", "comparator-i;ascii-numeric",
    "copy", "body", "variables", "vacation", "vacation-seconds", "relational", "subaddress", "date", "index",
    "imap4flags", "mailbox", "spamtest", "spamtestplus", "virustest", "include", "duplicate", "editheader",
    "mime", "foreverypart", "extracttext", "replace", "enclose", "regex", "environment",
)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None, "i;ascii-numeric": "comparator-i;ascii-numeric"}
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601", "std11",
              "zone", "weekday")
SET_MODIFIERS = {"lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30, "quotewildcard": 20,
                 "quoteregex": 20, "length": 10}
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ADDRESS = re.compile(r'[^@\s<>()",;]+@[^@\s<>()",;]+')
#: RFC 5293 4: fields a script may not add or delete.
PROTECTED_HEADERS = ("received", "auto-submitted")


@dataclass(frozen=True)
class T:
    """One tagged argument: its group (one per group), the kind of argument after it, the extension it needs."""

    group: str
    arg: str | None = None  # None | "string" | "strings" | "number"
    ext: str | None = None


MATCH = {"is": T("match"), "contains": T("match"), "matches": T("match"), "regex": T("match", ext="regex"),
         "value": T("match", "string", "relational"), "count": T("match", "string", "relational")}
COMPARATOR = {"comparator": T("comparator", "string")}
ADDRESS_PART = {"all": T("address_part"), "localpart": T("address_part"), "domain": T("address_part"),
                "user": T("address_part", ext="subaddress"), "detail": T("address_part", ext="subaddress")}
INDEX = {"index": T("index", "number", "index"), "last": T("last", None, "index")}
MIME = {"mime": T("mime", None, "mime"), "anychild": T("anychild", None, "mime"),
        "type": T("mimeopt", None, "mime"), "subtype": T("mimeopt", None, "mime"),
        "contenttype": T("mimeopt", None, "mime"), "param": T("mimeopt", "strings", "mime")}
ZONE = {"zone": T("zone", "string"), "originalzone": T("zone")}
MATCHING = {**MATCH, **COMPARATOR}


@dataclass(frozen=True)
class Spec:
    ext: str | None
    tags: dict
    positional: tuple[str, ...] = ()
    tests: str = "none"  # none | one | list
    block: bool = False


COMMANDS: dict[str, Spec] = {
    "require": Spec(None, {}, ("strings",)),
    "if": Spec(None, {}, tests="one", block=True),
    "elsif": Spec(None, {}, tests="one", block=True),
    "else": Spec(None, {}, block=True),
    "stop": Spec(None, {}),
    "keep": Spec(None, {"flags": T("flags", "strings", "imap4flags")}),
    "discard": Spec(None, {}),
    "redirect": Spec(None, {"copy": T("copy", None, "copy")}, ("string",)),
    "fileinto": Spec("fileinto", {"copy": T("copy", None, "copy"), "flags": T("flags", "strings", "imap4flags"),
                                  "create": T("create", None, "mailbox")}, ("string",)),
    "reject": Spec("reject", {}, ("string",)),
    "ereject": Spec("ereject", {}, ("string",)),
    "vacation": Spec("vacation", {"days": T("period", "number"), "seconds": T("period", "number", "vacation-seconds"),
                                  "subject": T("subject", "string"), "from": T("from", "string"),
                                  "addresses": T("addresses", "strings"), "mime": T("mime"),
                                  "handle": T("handle", "string")}, ("string",)),
    "set": Spec("variables", {m: T(f"mod-{m}", ext="regex" if m == "quoteregex" else None)
                              for m in SET_MODIFIERS}, ("string", "string")),
    "setflag": Spec("imap4flags", {}, ("strings", "strings?")),
    "addflag": Spec("imap4flags", {}, ("strings", "strings?")),
    "removeflag": Spec("imap4flags", {}, ("strings", "strings?")),
    "include": Spec("include", {"personal": T("location"), "global": T("location"), "once": T("once"),
                                "optional": T("optional")}, ("string",)),
    "return": Spec("include", {}),
    "global": Spec("include", {}, ("strings",)),
    "addheader": Spec("editheader", {"last": T("last")}, ("string", "string")),
    "deleteheader": Spec("editheader", {**MATCHING, **INDEX}, ("string", "strings?")),
    "foreverypart": Spec("foreverypart", {"name": T("name", "string")}, block=True),
    "break": Spec("foreverypart", {"name": T("name", "string")}),
    "replace": Spec("replace", {"mime": T("mime"), "subject": T("subject", "string"), "from": T("from", "string")},
                    ("string",)),
    "enclose": Spec("enclose", {"subject": T("subject", "string"), "headers": T("headers", "strings")}, ("string",)),
    "extracttext": Spec("extracttext", {"first": T("first", "number"),
                                        **{m: T(f"mod-{m}") for m in SET_MODIFIERS if m != "quoteregex"}},
                        ("string",)),
}

TESTS: dict[str, Spec] = {
    "true": Spec(None, {}),
    "false": Spec(None, {}),
    "not": Spec(None, {}, tests="one"),
    "allof": Spec(None, {}, tests="list"),
    "anyof": Spec(None, {}, tests="list"),
    "header": Spec(None, {**MATCHING, **INDEX, **MIME}, ("strings", "strings")),
    "address": Spec(None, {**MATCHING, **ADDRESS_PART, **INDEX, **MIME}, ("strings", "strings")),
    "envelope": Spec("envelope", {**MATCHING, **ADDRESS_PART}, ("strings", "strings")),
    "exists": Spec(None, {**MIME}, ("strings",)),
    "size": Spec(None, {"over": T("size"), "under": T("size")}, ("number",)),
    "body": Spec("body", {**MATCHING, "raw": T("transform"), "content": T("transform", "strings"),
                          "text": T("transform")}, ("strings",)),
    "string": Spec("variables", MATCHING, ("strings", "strings")),
    "date": Spec("date", {**MATCHING, **ZONE, **INDEX}, ("string", "string", "strings")),
    "currentdate": Spec("date", {**MATCHING, "zone": T("zone", "string")}, ("string", "strings")),
    "hasflag": Spec("imap4flags", MATCHING, ("strings", "strings?")),
    "mailboxexists": Spec("mailbox", {}, ("strings",)),
    "spamtest": Spec("spamtest", {**MATCHING, "percent": T("percent", None, "spamtestplus")}, ("string",)),
    "virustest": Spec("virustest", MATCHING, ("string",)),
    "duplicate": Spec("duplicate", {"handle": T("handle", "string"), "header": T("id", "string"),
                                    "uniqueid": T("id", "string"), "seconds": T("seconds", "number"),
                                    "last": T("last")}),
    "environment": Spec("environment", MATCHING, ("string", "strings")),
}


def _err(node, message: str) -> SieveSyntaxError:
    return SieveSyntaxError(message, node.pos.line, node.pos.col)


class _Checker:
    def __init__(self):
        self.required: set[str] = set()
        self.uses_body = False

    def need(self, ext: str | None, node, what: str) -> None:
        if ext is not None and ext not in self.required:
            raise _err(node, f"{what} needs require \"{ext}\"")

    def commands(self, cmds: list[Command], *, top: bool, loop_names: tuple) -> None:
        previous = None
        seen_other = False
        for c in cmds:
            if c.name == "require":
                if not top or seen_other:
                    raise _err(c, "require must come before every other command (RFC 5228 3.2)")
            else:
                seen_other = True
            spec = COMMANDS.get(c.name)
            if spec is None:
                raise _err(c, f"unknown command {c.name!r}")
            self.need(spec.ext, c, f"command {c.name}")
            if c.name in ("elsif", "else") and (previous is None or previous.name not in ("if", "elsif")):
                raise _err(c, f"{c.name} without a preceding if")
            self.node(c, spec, "command")
            if c.name == "require":
                for s in c.values[0]:
                    if s.lower() not in EXTENSIONS:
                        raise _err(c, f"unknown extension {s!r}")
                    self.required.add(s.lower())
                    if s.lower() == "spamtestplus":
                        self.required.add("spamtest")  # RFC 5235 3.2: spamtestplus brings spamtest with it
            if spec.block and c.block is None:
                raise _err(c, f"{c.name} needs a block")
            if not spec.block and c.block is not None:
                raise _err(c, f"{c.name} takes no block")
            self.command_rules(c, loop_names)
            if c.block is not None:
                names = loop_names + ((c.opts.get("name", (None, ""))[1],) if c.name == "foreverypart" else ())
                self.commands(c.block, top=False, loop_names=names)
            previous = c

    def command_rules(self, c: Command, loop_names: tuple) -> None:
        if c.name == "set" or c.name == "extracttext":
            name = c.values[0]
            if not _VARIABLE_NAME.match(name) or "." in name:
                raise _err(c, f"invalid variable name {name!r}")
            if c.name == "extracttext" and not loop_names:
                raise _err(c, "extracttext is only allowed inside foreverypart")
            if c.name == "extracttext" and "variables" not in self.required:
                raise _err(c, "extracttext needs require \"variables\"")
        elif c.name == "break":
            if not loop_names:
                raise _err(c, "break is only allowed inside foreverypart")
            name = c.opts.get("name", (None, None))[1]
            if name is not None and name not in loop_names:
                raise _err(c, f"break :name {name!r}: no enclosing foreverypart has that name")
        elif c.name in ("addheader", "deleteheader"):
            field = c.values[0]
            if not re.fullmatch(r"[!-9;-~]+", field):
                raise _err(c, f"{c.name}: invalid header field name {field!r}")
            if c.name == "deleteheader" and "last" in c.opts and "index" not in c.opts:
                raise _err(c, "deleteheader :last needs :index")
        elif c.name in ("setflag", "addflag", "removeflag") and c.values[1] is not None:
            if "variables" not in self.required:
                raise _err(c, f"{c.name} with a variable name needs require \"variables\"")
        elif c.name == "redirect":
            address = c.values[0]
            if "${" not in address and not _ADDRESS.fullmatch(address.strip()):
                raise _err(c, f"redirect: invalid address {address!r}")
        elif c.name == "enclose" and "headers" in c.opts:
            from mailserver.sieve.mimeedit import MimeEditError, header_field

            for h in c.opts["headers"][1]:
                if "${" not in h:
                    try:
                        header_field(h)
                    except MimeEditError as e:
                        raise _err(c, str(e)) from None
        elif c.name == "global":
            for n in c.values[0]:
                if not _VARIABLE_NAME.match(n):
                    raise _err(c, f"invalid variable name {n!r}")
        elif c.name == "include":
            name = c.values[0]
            if not name or "/" in name or name in (".", ".."):
                raise _err(c, f"include: invalid script name {name!r}")

    def test(self, t: Test) -> None:
        spec = TESTS.get(t.name)
        if spec is None:
            raise _err(t, f"unknown test {t.name!r}")
        self.need(spec.ext, t, f"test {t.name}")
        self.node(t, spec, "test")
        if t.name == "body":
            self.uses_body = True
        if t.name in ("header", "address", "exists") and "mime" not in t.opts:
            if "anychild" in t.opts or "mimeopt" in t.opts:
                raise _err(t, ":anychild, :type, :subtype, :contenttype and :param need :mime")
        if "mime" in t.opts:
            self.uses_body = True
        if "last" in t.opts and "index" not in t.opts and t.name != "duplicate":
            raise _err(t, ":last needs :index")
        if t.name == "hasflag" and t.values[1] is not None and "variables" not in self.required:
            raise _err(t, "hasflag with variable names needs require \"variables\"")

    def node(self, n, spec: Spec, kind: str) -> None:
        opts: dict = {}
        values: list = []
        args = list(n.args)
        i = 0
        while i < len(args):
            a = args[i]
            if isinstance(a, Tag):
                ts = spec.tags.get(a.name)
                if ts is None:
                    raise _err(a, f"{kind} {n.name}: unknown tagged argument :{a.name}")
                self.need(ts.ext, a, f":{a.name}")
                if ts.group in opts:
                    raise _err(a, f"{kind} {n.name}: :{a.name} conflicts with :{opts[ts.group][0]}")
                value = None
                if ts.arg is not None:
                    i += 1
                    if i >= len(args):
                        raise _err(a, f":{a.name} needs an argument")
                    value = self.value(args[i], ts.arg, f":{a.name}")
                opts[ts.group] = (a.name, value)
                i += 1
                continue
            break
        rest = args[i:]
        for a in rest:
            if isinstance(a, Tag):
                raise _err(a, f"{kind} {n.name}: tagged argument :{a.name} after the positional ones")
        expected = [p for p in spec.positional]
        required = [p for p in expected if not p.endswith("?")]
        if len(rest) < len(required) or len(rest) > len(expected):
            where = rest[len(expected)] if len(rest) > len(expected) else n
            raise _err(where, f"{kind} {n.name}: expected {len(required)}"
                       f"{'' if len(required) == len(expected) else f' to {len(expected)}'} positional "
                       f"argument(s), found {len(rest)}")
        for a, k in zip(rest, expected, strict=False):
            values.append(self.value(a, k.rstrip("?"), f"{n.name}"))
        values += [None] * (len(expected) - len(values))  # optional ones not given
        if n.name in ("setflag", "addflag", "removeflag", "hasflag"):
            # RFC 5232: [variable-list] list-of-flags -> values = [flags, variables or None]
            values = [values[1], values[0]] if values[1] is not None else [values[0], None]
        n.opts, n.values = opts, values
        self.tag_rules(n, opts)
        if spec.tests == "none" and n.tests:
            raise _err(n.tests[0], f"{kind} {n.name} takes no test")
        if spec.tests == "one" and len(n.tests) != 1:
            raise _err(n, f"{kind} {n.name} needs exactly one test")
        if spec.tests == "list" and not n.tests:
            raise _err(n, f"{kind} {n.name} needs a test list in parentheses")
        for t in n.tests:
            self.test(t)

    def tag_rules(self, n, opts: dict) -> None:
        comp = opts.get("comparator")
        if comp is not None:
            name = comp[1].lower()
            if name not in COMPARATORS:
                raise _err(n, f"unknown comparator {comp[1]!r}")
            ext = COMPARATORS[name]
            if ext is not None and ext not in self.required:
                raise _err(n, f"comparator {name} needs require \"{ext}\"")
            opts["comparator"] = ("comparator", name)
        match = opts.get("match")
        if comp is not None and opts["comparator"][1] == "i;ascii-numeric" and match is not None and \
                match[0] in ("contains", "matches", "regex"):
            # RFC 4790 9.1: i;ascii-numeric offers equality and ordering only, no substring matching
            raise _err(n, f"comparator i;ascii-numeric cannot do :{match[0]}")
        if match is not None and match[0] in ("value", "count"):
            if match[1].lower() not in RELATIONS:
                raise _err(n, f"unknown relational operator {match[1]!r}")
            opts["match"] = (match[0], match[1].lower())

    def value(self, a, kind: str, what: str):
        if kind == "number":
            if not isinstance(a, Number):
                raise _err(a, f"{what}: expected a number")
            return a.value
        if not isinstance(a, StringList):
            raise _err(a, f"{what}: expected a string{' list' if kind == 'strings' else ''}")
        if "encoded-character" in self.required:
            for s in a.items:
                s.value = decode_encoded_characters(s.value)
        if kind == "string":
            if len(a.items) != 1:
                raise _err(a, f"{what}: expected one string, found a list")
            return a.items[0].value
        return a.values


_ENCODED = re.compile(r"\$\{(hex|unicode):([ \t\r\n0-9A-Fa-f]*)\}", re.I)


def decode_encoded_characters(s: str) -> str:
    """RFC 5228 2.4.2.4: ``${hex:41 42}`` and ``${unicode:263a}``; an invalid sequence is left as written."""
    if "${" not in s:
        return s

    def one(m):
        words = m.group(2).split()
        if not words:
            return m.group()
        try:
            if m.group(1).lower() == "hex":
                return bytes(int(w, 16) for w in words).decode("utf-8")
            cps = [int(w, 16) for w in words]
            if any(c > 0x10FFFF or 0xD800 <= c <= 0xDFFF for c in cps):
                return m.group()
            return "".join(chr(c) for c in cps)
        except (ValueError, UnicodeDecodeError):
            return m.group()

    return _ENCODED.sub(one, s)


def check(cmds: list[Command]) -> set[str]:
    """Validate a parsed script in place; returns the extensions it requires."""
    c = _Checker()
    c.commands(cmds, top=True, loop_names=())
    return c.required
