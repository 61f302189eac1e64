"""What the fuzz tests share: the example counter, read splits, and byte-level mutations of valid input.

Grammar-aware generators (in each test module) build valid protocol units, e.g. one command line with its CRLF;
:func:`mutated` then damages a unit the way a hostile or broken peer would: one byte changed, inserted or removed,
truncated, duplicated, case-changed, numbers made huge, NUL / 8-bit / bare CR / bare LF put in, or the line padded
to one byte below, at or past a named limit.
"""

from __future__ import annotations

import functools
import re

from hypothesis import given
from hypothesis import strategies as st

_count = [0]


def reset_count() -> None:
    _count[0] = 0


def examples_run() -> int:
    return _count[0]


def fuzz(*args, **kwargs):
    """``@given(...)`` that also counts the examples run (reported at the end of the pytest run)."""

    def decorate(fn):
        @functools.wraps(fn)
        def counted(*a, **kw):
            _count[0] += 1
            return fn(*a, **kw)

        return given(*args, **kwargs)(counted)

    return decorate


# ------------------------------------------------------------------------------------------------ read splits


def split_points(n: int, max_splits: int = 24):
    """Sorted distinct offsets inside ``n`` bytes, where a read boundary falls."""
    if n < 2:
        return st.just([])
    return st.lists(st.integers(1, n - 1), max_size=max_splits, unique=True).map(sorted)


def chunks_at(data: bytes, offsets) -> list[bytes]:
    bounds = [0, *sorted(set(o for o in offsets if 0 < o < len(data))), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [b""]


def byte_by_byte(data: bytes, limit: int = 4096) -> list[bytes]:
    """One read per byte for small inputs; larger ones in reads of a few bytes (still every kind of boundary)."""
    step = 1 if len(data) <= limit else 7
    return [data[i:i + step] for i in range(0, len(data), step)] or [b""]


def forced_splits(data: bytes, pattern: re.Pattern[bytes]) -> list[int]:
    """Offsets just after every match of ``pattern``: reads that must end there in every variant (after STARTTLS
    the rest of a read is discarded by design, so that boundary is part of the input, not a free choice)."""
    return [m.end() for m in pattern.finditer(data)]


# ------------------------------------------------------------------------------------------------ mutations

HUGE_NUMBERS = (b"0", b"4294967295", b"4294967296", b"9223372036854775807", b"9223372036854775808",
                b"18446744073709551616", b"9" * 21, b"9" * 40, b"-1", b"00000000000000000000001")
INSERTS = (b"\x00", b"\r", b"\n", b"\r\n", b" ", b"  ", b"\x80", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"\t",
           b'"', b"\\", b"(", b")", b"{", b"}", b"[", b"]", b"<", b">", b":", b"*", b"%", b"=", b".", b"..",
           b"\r\n.\r\n", b"{5}\r\n", b"{99999999999}", b"~{3}", b"{0+}")
_DIGITS = re.compile(rb"[0-9]+")

MUTATIONS = ("flip", "insert", "delete", "truncate", "duplicate", "repeat", "upper", "lower", "swapcase",
             "huge", "pad", "crlf_to_lf", "strip_crlf", "splice")


@st.composite
def mutated(draw, unit: bytes, limits: tuple[int, ...] = ()) -> bytes:
    """``unit`` with one mutation (see the module docstring)."""
    kinds = MUTATIONS if limits else tuple(k for k in MUTATIONS if k != "pad")
    kind = draw(st.sampled_from(kinds))
    n = len(unit)
    pos = draw(st.integers(0, n))
    if kind == "flip" and n:
        i = min(pos, n - 1)
        return unit[:i] + bytes([draw(st.integers(0, 255))]) + unit[i + 1:]
    if kind == "insert":
        extra = draw(st.one_of(st.sampled_from(INSERTS), st.binary(min_size=1, max_size=8)))
        return unit[:pos] + extra + unit[pos:]
    if kind == "delete" and n:
        i = min(pos, n - 1)
        return unit[:i] + unit[i + 1:]
    if kind == "truncate":
        return unit[:pos]
    if kind == "duplicate":
        return unit + unit
    if kind == "repeat" and n:
        end = draw(st.integers(pos, n))
        return unit[:end] + unit[pos:end] * draw(st.integers(2, 40)) + unit[end:]
    if kind == "upper":
        return unit.upper()
    if kind == "lower":
        return unit.lower()
    if kind == "swapcase":
        return unit.swapcase()
    if kind == "huge":
        numbers = list(_DIGITS.finditer(unit))
        if numbers:
            m = numbers[draw(st.integers(0, len(numbers) - 1))]
            return unit[:m.start()] + draw(st.sampled_from(HUGE_NUMBERS)) + unit[m.end():]
        return unit + b" " + draw(st.sampled_from(HUGE_NUMBERS))
    if kind == "pad":
        # A line of exactly limit-2 .. limit+1 octets with its CRLF (layers count the CRLF differently).
        limit = draw(st.sampled_from(limits))
        target = limit + draw(st.sampled_from((-2, -1, 0, 1, 2)))
        body = unit[:-2] if unit.endswith(b"\r\n") else unit
        missing = max(0, target - 2 - len(body))
        fill = draw(st.sampled_from((b"a", b" ", b"\x80", b"9")))
        at = min(pos, len(body))
        return body[:at] + fill * missing + body[at:] + b"\r\n"
    if kind == "crlf_to_lf":
        return unit.replace(b"\r\n", b"\n")
    if kind == "strip_crlf":
        return unit.replace(b"\r\n", b"")
    if kind == "splice":
        other = draw(st.binary(max_size=16))
        return unit[:pos] + other
    return unit


def units_script(unit: st.SearchStrategy[bytes], *, limits: tuple[int, ...] = (), min_size: int = 1,
                 max_size: int = 14, mutate_probability: float = 0.3) -> st.SearchStrategy[list[bytes]]:
    """A list of units (valid, mutated, or raw bytes), to be joined into one input."""

    @st.composite
    def one(draw) -> bytes:
        u = draw(unit)
        choice = draw(st.integers(0, 99))
        if choice < mutate_probability * 100:
            return draw(mutated(u, limits))
        if choice >= 97:
            return draw(st.binary(max_size=64))
        return u

    return st.lists(one(), min_size=min_size, max_size=max_size)


def lines_of(data: bytes) -> int:
    return data.count(b"\n")
