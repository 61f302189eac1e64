"""Sieve (RFC 5228 and extensions): compile a script, run it over a message's facts, get actions.

Sans-IO, no Twisted: ``grammar.py`` (tokens, parse tree with line and column), ``validate.py`` (the table of
commands and tests per extension), ``script.py`` (compile, resolve includes), ``interp.py`` (the evaluator and its
limits), ``match.py`` (comparators and match types; :regex bounded in time), ``message.py`` (the message as tests
see it), ``actions.py`` (what a run decides), ``vacation.py`` (RFC 3834 rules and the reply).  The delivery stage
that carries the actions out is ``mailserver/delivery/sieve_stage.py``; scripts are stored by ``storage/sieve.py``.
"""

from mailserver.sieve.actions import Discard, FileInto, Keep, Redirect, Reject, Result, Vacation, describe
from mailserver.sieve.interp import DEFAULT_LIMITS, Env, Limits, Run
from mailserver.sieve.message import MessageFacts
from mailserver.sieve.script import Script, SieveCompileError, compile_script
from mailserver.sieve.validate import EXTENSIONS


def evaluate(script: Script | list[Script], facts: MessageFacts, env: Env | None = None,
             limits: Limits = DEFAULT_LIMITS) -> Result:
    """Run ``script`` (or several in order, sharing one result) over ``facts``; never raises for the scripts' own
    faults (``Result.error`` says why, and the caller keeps the message)."""
    scripts = script if isinstance(script, list) else [script]
    return Run(scripts[0], facts, env or Env(), limits).run(scripts)


__all__ = [
    "EXTENSIONS", "Discard", "Env", "FileInto", "Keep", "Limits", "MessageFacts", "Redirect", "Reject", "Result",
    "Script", "SieveCompileError", "Vacation", "compile_script", "describe", "evaluate",
]
