"""IMAP sequence sets (RFC 3501 9 / RFC 9051 9 ``sequence-set``), sans-IO.

``SeqSet(ranges: tuple[tuple[int | None, int | None], ...])`` - frozen; ``None`` stands for ``*``; a single number
``n`` is the range ``(n, n)``. Ranges are kept as written (``5:1`` stays ``(5, 1)``) so ``str()`` round-trips.

- ``SeqSet.parse(text: str | bytes, *, max_ranges: int = 10000) -> SeqSet`` raises :class:`SeqSetError`
  (a ValueError) on a bad set: 0, numbers above 4294967295, empty elements, more than ``max_ranges`` elements.
- ``SeqSet.from_numbers(iterable[int]) -> SeqSet``: the compact form, sorted, runs merged (for COPYUID, VANISHED,
  APPENDUID, ESEARCH ALL).
- ``str(seq_set)`` / ``seq_set.render() -> str``: wire form (``1:3,5,7:*``).
- ``uses_star -> bool``.
- ``resolve(largest: int) -> list[tuple[int, int]]``: sorted, merged, inclusive ``(low, high)`` ranges with ``*``
  replaced by ``largest`` and ``a:b`` ordered (RFC 3501 9: ``5:1`` is ``1:5``). Ranges are *not* clipped: for UIDs,
  RFC 9051 6.4.8 says ``n:*`` includes the largest UID even when n > largest. Use ``clip=True`` for message sequence
  numbers (values above ``largest`` are dropped; empty result when the mailbox is empty).
- ``iter(largest, clip=False) -> Iterator[int]``, ``contains(n, largest) -> bool``,
  ``count(largest, clip=False) -> int``.
- ``compact(numbers) -> str``: ``str(SeqSet.from_numbers(numbers))``, ``""`` for none.
- ``intersect(ranges, numbers)``: sorted list of the numbers of a sorted sequence within the resolved ranges.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_NUMBER = 0xFFFFFFFF  # RFC 3501 9: nz-number is a 32-bit unsigned, non-zero
DEFAULT_MAX_RANGES = 10000
_MAX_DIGITS = len(str(MAX_NUMBER))


class SeqSetError(ValueError):
    pass


def _parse_number(text: str) -> int | None:
    if text == "*":
        return None
    if not text or not text.isascii() or not text.isdigit():
        raise SeqSetError(f"invalid sequence number {text[:20]!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        # Before int(): Python refuses to convert more than 4300 digits with a plain ValueError.
        raise SeqSetError("sequence number out of range")
    value = int(digits)
    if value == 0:
        raise SeqSetError("sequence number 0 is not allowed")  # RFC 3501 9: seq-number uses nz-number
    if value > MAX_NUMBER:
        raise SeqSetError("sequence number out of range")
    return value


@dataclass(frozen=True)
class SeqSet:
    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: str | bytes, *, max_ranges: int = DEFAULT_MAX_RANGES) -> SeqSet:
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise SeqSetError("invalid sequence set") from None
        if not text:
            raise SeqSetError("empty sequence set")
        parts = text.split(",", max_ranges)
        if len(parts) > max_ranges:
            raise SeqSetError("too many sequence ranges")
        ranges = []
        for part in parts:
            low, sep, high = part.partition(":")
            if sep:
                ranges.append((_parse_number(low), _parse_number(high)))
            else:
                n = _parse_number(low)
                ranges.append((n, n))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SeqSet:
        ranges: list[tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    @property
    def uses_star(self) -> bool:
        return any(a is None or b is None for a, b in self.ranges)

    def render(self) -> str:
        out = []
        for a, b in self.ranges:
            sa = "*" if a is None else str(a)
            if a == b:
                out.append(sa)
            else:
                out.append(f"{sa}:{'*' if b is None else b}")
        return ",".join(out)

    __str__ = render

    def resolve(self, largest: int, *, clip: bool = False) -> list[tuple[int, int]]:
        spans = []
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if clip:
                hi = min(hi, largest)
                if lo > hi or hi < 1:
                    continue
                lo = max(lo, 1)
            elif hi < 1:
                continue  # "*" in an empty mailbox
            else:
                lo = max(lo, 1)
            spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def iter(self, largest: int, *, clip: bool = False) -> Iterator[int]:
        for lo, hi in self.resolve(largest, clip=clip):
            yield from range(lo, hi + 1)

    def count(self, largest: int, *, clip: bool = False) -> int:
        return sum(hi - lo + 1 for lo, hi in self.resolve(largest, clip=clip))

    def contains(self, n: int, largest: int) -> bool:
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if lo <= n <= hi:
                return True
        return False


def compact(numbers: Iterable[int]) -> str:
    """The shortest sequence-set text for ``numbers`` (RFC 4315 uid-set, RFC 7162 VANISHED)."""
    return SeqSet.from_numbers(numbers).render()


def intersect(ranges: list[tuple[int, int]], numbers: list[int]) -> list[int]:
    """The members of sorted ``numbers`` inside resolved ``ranges`` (e.g. existing UIDs a UID set names)."""
    out: list[int] = []
    for lo, hi in ranges:
        start = bisect.bisect_left(numbers, lo)
        end = bisect.bisect_right(numbers, hi)
        out.extend(numbers[start:end])
    return out
