"""Comparators (RFC 4790 as Sieve uses them) and match types: :is, :contains, :matches, :regex, :value, :count.

A match returns whether it matched and, for :matches and :regex, the match variables (RFC 5229 3.2: ``${0}`` the
whole value, ``${1}``... each wildcard or group).  :regex runs in the ``regex`` module with a time limit, so a
pattern that backtracks catastrophically ends the run (:class:`RegexTimeout`), never the server.
"""

from __future__ import annotations

import re
from functools import lru_cache

OCTET, CASEMAP, NUMERIC = "i;octet", "i;ascii-casemap", "i;ascii-numeric"
#: Match variables kept: ${0} .. ${9} (RFC 5229 3.2 requires at least those).
MAX_MATCH_VARIABLES = 10


class RegexTimeout(Exception):
    """A :regex match ran past its time limit."""


class BadRegex(Exception):
    """A :regex key that is not a valid regular expression."""


_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(s: str) -> str:
    """i;ascii-casemap folds ASCII letters only."""
    return s.translate(_UPPER)


def numeric_value(s: str) -> float:
    """i;ascii-numeric: the leading digits as a number; a string not starting with a digit is positive infinity."""
    m = re.match(r"[0-9]+", s)
    return int(m.group()) if m else float("inf")


def _ordered(comparator: str, a: str, b: str) -> int:
    if comparator == NUMERIC:
        x, y = numeric_value(a), numeric_value(b)
    elif comparator == CASEMAP:
        x, y = casefold(a), casefold(b)
    else:
        x, y = a, b
    return (x > y) - (x < y)


_RELATION = {"gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0, "le": lambda c: c <= 0,
             "eq": lambda c: c == 0, "ne": lambda c: c != 0}


def relation(op: str, comparator: str, value: str, key: str) -> bool:
    return _RELATION[op](_ordered(comparator, value, key))


def is_equal(comparator: str, value: str, key: str) -> bool:
    if comparator == NUMERIC:
        return numeric_value(value) == numeric_value(key)
    if comparator == CASEMAP:
        return casefold(value) == casefold(key)
    return value == key


def contains(comparator: str, value: str, key: str) -> bool:
    if comparator == CASEMAP:
        return casefold(key) in casefold(value)
    return key in value


@lru_cache(maxsize=512)
def _glob(pattern: str, fold: bool) -> re.Pattern:
    """A :matches pattern as a regular expression: ``*`` any run, ``?`` one character, ``\\`` escapes."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            # Several stars in a row match as one run each; the first takes as little as possible.
            out.append("(.*?)")
        elif ch == "?":
            out.append("(.)")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.S | (re.I | re.A if fold else 0))


def matches(comparator: str, value: str, key: str) -> list[str] | None:
    """:matches: None when it does not match, else the match variables (${0} the value, then each wildcard)."""
    m = _glob(key, comparator == CASEMAP).fullmatch(value)
    if m is None:
        return None
    return [value, *m.groups()][:MAX_MATCH_VARIABLES]


@lru_cache(maxsize=256)
def _compile_regex(pattern: str, fold: bool):
    import regex as _regex  # here, not at import: a server whose scripts use no :regex never loads it (~1 MiB)

    try:
        return _regex.compile(pattern, _regex.S | _regex.V0 | (_regex.I | _regex.A if fold else 0))
    except _regex.error as e:
        raise BadRegex(f"invalid regular expression {pattern!r}: {e}") from None


def regex_match(comparator: str, value: str, key: str, timeout: float) -> list[str] | None:
    """:regex (draft-ietf-sieve-regex, POSIX extended as Pigeonhole): None, or ${0} the match and ${n} groups."""
    pattern = _compile_regex(key, comparator == CASEMAP)
    try:
        m = pattern.search(value, timeout=timeout)
    except TimeoutError:
        raise RegexTimeout(f"regular expression {key!r} ran past {timeout:g} s") from None
    if m is None:
        return None
    return [m.group(0), *[g or "" for g in m.groups()]][:MAX_MATCH_VARIABLES]


def check_regex(pattern: str) -> None:
    """Raise BadRegex for a key that does not compile (at compile time, for literal keys)."""
    _compile_regex(pattern, False)


def quote_wildcard(s: str) -> str:
    return re.sub(r"([*?\\])", r"\\\1", s)


def quote_regex(s: str) -> str:
    return re.sub(r"([\\^$.\[\]|()?*+{}])", r"\\\1", s)
