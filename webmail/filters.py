"""The webmail's filters as data, and the readable Sieve script they are written as (no I/O, no Twisted).

:class:`Filters` holds rules (conditions on from/to/subject/a header/size/body; actions file into, mark read, flag,
forward, reject, discard, stop), vacation (on/off, start and end dates, subject and text, only to my contacts) and
forwarding (addresses, keep a copy or not).  :func:`render` writes them as one Sieve script; :func:`parse` reads a
script back into :class:`Filters` **only if** rendering the result gives the script back character for character,
else it returns None and the webmail shows the script as raw Sieve: a script written or edited by hand is never
rewritten by the editor, so nothing in it is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailserver.sieve.grammar import Number, SieveSyntaxError, StringList, Tag
from mailserver.sieve.grammar import parse as parse_sieve

HEADER_LINE = "# Filters of the webmail (Settings, Filters). Edited by hand, the script is shown there as raw Sieve."

TEXT_FIELDS = ("from", "to", "subject", "header", "body")
FIELDS = TEXT_FIELDS + ("size",)
TEXT_OPS = ("contains", "not_contains", "is", "not_is")
SIZE_OPS = ("over", "under")
ACTIONS = ("fileinto", "read", "flag", "forward", "reject", "discard", "stop")
#: Actions that need an argument.
WITH_ARG = ("fileinto", "forward", "reject")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,100}\Z")  # RFC 5322 2.2 field-name


class FilterError(ValueError):
    """A rule the form cannot be turned into (shown to the user)."""


@dataclass(frozen=True)
class Condition:
    field: str  # FIELDS
    op: str  # TEXT_OPS, or SIZE_OPS for size
    value: str  # for size: a number of bytes
    header: str = ""  # the field name when field == "header"


@dataclass(frozen=True)
class Action:
    kind: str  # ACTIONS
    arg: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()
    match: str = "all"  # "all" | "any"


@dataclass(frozen=True)
class Vacation:
    enabled: bool = False
    subject: str = ""
    text: str = ""
    start: str = ""  # YYYY-MM-DD or ""
    end: str = ""
    contacts_only: bool = False
    #: The contacts' addresses when the script was written (what "only reply to my contacts" compares with).
    contacts: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.enabled or self.subject or self.text or self.start or self.end or self.contacts_only)


@dataclass(frozen=True)
class Forwarding:
    addresses: tuple[str, ...] = ()
    keep: bool = True


@dataclass(frozen=True)
class Filters:
    rules: tuple[Rule, ...] = ()
    vacation: Vacation = field(default_factory=Vacation)
    forwarding: Forwarding = field(default_factory=Forwarding)


# --------------------------------------------------------------------------------------------- checks


def check_rule(rule: Rule) -> Rule:
    """Validate one rule and put its actions in the order Sieve needs (flags before filing, stop last)."""
    name = rule.name.strip()
    if not name or "\n" in name or "\r" in name or len(name) > 200:
        raise FilterError("a rule needs a name of one line (at most 200 characters)")
    for c in rule.conditions:
        if c.field not in FIELDS:
            raise FilterError(f"unknown condition {c.field!r}")
        if c.field == "size":
            if c.op not in SIZE_OPS or not c.value.isdigit() or int(c.value) >= 2**32:
                raise FilterError("a size condition needs a number of bytes")
        elif c.op not in TEXT_OPS:
            raise FilterError(f"unknown comparison {c.op!r}")
        if c.field == "header" and not _HEADER_NAME.match(c.header):
            raise FilterError("a header condition needs a field name")
    if not rule.actions:
        raise FilterError(f"rule {name!r} has no action")
    for a in rule.actions:
        if a.kind not in ACTIONS:
            raise FilterError(f"unknown action {a.kind!r}")
        if a.kind in WITH_ARG and not a.arg.strip():
            raise FilterError(f"the action {a.kind} of rule {name!r} needs a value")
        if a.kind == "forward" and ("@" not in a.arg or any(ch.isspace() for ch in a.arg.strip())):
            raise FilterError(f"forward to an address, not {a.arg!r}")
    order = {"read": 0, "flag": 0, "stop": 2}
    actions = tuple(sorted(rule.actions, key=lambda a: order.get(a.kind, 1)))
    return Rule(name, tuple(rule.conditions), actions, "any" if rule.match == "any" else "all")


def check_vacation(v: Vacation) -> Vacation:
    for d in (v.start, v.end):
        if d and not _DATE.match(d):
            raise FilterError("dates are YYYY-MM-DD")
    if v.enabled and not v.text.strip():
        raise FilterError("the vacation reply needs a text")
    if "\n" in v.subject or "\r" in v.subject:
        raise FilterError("the subject is one line")
    return v


# --------------------------------------------------------------------------------------------- render


def quote(s: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): backslash and double quote escaped; line breaks kept."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _strings(values) -> str:
    values = list(values)
    return quote(values[0]) if len(values) == 1 else "[" + ", ".join(quote(v) for v in values) + "]"


def _test(c: Condition, req: set[str]) -> str:
    if c.field == "size":
        return f"size :{c.op} {int(c.value)}"
    negate = c.op.startswith("not_")
    match = ":is" if c.op.endswith("is") else ":contains"
    if c.field in ("from", "to"):
        t = f"address {match} {quote(c.field)} {quote(c.value)}"
    elif c.field == "subject":
        t = f"header {match} \"subject\" {quote(c.value)}"
    elif c.field == "header":
        t = f"header {match} {quote(c.header)} {quote(c.value)}"
    else:
        req.add("body")
        t = f"body :text {match} {quote(c.value)}"
    return "not " + t if negate else t


def _tests(tests: list[str], combine: str = "allof") -> str:
    if not tests:
        return "true"
    if len(tests) == 1:
        return tests[0]
    return f"{combine} (" + ", ".join(tests) + ")"


def _action(a: Action, req: set[str]) -> str:
    if a.kind == "fileinto":
        req.add("fileinto")
        return f"fileinto {quote(a.arg)};"
    if a.kind == "read":
        req.add("imap4flags")
        return 'addflag "\\\\Seen";'
    if a.kind == "flag":
        req.add("imap4flags")
        return 'addflag "\\\\Flagged";'
    if a.kind == "forward":
        req.add("copy")
        return f"redirect :copy {quote(a.arg.strip())};"
    if a.kind == "reject":
        req.add("reject")
        return f"reject {quote(a.arg)};"
    return f"{a.kind};"  # discard, stop


def render(f: Filters) -> str:
    req: set[str] = set()
    sections: list[str] = []
    v = f.vacation
    if not v.empty:
        req.add("vacation")
        tests = [] if v.enabled else ["false"]
        if v.start or v.end:
            req.update(("date", "relational"))
        if v.start:
            tests.append(f'currentdate :value "ge" "date" {quote(v.start)}')
        if v.end:
            tests.append(f'currentdate :value "le" "date" {quote(v.end)}')
        if v.contacts_only:
            tests.append(f'address :is "from" {_strings(v.contacts or ("",))}')
        reply = "vacation " + (f":subject {quote(v.subject)} " if v.subject else "") + quote(v.text) + ";"
        sections.append(f"# Vacation{'' if v.enabled else ' (off)'}\nif {_tests(tests)} {{\n  {reply}\n}}\n")
    if f.forwarding.addresses:
        if f.forwarding.keep:
            req.add("copy")
        tag = ":copy " if f.forwarding.keep else ""
        lines = "".join(f"redirect {tag}{quote(a)};\n" for a in f.forwarding.addresses)
        sections.append(f"# Forwarding{'' if f.forwarding.keep else ' (no copy kept)'}\n{lines}")
    for r in f.rules:
        test = _tests([_test(c, req) for c in r.conditions], "anyof" if r.match == "any" else "allof")
        body = "".join(f"  {_action(a, req)}\n" for a in r.actions)
        sections.append(f"# Rule: {r.name}\nif {test} {{\n{body}}}\n")
    head = HEADER_LINE + "\n"
    if req:
        head += f"require {_strings(sorted(req))};\n"
    return head + "".join("\n" + s for s in sections)


# --------------------------------------------------------------------------------------------- parse


class _NotOurs(Exception):
    pass


def _values(arg) -> list[str]:
    if not isinstance(arg, StringList):
        raise _NotOurs()
    return arg.values


def _one(arg) -> str:
    v = _values(arg)
    if len(v) != 1:
        raise _NotOurs()
    return v[0]


def _condition(t) -> Condition:
    negate = t.name == "not"
    if negate:
        (t,) = t.tests
    a = t.args
    if t.name == "size":
        op, n = a
        if not isinstance(op, Tag) or not isinstance(n, Number):
            raise _NotOurs()
        return Condition("size", op.name, str(n.value))
    tags = [x.name for x in a if isinstance(x, Tag)]
    rest = [x for x in a if not isinstance(x, Tag)]
    match = tags[-1] if tags else ""
    if match not in ("is", "contains"):
        raise _NotOurs()
    op = ("not_" if negate else "") + match
    if t.name == "address":
        return Condition(_one(rest[0]), op, _one(rest[1]))
    if t.name == "header":
        name, value = _one(rest[0]), _one(rest[1])
        if name == "subject":
            return Condition("subject", op, value)
        return Condition("header", op, value, header=name)
    if t.name == "body":
        return Condition("body", op, _one(rest[0]))
    raise _NotOurs()


def _conditions(t) -> tuple[str, list]:
    if t.name == "true":
        return "all", []
    if t.name in ("allof", "anyof"):
        return ("all" if t.name == "allof" else "any"), list(t.tests)
    return "all", [t]


def _actions(block) -> tuple[Action, ...]:
    out = []
    for c in block:
        if c.name == "fileinto":
            out.append(Action("fileinto", _one(c.args[-1])))
        elif c.name == "addflag":
            flag = _one(c.args[-1])
            out.append(Action({"\\Seen": "read", "\\Flagged": "flag"}[flag]))
        elif c.name == "redirect":
            out.append(Action("forward", _one(c.args[-1])))
        elif c.name == "reject":
            out.append(Action("reject", _one(c.args[-1])))
        elif c.name in ("discard", "stop"):
            out.append(Action(c.name))
        else:
            raise _NotOurs()
    return tuple(out)


def _vacation(cmd, enabled: bool) -> Vacation:
    _, tests = _conditions(cmd.tests[0])
    if not enabled:
        if not tests or tests[0].name != "false":
            raise _NotOurs()
        tests = tests[1:]
    start = end = ""
    contacts: tuple[str, ...] = ()
    contacts_only = False
    for t in tests:
        if t.name == "currentdate":
            rel, date = _one(t.args[1]), _one(t.args[3])
            if rel == "ge":
                start = date
            else:
                end = date
        elif t.name == "address":
            contacts_only = True
            contacts = tuple(v for v in _values(t.args[-1]) if v)
        else:
            raise _NotOurs()
    (reply,) = cmd.block
    subject = ""
    args = reply.args
    if len(args) == 3:
        subject = _one(args[1])
    return Vacation(enabled, subject, _one(args[-1]), start, end, contacts_only, contacts)


def parse(text: str) -> Filters | None:
    """The filters a script was rendered from, or None when :func:`render` would not give ``text`` back."""
    if not text.startswith(HEADER_LINE + "\n"):
        return None
    try:
        commands = parse_sieve(text)
    except SieveSyntaxError:
        return None
    lines = text.split("\n")
    rules: list[Rule] = []
    vacation = Vacation()
    forwarding = Forwarding()
    forwards: list[str] = []
    try:
        for cmd in commands:
            if cmd.name == "require":
                continue
            label = lines[cmd.pos.line - 2] if cmd.pos.line >= 2 else ""
            if cmd.name == "redirect":
                forwards.append(_one(cmd.args[-1]))
                forwarding = Forwarding(tuple(forwards), any(isinstance(a, Tag) for a in cmd.args))
            elif cmd.name == "if" and label.startswith("# Vacation"):
                vacation = _vacation(cmd, label == "# Vacation")
            elif cmd.name == "if" and label.startswith("# Rule: "):
                match, tests = _conditions(cmd.tests[0])
                rules.append(Rule(label[len("# Rule: "):], tuple(_condition(t) for t in tests),
                                  _actions(cmd.block), match))
            else:
                return None
        filters = Filters(tuple(rules), vacation, forwarding)
    except (_NotOurs, ValueError, IndexError, KeyError, AttributeError, TypeError):
        return None
    return filters if render(filters) == text else None
