"""Compiling a script: parse, validate, resolve its includes (RFC 6609), refuse what breaks a limit.

``compile_script(text, loader=...)`` returns a :class:`Script` whose ``includes`` map (location, name) to the
compiled included scripts, so a run needs no I/O.  ``loader(location, name)`` returns the text of a personal or
global script or None; it may block (the delivery stage calls this in a worker thread).  An include cycle, an
include deeper than ``Limits.max_include_depth`` or a missing script that is not ``:optional`` is a
:class:`SieveCompileError` naming the script, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mailserver.sieve.grammar import Command, SieveSyntaxError, parse
from mailserver.sieve.interp import DEFAULT_LIMITS, Limits
from mailserver.sieve.validate import check

Loader = Callable[[str, str], "str | None"]


class SieveCompileError(Exception):
    """A script that cannot run: ``script`` (its name), ``line`` and ``col`` say where (0 when not a place)."""

    def __init__(self, message: str, line: int = 0, col: int = 0, script: str = ""):
        where = f"{script}: " if script else ""
        where += f"line {line}, column {col}: " if line else ""
        super().__init__(where + message)
        self.message = message
        self.line = line
        self.col = col
        self.script = script


@dataclass
class Script:
    name: str
    commands: list[Command]
    required: set[str]
    uses_body: bool
    includes: dict = field(default_factory=dict)  # (location, name) -> Script

    @property
    def needs_body(self) -> bool:
        """Whether a run may read the body (body test, :mime, foreverypart), here or in an include."""
        return self.uses_body or any(s.needs_body for s in self.includes.values())


def _walk(cmds):
    for c in cmds:
        yield c
        for t in c.tests:
            yield from _walk_tests([t])
        if c.block:
            yield from _walk(c.block)


def _walk_tests(tests):
    for t in tests:
        yield t
        yield from _walk_tests(t.tests)


def compile_one(text: str, name: str = "script", limits: Limits = DEFAULT_LIMITS) -> Script:
    """Parse and validate one script (its includes unresolved)."""
    size = len(text.encode("utf-8"))
    if size > limits.max_script_size:
        raise SieveCompileError(f"script is {size} bytes, more than the limit of {limits.max_script_size}",
                                script=name)
    try:
        cmds = parse(text)
        required = check(cmds)
    except SieveSyntaxError as e:
        raise SieveCompileError(e.message, e.line, e.col, name) from None
    uses_body = any(n.name in ("body", "foreverypart", "replace", "enclose") or "mime" in n.opts for n in _walk(cmds))
    return Script(name, cmds, required, uses_body)


def compile_script(text: str, name: str = "script", *, loader: Loader | None = None,
                   limits: Limits = DEFAULT_LIMITS, location: str = "personal") -> Script:
    """Compile ``text`` and every script it includes (through ``loader``)."""
    cache: dict[tuple[str, str], Script] = {}
    root = compile_one(text, name, limits)
    _resolve(root, (location, name), loader, limits, cache, [(location, name)])
    return root


def _resolve(script: Script, key, loader, limits, cache, stack) -> None:
    for c in _walk(script.commands):
        if c.name != "include":
            continue
        loc = c.opts.get("location", ("personal", None))[0]
        inc_name = c.values[0]
        inc = (loc, inc_name)
        if inc in stack:
            chain = " -> ".join(n for _, n in stack + [inc])
            raise SieveCompileError(f"include loop: {chain}", c.pos.line, c.pos.col, script.name)
        if len(stack) > limits.max_include_depth:
            raise SieveCompileError(f"includes nested deeper than {limits.max_include_depth}", c.pos.line,
                                    c.pos.col, script.name)
        if inc in script.includes:
            continue
        if inc in cache:
            script.includes[inc] = cache[inc]
            continue
        text = loader(loc, inc_name) if loader is not None else None
        if text is None:
            if "optional" in c.opts:
                continue
            raise SieveCompileError(f"include: no {loc} script {inc_name!r}", c.pos.line, c.pos.col,
                                    script.name)
        child = compile_one(text, inc_name, limits)
        _resolve(child, inc, loader, limits, cache, stack + [inc])
        cache[inc] = child
        script.includes[inc] = child
        if len(cache) > limits.max_includes:
            raise SieveCompileError(f"more than {limits.max_includes} included scripts", c.pos.line, c.pos.col,
                                    script.name)
