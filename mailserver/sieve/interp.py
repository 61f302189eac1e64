"""The evaluator: a compiled script and the message facts in, a :class:`~mailserver.sieve.actions.Result` out.

Sans-IO: everything outside the message comes in through :class:`Env` (the time, the account's mailboxes, the
duplicate-tracking lookup, spam and virus verdicts, the environment items), so tests need no sockets, no store
and no clock.  Every limit of :class:`Limits` ends the run with ``Result.error`` set and no actions: the caller
then keeps the message in INBOX (implicit keep) and logs why.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from typing import Callable

from mailserver.sieve import match as mt
from mailserver.sieve import mimeedit
from mailserver.sieve.actions import Discard, FileInto, Keep, Redirect, Reject, Result, Vacation
from mailserver.sieve.grammar import Command, Test
from mailserver.sieve.message import MessageFacts, Part, addresses, parse_header, split_address, split_message
from mailserver.sieve.validate import DATE_PARTS, PROTECTED_HEADERS


@dataclass(frozen=True)
class Limits:
    """Bounds of one script and of one run (``[sieve]`` in the configuration sets them)."""

    max_script_size: int = 1 << 20  # bytes of one script (Pigeonhole: sieve_max_script_size = 1M)
    max_scripts: int = 32  # scripts per account
    max_storage: int = 8 << 20  # bytes of all of an account's scripts
    max_actions: int = 32  # actions of one run (Pigeonhole: sieve_max_actions)
    max_redirects: int = 4  # redirects of one message (Pigeonhole: sieve_max_redirects)
    max_steps: int = 200_000  # commands, tests and comparisons of one run (our CPU bound)
    max_include_depth: int = 10  # include nesting (Pigeonhole: sieve_include_max_nesting_depth)
    max_includes: int = 255  # scripts included in one run (Pigeonhole: sieve_include_max_includes)
    max_variable_size: int = 4096  # characters of one variable (Pigeonhole: sieve_variables_max_variable_size)
    max_variables: int = 255  # variables of one scope
    regex_timeout: float = 1.0  # seconds one :regex match may take (wall clock)
    vacation_min_period: int = 86400  # RFC 5230 4.1: at least a day unless the site chooses otherwise
    vacation_max_period: int = 0  # 0 = no upper bound
    vacation_default_period: int = 7 * 86400
    duplicate_default_period: int = 7 * 86400  # RFC 7352 3.3 :seconds default
    duplicate_max_period: int = 7 * 86400


DEFAULT_LIMITS = Limits()


@dataclass
class Env:
    """What the run may know besides the message."""

    now: float = field(default_factory=time.time)
    zone_offset: int | None = None  # minutes east of UTC for the "local" zone; None = the system's
    mailbox_exists: Callable[[str], bool] = lambda name: name.upper() == "INBOX"
    duplicate_seen: Callable[[str], bool] = lambda key: False  # key: sha256 hex of handle + id
    spam_score: Callable[[MessageFacts], str] | None = None  # spamtest value "0".."10" (RFC 5235)
    spam_percent: Callable[[MessageFacts], str] | None = None  # spamtestplus :percent "0".."100"
    virus_score: Callable[[MessageFacts], str] | None = None  # virustest value "0".."5"
    environment: dict = field(default_factory=dict)  # RFC 5183 items
    subaddress_separator: str = "+"


class SieveRuntimeError(Exception):
    def __init__(self, message: str, node=None):
        where = f"line {node.pos.line}: " if node is not None else ""
        super().__init__(where + message)


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Break(Exception):
    def __init__(self, name):
        self.name = name


@dataclass
class _Scope:
    script: object  # compile.Script
    variables: dict = field(default_factory=dict)
    global_names: set = field(default_factory=set)

    @property
    def has_variables(self) -> bool:
        return "variables" in self.script.required


_VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}")
_SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"}


def _flag_list(strings) -> list[str]:
    out: list[str] = []
    for s in strings:
        for f in s.split():
            key = f.lower() if f.startswith("\\") else f
            if key.startswith("\\") and key not in _SYSTEM_FLAGS:
                continue  # RFC 5232 3: an unknown system flag is ignored
            if key.lower() not in [x.lower() for x in out]:
                out.append(key)
    return out


class Run:
    def __init__(self, script, facts: MessageFacts, env: Env, limits: Limits):
        self.script = script
        self.facts = facts
        self.env = env
        self.limits = limits
        self.result = Result()
        self.flags: list[str] = []
        self.globals: dict[str, str] = {}
        self.steps = 0
        self.match_vars: list[str] = []
        self.part: Part | None = None  # the current part inside foreverypart
        self.replaced = False  # replace gave a part (or the message) new content
        self.new_subject: str | None = None  # replace :subject / :from of the whole message
        self.new_from: str | None = None
        self.enclosure: tuple | None = None  # the last enclose: (subject, headers, text)
        self.included_once: set = set()
        self.includes = 0
        self.redirects = 0

    # ------------------------------------------------------------------ entry

    def run(self, scripts: list | None = None) -> Result:
        """Run the script, or ``scripts`` one after the other (a domain's "before", the user's, "after": one
        result, and a ``stop`` in any ends them all, as Pigeonhole's sieve_before/sieve_after)."""
        try:
            for script in scripts or [self.script]:
                self.exec_script(script, depth=0)
        except _Stop:
            pass
        except SieveRuntimeError as e:
            return self._failed(str(e))
        except mt.RegexTimeout as e:
            return self._failed(str(e))
        except mt.BadRegex as e:
            return self._failed(str(e))
        except RecursionError:
            return self._failed("script nested too deeply")
        r = self.result
        r.keep_flags = tuple(self.flags)
        r.steps = self.steps
        if self.facts.edited:
            r.header_fields = [list(f) for f in self.facts.fields]
        if self.replaced or self.enclosure is not None:
            try:
                r.message = self._rebuilt()
            except mimeedit.MimeEditError as e:
                return self._failed(str(e))
        return r

    def _rebuilt(self) -> bytes:
        """The message after replace and enclose (mailserver/sieve/mimeedit.py)."""
        if self.replaced:
            raw = mimeedit.compose(self.facts.fields, self.facts.root, subject=self.new_subject,
                                   from_=self.new_from)
        else:
            raw = self.facts.header_bytes() + b"\r\n" + self.facts.body
        if self.enclosure is not None:
            subject, headers, text = self.enclosure
            raw = mimeedit.enclose(raw, parse_header(split_message(raw)[0]), subject=subject, headers=headers,
                                   text=text)
        return raw

    def _failed(self, why: str) -> Result:
        return Result(actions=[], implicit_keep=True, keep_flags=(), error=why, steps=self.steps)

    def step(self, n: int = 1, node=None) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise SieveRuntimeError(f"the script ran more than {self.limits.max_steps} steps", node)

    def exec_script(self, script, depth: int) -> None:
        scope = _Scope(script)
        try:
            self.block(script.commands, scope)
        except _Return:
            pass

    # ------------------------------------------------------------------ strings and variables

    def expand(self, s: str, scope: _Scope) -> str:
        if not scope.has_variables or "${" not in s:
            return s
        max_size = self.limits.max_variable_size

        def one(m):
            name = m.group(1)
            if name.isdigit():
                i = int(name)
                return self.match_vars[i] if i < len(self.match_vars) else ""
            return self.get_var(name, scope)

        out = _VAR_REF.sub(one, s)
        return out[:max_size * 4] if len(out) > max_size * 4 else out

    def strings(self, values, scope: _Scope) -> list[str]:
        return [self.expand(v, scope) for v in values]

    def get_var(self, name: str, scope: _Scope) -> str:
        n = name.lower()
        if n.startswith("global."):
            return self.globals.get(n[7:], "")
        if "." in n:
            return ""  # an unknown namespace
        if n in scope.global_names:
            return self.globals.get(n, "")
        return scope.variables.get(n, "")

    def set_var(self, name: str, value: str, scope: _Scope, node) -> None:
        n = name.lower()
        value = value[:self.limits.max_variable_size]
        if n.startswith("global.") or n in scope.global_names:
            target, n = self.globals, n.removeprefix("global.")
        else:
            target = scope.variables
        if n not in target and len(target) >= self.limits.max_variables:
            raise SieveRuntimeError(f"more than {self.limits.max_variables} variables", node)
        target[n] = value

    # ------------------------------------------------------------------ commands

    def block(self, cmds: list[Command], scope: _Scope) -> None:
        taken = False  # the last if/elsif chain already ran a branch
        for c in cmds:
            self.step(node=c)
            name = c.name
            if name == "if":
                taken = self.test(c.tests[0], scope)
                if taken:
                    self.block(c.block, scope)
            elif name == "elsif":
                if not taken:
                    taken = self.test(c.tests[0], scope)
                    if taken:
                        self.block(c.block, scope)
            elif name == "else":
                if not taken:
                    self.block(c.block, scope)
                taken = True
            else:
                self.command(c, scope)

    def command(self, c: Command, scope: _Scope) -> None:
        name, o, v = c.name, c.opts, c.values
        if name == "require":
            return
        if name == "stop":
            raise _Stop()
        if name == "return":
            raise _Return()
        if name == "keep":
            self.add(Keep(self._action_flags(o, scope)), c)
            self.result.implicit_keep = False
        elif name == "discard":
            self.add(Discard(), c)
            self.result.implicit_keep = False
        elif name == "fileinto":
            mailbox = self.expand(v[0], scope)
            if not mailbox:
                raise SieveRuntimeError("fileinto: empty mailbox name", c)
            self.add(FileInto(mailbox, self._action_flags(o, scope), "copy" in o, "create" in o), c)
            if "copy" not in o:
                self.result.implicit_keep = False
        elif name == "redirect":
            address = self.expand(v[0], scope).strip()
            if "@" not in address or address.startswith("@") or address.endswith("@") or " " in address:
                raise SieveRuntimeError(f"redirect: invalid address {address!r}", c)
            if not any(isinstance(a, Redirect) and a.address.lower() == address.lower()
                       for a in self.result.actions):
                self.redirects += 1
                if self.redirects > self.limits.max_redirects:
                    raise SieveRuntimeError(f"more than {self.limits.max_redirects} redirects", c)
            self.add(Redirect(address, "copy" in o), c)
            if "copy" not in o:
                self.result.implicit_keep = False
        elif name in ("reject", "ereject"):
            self.add(Reject(self.expand(v[0], scope), name == "ereject"), c)
            self.result.implicit_keep = False
        elif name == "vacation":
            self.vacation(c, scope)
        elif name == "set":
            self.set_var(v[0], _modify(self.expand(v[1], scope), o), scope, c)
        elif name in ("setflag", "addflag", "removeflag"):
            self.flag_command(c, scope)
        elif name == "include":
            self.include(c, scope)
        elif name == "global":
            for n in self.strings(v[0], scope):
                scope.global_names.add(n.lower())
        elif name == "addheader":
            self.addheader(c, scope)
        elif name == "deleteheader":
            self.deleteheader(c, scope)
        elif name == "foreverypart":
            self.foreverypart(c, scope)
        elif name == "break":
            raise _Break(o.get("name", (None, None))[1])
        elif name == "replace":
            self.replace(c, scope)
        elif name == "enclose":
            try:
                headers = [mimeedit.header_field(h) for h in self.strings(o.get("headers", (None, []))[1], scope)]
            except mimeedit.MimeEditError as e:
                raise SieveRuntimeError(str(e), c) from None
            subject = self.expand(o["subject"][1], scope) if "subject" in o else None
            self.enclosure = (subject, headers, self.expand(v[0], scope))  # RFC 5703 6: the last one counts
        elif name == "extracttext":
            text = extract_text(self.part, self.limits.max_variable_size) if self.part is not None else ""
            if "first" in o:
                text = text[:o["first"][1]]
            self.set_var(v[0], _modify(text, o), scope, c)
        else:  # pragma: no cover - validate.py knows every command
            raise SieveRuntimeError(f"unknown command {name}", c)

    def add(self, action, node) -> None:
        acts = self.result.actions
        if action in acts or (isinstance(action, Redirect) and any(
                isinstance(a, Redirect) and a.address.lower() == action.address.lower() for a in acts)):
            return  # RFC 5228 4.2/2.10.3: the same action twice is done once
        if isinstance(action, (Keep, FileInto)):
            # Two stores into one mailbox are one store (RFC 5228 4.2); the flags of the later one win.
            box = "INBOX" if isinstance(action, Keep) else action.mailbox
            for i, a in enumerate(acts):
                other = "INBOX" if isinstance(a, Keep) else getattr(a, "mailbox", None)
                if other is not None and isinstance(a, (Keep, FileInto)) and _same_box(other, box):
                    acts[i] = action  # at the place of the first, as the later one says
                    return
        rejects = [a for a in acts if isinstance(a, Reject)]
        if isinstance(action, Reject):
            others = [a for a in acts if isinstance(a, (Keep, FileInto, Redirect, Vacation, Reject))]
            if others:
                raise SieveRuntimeError(f"reject conflicts with an earlier {type(others[0]).__name__.lower()}",
                                        node)
        elif rejects and isinstance(action, (Keep, FileInto, Redirect, Vacation)):
            raise SieveRuntimeError(f"{type(action).__name__.lower()} conflicts with an earlier reject", node)
        if isinstance(action, Vacation) and any(isinstance(a, Vacation) for a in acts):
            raise SieveRuntimeError("only one vacation action per run (RFC 5230 4.7)", node)
        if len(acts) >= self.limits.max_actions:
            raise SieveRuntimeError(f"more than {self.limits.max_actions} actions", node)
        acts.append(action)

    def _action_flags(self, o: dict, scope: _Scope) -> tuple[str, ...]:
        if "flags" in o:
            return tuple(_flag_list(self.strings(o["flags"][1], scope)))
        if "imap4flags" in scope.script.required:
            return tuple(self.flags)
        return ()

    def flag_command(self, c: Command, scope: _Scope) -> None:
        flags = _flag_list(self.strings(c.values[0], scope))
        var = c.values[1]
        if var is not None:
            name = self.expand(var[0] if isinstance(var, list) else var, scope)
            current = _flag_list([self.get_var(name, scope)])
        else:
            current = list(self.flags)
        if c.name == "setflag":
            new = flags
        elif c.name == "addflag":
            new = _flag_list([" ".join(current + flags)])
        else:
            drop = {f.lower() for f in flags}
            new = [f for f in current if f.lower() not in drop]
        if var is not None:
            self.set_var(name, " ".join(new), scope, c)
        else:
            self.flags = new

    def vacation(self, c: Command, scope: _Scope) -> None:
        o, lim = c.opts, self.limits
        if "period" in o:
            tag, n = o["period"]
            seconds = n * 86400 if tag == "days" else n
        else:
            seconds = lim.vacation_default_period
        seconds = max(seconds, lim.vacation_min_period)
        if lim.vacation_max_period:
            seconds = min(seconds, lim.vacation_max_period)
        reason = self.expand(c.values[0], scope)
        subject = self.expand(o["subject"][1], scope) if "subject" in o else ""
        from_ = self.expand(o["from"][1], scope) if "from" in o else ""
        addrs = tuple(self.strings(o["addresses"][1], scope)) if "addresses" in o else ()
        handle = self.expand(o["handle"][1], scope) if "handle" in o else ""
        self.add(Vacation(reason, subject, from_, addrs, "mime" in o, handle, seconds), c)

    def include(self, c: Command, scope: _Scope) -> None:
        location = c.opts.get("location", ("personal", None))[0]
        name = self.expand(c.values[0], scope)
        key = (location, name)
        script = scope.script.includes.get(key)
        if script is None:
            if "optional" in c.opts:
                return
            raise SieveRuntimeError(f"include: no {location} script {name!r}", c)
        if "once" in c.opts:
            if key in self.included_once:
                return
            self.included_once.add(key)
        self.includes += 1
        if self.includes > self.limits.max_includes:
            raise SieveRuntimeError(f"more than {self.limits.max_includes} includes", c)
        saved = self.match_vars
        self.exec_script(script, depth=0)
        self.match_vars = saved

    def addheader(self, c: Command, scope: _Scope) -> None:
        name = self.expand(c.values[0], scope)
        value = self.expand(c.values[1], scope)
        if name.lower() in PROTECTED_HEADERS:
            return  # RFC 5293 4.1: not allowed; ignored
        value = " ".join(value.replace("\r", " ").replace("\n", " ").split(" "))
        field_ = [name, " " + _encode_header(value)]
        if "last" in c.opts:
            self.facts.fields.append(field_)
        else:
            self.facts.fields.insert(0, field_)

    def deleteheader(self, c: Command, scope: _Scope) -> None:
        o = c.opts
        name = self.expand(c.values[0], scope)
        if name.lower() in PROTECTED_HEADERS:
            return
        patterns = self.strings(c.values[1], scope) if c.values[1] is not None else None
        positions = [i for i, (k, _) in enumerate(self.facts.fields) if k.lower() == name.lower()]
        if "index" in o:
            n = o["index"][1]
            order = positions[::-1] if "last" in o else positions
            positions = [order[n - 1]] if 0 < n <= len(order) else []
        if patterns is not None:
            from mailserver.sieve.message import decode_value

            positions = [i for i in positions
                         if self.match_values([decode_value(self.facts.fields[i][1])], patterns, o, c, scope)]
        for i in sorted(positions, reverse=True):
            del self.facts.fields[i]

    def replace(self, c: Command, scope: _Scope) -> None:
        """RFC 5703 5: new content for the current part, or the whole message (mailserver/sieve/mimeedit.py)."""
        o = c.opts
        text = self.expand(c.values[0], scope)
        part = self.part if self.part is not None else self.facts.root
        try:
            entity = mimeedit.mime_entity(text) if "mime" in o else mimeedit.text_entity(text)
            mimeedit.replace_part(part, entity)
        except mimeedit.MimeEditError as e:
            raise SieveRuntimeError(str(e), c) from None
        self.replaced = True
        if part is self.facts.root:
            if "subject" in o:
                self.new_subject = " ".join(self.expand(o["subject"][1], scope).split())
            if "from" in o:
                value = " ".join(self.expand(o["from"][1], scope).split())
                if any(addresses(value)):  # RFC 5703 5: an unusable :from is ignored rather than failing
                    self.new_from = value

    def foreverypart(self, c: Command, scope: _Scope) -> None:
        name = c.opts.get("name", (None, None))[1]
        outer = self.part
        # The outermost loop visits the message itself first, then every part below it (as Pigeonhole does); a
        # nested loop visits the parts below the current one.
        parts = list(self.facts.root.walk()) if outer is None else list(outer.walk())[1:]
        try:
            for p in parts:
                if p.detached:
                    continue  # replaced away by an earlier iteration (RFC 5703 5)
                self.step(node=c)
                self.part = p
                self.block(c.block, scope)
        except _Break as b:
            if b.name is not None and b.name != name:
                raise
        finally:
            self.part = outer

    # ------------------------------------------------------------------ tests

    def test(self, t: Test, scope: _Scope) -> bool:
        self.step(node=t)
        name, o, v = t.name, t.opts, t.values
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self.test(t.tests[0], scope)
        if name == "allof":
            return all(self.test(x, scope) for x in t.tests)
        if name == "anyof":
            return any(self.test(x, scope) for x in t.tests)
        if name == "header":
            return self.match_values(self.header_values(t, self.strings(v[0], scope)), self.strings(v[1], scope),
                                     o, t, scope)
        if name == "address":
            values = []
            for raw in self.header_values(t, self.strings(v[0], scope), decoded=False):
                values += [self.address_part(a, o) for a in addresses(raw)]
            return self.match_values([x for x in values if x is not None], self.strings(v[1], scope), o, t, scope)
        if name == "envelope":
            values = []
            for part in self.strings(v[0], scope):
                p = part.lower()
                if p not in self.facts.envelope or p == "orig_to":
                    continue
                addr = self.facts.envelope[p]
                if p == "from" and not addr and o.get("address_part", ("all",))[0] != "all":
                    values.append("")
                    continue
                values.append(self.address_part(addr, o))
            return self.match_values([x for x in values if x is not None], self.strings(v[1], scope), o, t, scope)
        if name == "exists":
            names = self.strings(v[0], scope)
            if "mime" in o:
                parts = self._mime_parts(o)
                return all(any(p.header(n) for p in parts) for n in names)
            return all(self.facts.has(n) for n in names)
        if name == "size":
            return self.facts.size > v[0] if o["size"][0] == "over" else self.facts.size < v[0]
        if name == "body":
            return self.match_values(self.body_values(o, scope), self.strings(v[0], scope), o, t, scope)
        if name == "string":
            values = self.strings(v[0], scope)
            if o.get("match", ("is",))[0] == "count":
                values = [x for x in values if x != ""]
            return self.match_values(values, self.strings(v[1], scope), o, t, scope)
        if name in ("date", "currentdate"):
            return self.date_test(t, scope)
        if name == "hasflag":
            if v[1] is not None:
                flags = _flag_list([self.get_var(n, scope) for n in self.strings(v[1], scope)])
            else:
                flags = list(self.flags)
            keys = self.strings(v[0], scope)
            if o.get("match", ("is",))[0] != "count":
                keys = [k for key in keys for k in (key.split() or [""])]
            return self.match_values(flags, keys, o, t, scope)
        if name == "mailboxexists":
            return all(self.env.mailbox_exists(n) for n in self.strings(v[0], scope))
        if name in ("spamtest", "virustest"):
            return self.score_test(t, scope)
        if name == "duplicate":
            return self.duplicate(t, scope)
        if name == "environment":
            item = self.expand(v[0], scope).lower()
            if item not in self.env.environment:
                return False
            return self.match_values([str(self.env.environment[item])], self.strings(v[1], scope), o, t, scope)
        raise SieveRuntimeError(f"unknown test {name}", t)  # pragma: no cover

    def header_values(self, t: Test, names: list[str], decoded: bool = True) -> list[str]:
        o = t.opts
        if "mime" in o:
            parts = self._mime_parts(o)
            values = []
            for p in parts:
                for n in names:
                    values += self._mime_values(p, n, o) if decoded or "mimeopt" in o else \
                        [val for k, val in p.fields if k.lower() == n.lower()]
            return values
        values = []
        for n in names:
            vals = self.facts.header(n) if decoded else self.facts.raw_header(n)
            if "index" in o:
                i = o["index"][1]
                vals = vals[::-1] if "last" in o else vals
                vals = [vals[i - 1]] if 0 < i <= len(vals) else []
            values += vals
        return values

    def _mime_parts(self, o) -> list[Part]:
        current = self.part if self.part is not None else self.facts.root
        if "anychild" in o:
            return list(current.walk())
        return [current]

    def _mime_values(self, p: Part, n: str, o) -> list[str]:
        vals = p.header(n)
        opt = o.get("mimeopt")
        if opt is None:
            return vals
        out = []
        for val in vals:
            main, _, params = val.partition(";")
            main = main.strip()
            if opt[0] == "type":
                out.append(main.partition("/")[0])
            elif opt[0] == "subtype":
                out.append(main.partition("/")[2])
            elif opt[0] == "contenttype":
                out.append(main)
            else:
                wanted = [x.lower() for x in opt[1]]
                for kv in params.split(";"):
                    k, _, pv = kv.partition("=")
                    if k.strip().lower() in wanted:
                        out.append(pv.strip().strip('"'))
        return out

    def address_part(self, addr: str, o: dict) -> str | None:
        part = o.get("address_part", ("all", None))[0]
        if part == "all":
            return addr
        local, domain = split_address(addr)
        if part == "localpart":
            return local
        if part == "domain":
            return domain
        sep = self.env.subaddress_separator or "+"
        user, found, detail = local.partition(sep)
        if part == "user":
            return user
        return detail if found else None  # RFC 5233 4: no separator, no detail to match

    def body_values(self, o: dict, scope: _Scope) -> list[str]:
        tr = o.get("transform", ("text", None))
        if tr[0] == "raw":
            return [self.facts.body.decode("utf-8", "replace")]
        if tr[0] == "text":
            types = ["text"]
        else:
            types = [x.lower() for x in self.strings(tr[1], scope)]
        out = []
        for p in self.facts.parts():
            if p.children:
                continue  # RFC 5173 5.2: multipart containers are not matched themselves
            ctype = p.content_type
            main = ctype.partition("/")[0]
            if not any(k == "" or k == ctype or ("/" not in k and k == main) for k in types):
                continue
            out.append(p.text if p.text is not None else p.raw_body.decode("utf-8", "replace"))
        return out

    def date_test(self, t: Test, scope: _Scope) -> bool:
        o, v = t.opts, t.values
        zone = o.get("zone")
        if t.name == "currentdate":
            when = dt.datetime.fromtimestamp(self.env.now, dt.timezone.utc)
            values_dt = [when]
            date_part, keys = self.expand(v[0], scope).lower(), self.strings(v[1], scope)
        else:
            header, date_part, keys = self.expand(v[0], scope), self.expand(v[1], scope).lower(), \
                self.strings(v[2], scope)
            vals = self.facts.header(header)
            if "index" in o:
                i = o["index"][1]
                vals = vals[::-1] if "last" in o else vals
                vals = [vals[i - 1]] if 0 < i <= len(vals) else []
            values_dt = []
            for val in vals:
                d = _parse_date(val)
                if d is not None:
                    values_dt.append(d)
        if date_part not in DATE_PARTS:
            return False  # RFC 5260 2.3: an unknown date-part matches nothing (as Pigeonhole)
        out = []
        for d in values_dt:
            if zone is not None and zone[0] == "originalzone":
                pass
            elif zone is not None:
                off = _zone_minutes(self.expand(zone[1], scope))
                if off is None:
                    continue  # RFC 5260 2.2: an invalid zone makes the test fail
                d = d.astimezone(dt.timezone(dt.timedelta(minutes=off)))
            else:
                d = d.astimezone(self._local_zone(d))
            out.append(_date_part(d, date_part))
        return self.match_values(out, keys, o, t, scope)

    def _local_zone(self, d: dt.datetime) -> dt.timezone:
        if self.env.zone_offset is not None:
            return dt.timezone(dt.timedelta(minutes=self.env.zone_offset))
        lt = time.localtime(d.timestamp())
        return dt.timezone(dt.timedelta(seconds=lt.tm_gmtoff))

    def score_test(self, t: Test, scope: _Scope) -> bool:
        if t.name == "virustest":
            hook = self.env.virus_score
        elif "percent" in t.opts:
            hook = self.env.spam_percent
        else:
            hook = self.env.spam_score
        value = hook(self.facts) if hook is not None else "0"
        return self.match_values([value], [self.expand(t.values[0], scope)], t.opts, t, scope)

    def duplicate(self, t: Test, scope: _Scope) -> bool:
        o = t.opts
        handle = self.expand(o["handle"][1], scope) if "handle" in o else ""
        ident = o.get("id")
        if ident is None:
            vals = self.facts.header("message-id")
            if not vals:
                return False  # RFC 7352 3.1: no Message-ID: the test is false
            value = vals[0]
        elif ident[0] == "header":
            vals = self.facts.header(self.expand(ident[1], scope))
            if not vals:
                return False
            value = vals[0]
        else:
            value = self.expand(ident[1], scope)
        key = hashlib.sha256(f"{handle}\0{value}".encode()).hexdigest()
        seen = self.env.duplicate_seen(key)
        seconds = o["seconds"][1] if "seconds" in o else self.limits.duplicate_default_period
        seconds = min(seconds, self.limits.duplicate_max_period) if self.limits.duplicate_max_period else seconds
        marks = self.result.duplicate_marks
        earlier = [m for m in marks if m[0] == key]
        if earlier:
            return True  # RFC 7352 3: a second test for the same id in one run sees the first
        marks.append((key, seconds))
        return seen

    # ------------------------------------------------------------------ matching

    def match_values(self, values: list[str], keys: list[str], o: dict, node, scope: _Scope) -> bool:
        mtype, arg = o.get("match", ("is", None))
        comparator = o.get("comparator", ("comparator", mt.CASEMAP))[1]
        if mtype == "count":
            count = str(len(values))
            return any(mt.relation(arg, mt.NUMERIC if comparator == mt.NUMERIC else comparator, count, k)
                       for k in keys)
        self.step(max(1, len(values) * len(keys)), node)
        for value in values:
            for key in keys:
                if mtype == "is":
                    ok = mt.is_equal(comparator, value, key)
                elif mtype == "contains":
                    ok = mt.contains(comparator, value, key)
                elif mtype == "value":
                    ok = mt.relation(arg, comparator, value, key)
                elif mtype == "matches":
                    groups = mt.matches(comparator, value, key)
                    if groups is not None and scope.has_variables:
                        self.match_vars = groups
                    ok = groups is not None
                else:  # regex
                    groups = mt.regex_match(comparator, value, key, self.limits.regex_timeout)
                    if groups is not None and scope.has_variables:
                        self.match_vars = groups
                    ok = groups is not None
                if ok:
                    return True
        return False


_HTML_CLOSE = {"script": re.compile(r"</script", re.I), "style": re.compile(r"</style", re.I)}
_HTML_RAW = re.compile(r"<(script|style)\b", re.I)


def html_text(html: str, limit: int | None = None) -> str:
    """The text of an HTML part as extracttext gives it: comments, scripts and styles dropped, every run of tags
    one space (none at the start, none after white space), character references decoded; the text's own white
    space is kept (Pigeonhole's conversion, less its "> " quoting of blockquotes). One pass, each search going on
    from where the last ended (hostile markup: no quadratic scans); stops once ``limit`` characters are out."""
    import html as html_mod

    out: list[str] = []
    size = 0
    last = ""  # the last character out
    i, n = 0, len(html)
    while i < n and (limit is None or size < limit):
        j = html.find("<", i)
        text = html_mod.unescape(html[i:] if j < 0 else html[i:j])
        if text:
            out.append(text)
            size += len(text)
            last = text[-1]
        if j < 0:
            break
        if html.startswith("<!--", j):
            k = html.find("-->", j + 4)
            i = n if k < 0 else k + 3
        elif (m := _HTML_RAW.match(html, j)) is not None:
            close = _HTML_CLOSE[m.group(1).lower()].search(html, m.end())
            k = -1 if close is None else html.find(">", close.end())
            i = n if k < 0 else k + 1
        else:
            k = html.find(">", j + 1)
            i = n if k < 0 else k + 1
        if last and not last.isspace():  # a run of tags is one space
            out.append(" ")
            size += 1
            last = " "
    return "".join(out)


def extract_text(part: Part, limit: int | None = None) -> str:
    """RFC 5703 7: the decoded content of the current part: text as text (HTML without its markup), anything else
    as its decoded octets (as Pigeonhole does); a multipart container has none."""
    if part.children:
        return ""
    if part.text is not None:
        return html_text(part.text, limit) if part.content_type == "text/html" else part.text
    return part.raw_body.decode("utf-8", "replace")


def _same_box(a: str, b: str) -> bool:
    if a.upper() == "INBOX" and b.upper() == "INBOX":
        return True
    return a == b


def _modify(value: str, o: dict) -> str:
    """RFC 5229 4.1: apply the set modifiers by precedence (highest first)."""
    mods = sorted((k[4:] for k in o if k.startswith("mod-")), key=lambda m: -_PRECEDENCE[m])
    for m in mods:
        if m == "lower":
            value = value.lower()
        elif m == "upper":
            value = value.upper()
        elif m == "lowerfirst":
            value = value[:1].lower() + value[1:]
        elif m == "upperfirst":
            value = value[:1].upper() + value[1:]
        elif m == "quotewildcard":
            value = mt.quote_wildcard(value)
        elif m == "quoteregex":
            value = mt.quote_regex(value)
        elif m == "length":
            value = str(len(value))
    return value


_PRECEDENCE = {"lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30, "quotewildcard": 20,
               "quoteregex": 20, "length": 10}


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8").encode()


def _parse_date(value: str) -> dt.datetime | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        offset = parsed[9] or 0
        ts = calendar.timegm(parsed[:9]) - offset
        return dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(seconds=offset)))
    except (ValueError, OverflowError):
        return None


