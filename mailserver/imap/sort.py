"""SORT (RFC 5256 3, RFC 5957 DISPLAYFROM/DISPLAYTO) and its responses (RFC 5256 4, RFC 5267 ESORT), sans-IO.

Public API:

- ``sort_messages(criteria, messages, *, seq_of=None) -> list[int]``: the UIDs of ``messages`` in the order the
  ``criteria`` (``SortCriterion(key, reverse)`` from :mod:`mailserver.imap.commands`) give. ``messages`` are
  MessageInfo-like (``uid``, ``internal_date``, ``size``, ``subject`` (decoded), ``date_sent`` (0 when unknown),
  ``envelope`` (JSON text or list)); ``seq_of`` maps uid -> sequence number (callable or mapping; None: ``messages``
  are in sequence order). Pass the matches of the search program (``search.search``) as ``messages``.
- ``sort_key_values(key, msg) -> str | float | int``: the value one criterion compares (exposed for tests and for
  the webmail's list ordering).
- ``sort_values(criteria, msg) -> tuple`` and ``order_key(criteria, values) -> key function of a UID``: the order
  of :func:`sort_messages` as a key, for keeping a sorted result up to date (RFC 5267 CONTEXT=SORT): ``values``
  maps UID -> ``sort_values``; ties go by UID, which is sequence-number order within a mailbox.
- ``sort_response(numbers, highest_modseq=None) -> bytes``: ``* SORT 3 1 2\\r\\n`` (``(MODSEQ n)`` appended after a
  MODSEQ search key, RFC 7162 3.1.5, when something matched).
- ``esort_response(tag, uid, numbers, return_options, *, modseq_of=None, partial=None) -> bytes``: RFC 5267 ESORT:
  an ``* ESEARCH`` response over the sorted ``numbers`` (UIDs or sequence numbers in sort order): MIN and MAX are
  the first and last message of the sorted result, ALL a sequence set in sort order (only ascending runs are
  collapsed, ``5,3:4,2``), COUNT the number; ``modseq_of(number)`` adds MODSEQ, ``partial`` (low, high) adds
  ``PARTIAL (low:high set)``.

Rules (RFC 5256 3): ARRIVAL is the internal date; DATE the sent date (the Date header in UTC; the internal date when
it is missing or unparseable, RFC 5256 2.2); FROM, TO and CC the addr-mailbox of the first address of that field
(empty when there is none; a group sorts by its name); SIZE RFC822.SIZE; SUBJECT the base subject (RFC 5256 2.1); DISPLAYFROM / DISPLAYTO the
RFC 2047-decoded display name of the first address, or its addr-spec when there is no name (RFC 5957 3). Strings
compare with i;ascii-casemap (RFC 5256 3 / RFC 4790 9.2: ASCII letters folded, then octet order). REVERSE reverses
the criterion it precedes. Messages equal on every criterion keep sequence-number order (RFC 5256 3).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from mailserver.mime.text import base_subject, decode_header_text

from . import response
from .commands import SortCriterion

__all__ = ["sort_messages", "sort_key_values", "sort_values", "order_key", "sort_response", "esort_response",
           "ascii_casemap", "ordered_set", "sent_date"]

_CASEMAP = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_ENVELOPE_INDEX = {"FROM": 2, "TO": 5, "CC": 6, "DISPLAYFROM": 2, "DISPLAYTO": 5}


def ascii_casemap(value: str) -> str:
    """i;ascii-casemap (RFC 4790 9.2): a-z folded to A-Z; Python compares code points, i.e. UTF-8 octet order."""
    return value.translate(_CASEMAP)


def _envelope(msg) -> list:
    env = getattr(msg, "envelope", None)
    if isinstance(env, (str, bytes)):
        try:
            env = json.loads(env)
        except ValueError:
            return []
    return env if isinstance(env, list) else []


def _first_address(env: list, index: int) -> list | None:
    """The first ENVELOPE address of a field. A group comes first as its start marker, whose addr-mailbox is the
    group name (RFC 9051 7.5.2), and sorts by that name."""
    addrs = env[index] if len(env) > index else None
    for addr in addrs or ():
        if isinstance(addr, list) and len(addr) >= 4 and addr[2] is not None:
            return addr
    return None


def sent_date(msg) -> float:
    """RFC 5256 2.2: the Date header's time (UTC), or the internal date when it cannot be determined."""
    value = float(getattr(msg, "date_sent", 0.0) or 0.0)
    return value if value else float(msg.internal_date)