def _zone_minutes(zone: str) -> int | None:
    m = re.fullmatch(r"([+-])([0-9]{2})([0-9]{2})", zone.strip())
    if m is None:
        return None
    n = int(m.group(2)) * 60 + int(m.group(3))
    return -n if m.group(1) == "-" else n


def _date_part(d: dt.datetime, part: str) -> str:
    off = d.utcoffset() or dt.timedelta(0)
    mins = int(off.total_seconds() // 60)
    zone = f"{'-' if mins < 0 else '+'}{abs(mins) // 60:02d}{abs(mins) % 60:02d}"
    if part == "year":
        return f"{d.year:04d}"
    if part == "month":
        return f"{d.month:02d}"
    if part == "day":
        return f"{d.day:02d}"
    if part == "date":
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    if part == "julian":
        return str(d.date().toordinal() - dt.date(1858, 11, 17).toordinal())
    if part == "hour":
        return f"{d.hour:02d}"
    if part == "minute":
        return f"{d.minute:02d}"
    if part == "second":
        return f"{d.second:02d}"
    if part == "time":
        return f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if part == "iso8601":
        return d.strftime("%Y-%m-%dT%H:%M:%S") + f"{zone[:3]}:{zone[3:]}"
    if part == "std11":
        days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
        return f"{days[d.weekday()]}, {d.day:02d} {months[d.month - 1]} {d.year:04d} " \
               f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} {zone}"
    if part == "zone":
        return zone
    if part == "weekday":
        return str((d.weekday() + 1) % 7)  # 0 = Sunday
    return ""