def sort_key_values(key: str, msg, env: list | None = None) -> str | float | int:
    key = key.upper()
    if key == "ARRIVAL":
        return float(msg.internal_date)
    if key == "DATE":
        return sent_date(msg)
    if key == "SIZE":
        return int(msg.size)
    if key == "SUBJECT":
        return ascii_casemap(base_subject(msg.subject or ""))
    if key in _ENVELOPE_INDEX:
        addr = _first_address(env if env is not None else _envelope(msg), _ENVELOPE_INDEX[key])
        if addr is None:
            return ""
        name, _adl, mailbox, host = addr[:4]
        if key.startswith("DISPLAY"):
            # RFC 5957 3: the display name, decoded; without one, the addr-spec.
            display = decode_header_text(name).strip() if name else ""
            if not display:
                display = f"{mailbox}@{host}" if host else mailbox  # a group: its name
            return ascii_casemap(display)
        return ascii_casemap(mailbox or "")  # RFC 5256 3: the addr-mailbox of the first address
    raise ValueError(f"unknown sort key {key}")


def sort_messages(criteria: Sequence[SortCriterion], messages: Sequence, *,
                  seq_of: Callable[[int], int] | Mapping[int, int] | None = None) -> list[int]:
    if seq_of is None:
        seqs = list(range(1, len(messages) + 1))
    elif isinstance(seq_of, Mapping):
        seqs = [seq_of[m.uid] for m in messages]
    else:
        seqs = [seq_of(m.uid) for m in messages]
    order = sorted(range(len(messages)), key=seqs.__getitem__)  # RFC 5256 3: ties in sequence-number order
    needs_env = any(c.key.upper() in _ENVELOPE_INDEX for c in criteria)
    envs = [_envelope(m) for m in messages] if needs_env else None
    # Stable sorts from the last criterion to the first give the lexicographic order; Python keeps equal
    # elements in their order under reverse=True too, so ties stay in sequence order.
    for crit in reversed(criteria):
        values = [sort_key_values(crit.key, m, envs[i] if envs else None) for i, m in enumerate(messages)]
        order.sort(key=values.__getitem__, reverse=crit.reverse)
    return [messages[i].uid for i in order]


def sort_values(criteria: Sequence[SortCriterion], msg) -> tuple:
    """The value of each criterion for one message (what :func:`sort_messages` compares)."""
    env = _envelope(msg) if any(c.key.upper() in _ENVELOPE_INDEX for c in criteria) else None
    return tuple(sort_key_values(c.key, msg, env) for c in criteria)


def order_key(criteria: Sequence[SortCriterion], values: Mapping[int, tuple]) -> Callable[[int], object]:
    """A key function putting UIDs in the order of ``criteria`` (REVERSE per criterion), ties by UID (RFC 5256 3:
    sequence order): ``sorted(uids, key=order_key(c, v))`` equals :func:`sort_messages`."""
    reverse = [c.reverse for c in criteria]

    def compare(a: int, b: int) -> int:
        for x, y, rev in zip(values[a], values[b], reverse, strict=True):
            if x != y:
                return (1 if x < y else -1) if rev else (-1 if x < y else 1)
        return (a > b) - (a < b)

    return functools.cmp_to_key(compare)


def sort_response(numbers: Iterable[int], highest_modseq: int | None = None) -> bytes:
    found = list(numbers)
    out = b"* SORT"
    if found:
        out += b" " + b" ".join(b"%d" % n for n in found)
        if highest_modseq is not None:
            out += b" (MODSEQ %d)" % highest_modseq  # RFC 7162 3.1.5
    return out + b"\r\n"


def ordered_set(numbers: Sequence[int]) -> str:
    """A sequence set keeping the order given: only runs ascending by one are collapsed (RFC 5267 ESORT ALL)."""
    out: list[str] = []
    i = 0
    n = len(numbers)
    while i < n:
        j = i
        while j + 1 < n and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)


def esort_response(tag: str, uid: bool, numbers: Sequence[int], return_options: Iterable[str], *,
                   modseq_of: Callable[[int], int] | None = None, partial: tuple[int, int] | None = None) -> bytes:
    options = [o.upper() for o in return_options] or (["ALL"] if partial is None else [])  # RFC 4731 3.1
    out = [b"* ESEARCH (TAG " + response.quoted(tag) + b")"]
    if uid:
        out.append(b"UID")
    reported: list[int] = []
    if numbers:
        for option in dict.fromkeys(options):
            if option == "MIN":
                out.append(b"MIN %d" % numbers[0])
                reported.append(numbers[0])
            elif option == "MAX":
                out.append(b"MAX %d" % numbers[-1])
                reported.append(numbers[-1])
            elif option == "ALL":
                out.append(b"ALL " + ordered_set(numbers).encode("ascii"))
                reported = list(numbers)
            elif option == "COUNT":
                out.append(b"COUNT %d" % len(numbers))
                reported = list(numbers)
    elif "COUNT" in options:
        out.append(b"COUNT 0")
    if partial is not None:
        low, high = sorted(partial)
        chosen = list(numbers[low - 1 : high])
        out.append(b"PARTIAL (%d:%d %s)" % (low, high, ordered_set(chosen).encode("ascii") if chosen else b"NIL"))
        reported = list(numbers)
    if modseq_of is not None and numbers and reported:
        out.append(b"MODSEQ %d" % max(modseq_of(n) for n in set(reported)))  # RFC 7162 3.1.5
    return b" ".join(out) + b"\r\n"


