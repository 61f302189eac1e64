"""SEARCH evaluation (RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 7162 3.1.5 MODSEQ, RFC 5032 WITHIN) and the SEARCH /
ESEARCH responses (RFC 4731, RFC 9051 7.3.4), sans-IO.

Public API:

- ``search(keys, messages, *, seq_of=None, max_uid, max_seq, recent_uids=frozenset(), now=None, text_of=None,
  header_of=None) -> list[int]``: the UIDs of ``messages`` matching the key tree ``keys`` (from
  :mod:`mailserver.imap.searchkeys`), ascending.
  ``messages``: MessageMeta or MessageInfo objects (``uid``, ``modseq``, ``flags``, ``keywords``, ``size``,
  ``internal_date``; ``envelope`` is used for SENT* when present). ``seq_of``: uid -> sequence number, a callable or a
  mapping; None means ``messages`` is the whole mailbox in sequence order. ``max_uid`` / ``max_seq`` are what ``*``
  stands for in UID / sequence sets (RFC 3501 9). ``recent_uids``: the session's \\Recent messages. ``now``: the
  clock for OLDER/YOUNGER (seconds since the epoch; required when they are used).
  ``text_of(msg) -> (raw_header: bytes, decoded_text: str)`` loads a message's header and the decoded text of its
  body (see :func:`message_text`); ``header_of(msg) -> bytes`` optionally loads only the header, for HEADER/FROM/
  TO/CC/BCC/SUBJECT/SENT* keys. Each is called at most once per message and only for messages the cheap keys left.
  Evaluation is cheap-first: within AND (and each side of OR) the keys that need only MessageMeta run first, header
  keys next, body keys last, each on the candidates left by the ones before.
- ``message_text(raw: bytes, bodystructure=None) -> (raw_header, decoded_text)``: a ready ``text_of`` from a blob.
- ``uses_modseq(keys) -> bool``: a MODSEQ key is in the tree (RFC 7162 3.1.5: the response then carries MODSEQ).
- ``search_response(matches, highest_modseq=None) -> bytes``: ``* SEARCH 2 5 (MODSEQ 917)\\r\\n`` (no MODSEQ part when
  nothing matched).
- ``esearch_response(tag, uid, matches, return_options, *, seq_numbers=None, modseq_of=None, partial=None) -> bytes``:
  ``* ESEARCH (TAG "t") [UID] MIN .. MAX .. ALL <set> COUNT ..\\r\\n``. ``matches`` are UIDs ascending;
  ``seq_numbers`` the same messages as sequence numbers (required when not ``uid``). ``return_options`` ``()``
  means ALL (RFC 4731 3.1). MIN/MAX/ALL are left out when nothing matched; COUNT is always there. ``modseq_of``
  (uid -> modseq; give it when :func:`uses_modseq`) adds ``MODSEQ n``: the highest of all matches when ALL or COUNT
  is asked, else of the reported MIN/MAX messages (RFC 7162 3.1.5). ``partial`` (low, high) adds RFC 5267
  ``PARTIAL (low:high set)``, positions counted from 1 in the result.

Matching rules (RFC 9051 6.4.4): strings match as case-insensitive substrings. Header keys look at every field of
that name, unfolded, both RFC 2047-decoded and raw, with runs of white space counting as one space; an empty string matches any message that has the field. BODY
searches the decoded text of the text parts, TEXT the header and that text. BEFORE/ON/SINCE compare the calendar date
of the internal date in the server's time zone (UTC); SENTBEFORE/SENTON/SENTSINCE the date of the Date header as
written, in the message's own time zone (falling back to the internal date when Date is missing or unparseable).
OLDER n: internal date at least n seconds before ``now``; YOUNGER n: less than n seconds (RFC 5032 3). MODSEQ n:
the message's mod-sequence is n or more (RFC 7162 3.1.5; one mod-sequence per message, so the entry name is not
looked at). Keywords compare case-insensitively.
"""

from __future__ import annotations

import bisect
import email.utils
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from itertools import islice
from operator import attrgetter, lt

from mailserver.mime.parse import parse_structure
from mailserver.mime.searchtext import extract_text
from mailserver.mime.text import address_list, bytes_to_text, decode_header_text
from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN

from . import response
from .searchkeys import (
    All,
    And,
    BodyKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    Not,
    Or,
    SearchKey,
    SeqKey,
    SizeKey,
    TextKey,
    UidKey,
    WithinKey,
)
from .seqset import SeqSet, compact

__all__ = [
    "search",
    "message_text",
    "uses_modseq",
    "search_response",
    "esearch_response",
    "SearchError",
]

_SYSTEM_FLAGS = {
    "\\seen": FLAG_SEEN,
    "\\answered": FLAG_ANSWERED,
    "\\flagged": FLAG_FLAGGED,
    "\\deleted": FLAG_DELETED,
    "\\draft": FLAG_DRAFT,
}

# Evaluation cost classes: MessageMeta only, header, body.
_META, _HEADER, _BODY = 0, 1, 2


class SearchError(Exception):
    """The session cannot run this search (a loader it did not supply); answered NO."""


def _cost(key: SearchKey) -> int:
    if isinstance(key, (HeaderKey,)):
        return _HEADER
    if isinstance(key, DateKey):
        return _HEADER if key.field == "SENT" else _META
    if isinstance(key, (BodyKey, TextKey)):
        return _BODY
    if isinstance(key, Not):
        return _cost(key.key)
    if isinstance(key, Or):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, And):
        return max((_cost(k) for k in key.keys), default=_META)
    return _META


def uses_modseq(keys: SearchKey) -> bool:
    if isinstance(keys, ModSeqKey):
        return True
    if isinstance(keys, Not):
        return uses_modseq(keys.key)
    if isinstance(keys, Or):
        return uses_modseq(keys.left) or uses_modseq(keys.right)
    if isinstance(keys, And):
        return any(uses_modseq(k) for k in keys.keys)
    return False


def message_text(raw: bytes, bodystructure: dict | str | None = None) -> tuple[bytes, str]:
    """(raw header, decoded body text) of a stored message, for ``text_of``."""
    bs = json.loads(bodystructure) if isinstance(bodystructure, str) else bodystructure
    if bs is None:
        bs = parse_structure(raw)
    header = bytes(raw[: bs.get("body_start", len(raw))])
    # The leaves of the tree are the body's parts (for a single-part message, the top node is its body).
    return header, extract_text(raw, bodystructure=bs)


def _header_fields(raw: bytes) -> list[tuple[str, str]]:
    """(lower-cased name, unfolded value) of every field of a header block, in order."""
    text = bytes_to_text(raw)
    fields: list[tuple[str, str]] = []
    name = None
    value: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if name is not None:
                value.append(line)  # RFC 5322 2.2.3: unfolding removes only the CRLF
            continue
        if name is not None:
            fields.append((name, "".join(value).strip()))
            name = None
        if not line:
            break
        colon = line.find(":")
        if colon <= 0:
            continue
        name = line[:colon].rstrip(" \t").lower()
        value = [line[colon + 1 :]]
    if name is not None:
        fields.append((name, "".join(value).strip()))
    return fields


def _sent_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        # RFC 3501 6.4.4: SENT* disregard time and timezone: the date as written in the Date header.
        return date(parsed[0], parsed[1], parsed[2])
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _json_list(value) -> list:
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _utc_date(timestamp: float) -> date:
    return datetime.fromtimestamp(float(timestamp), timezone.utc).date()


class _Evaluator:
    def __init__(self, messages: Sequence, seq_of, max_uid: int, max_seq: int, recent_uids, now,
                 text_of, header_of):
        self.msgs = messages
        self.seq_of = seq_of
        self.max_uid = max_uid
        self.max_seq = max_seq
        self.recent = recent_uids
        self.now = now
        self.text_of = text_of
        self.header_of = header_of
        self._cols: dict[str, list] = {}
        self._text: dict[int, tuple[bytes, str]] = {}
        self._headers: dict[int, list[tuple[str, str]]] = {}
        self._raw_headers: dict[int, bytes] = {}
        self._sent: dict[int, date] = {}
        self._ascending: dict[str, bool] = {}

    # -- columns of MessageMeta fields, built once per search ---------------------------------------------------

    def col(self, name: str) -> list:
        values = self._cols.get(name)
        if values is None:
            if name == "seq":
                seq_of = self.seq_of
                if seq_of is None:
                    values = list(range(1, len(self.msgs) + 1))
                elif isinstance(seq_of, Mapping):
                    values = [seq_of[m.uid] for m in self.msgs]
                else:
                    values = [seq_of(m.uid) for m in self.msgs]
            else:
                values = list(map(attrgetter(name), self.msgs))
            self._cols[name] = values
        return values

    # -- lazily loaded message data ------------------------------------------------------------------------------

    def text(self, i: int) -> tuple[bytes, str]:
        found = self._text.get(i)
        if found is None:
            if self.text_of is None:
                raise SearchError("message text is not available for this search")
            raw_header, body = self.text_of(self.msgs[i])
            found = (bytes(raw_header), body or "")
            self._text[i] = found
            self._raw_headers.setdefault(i, found[0])
        return found

    def raw_header(self, i: int) -> bytes:
        found = self._raw_headers.get(i)
        if found is None:
            if self.header_of is not None:
                found = bytes(self.header_of(self.msgs[i]))
            else:
                found = self.text(i)[0]
            self._raw_headers[i] = found
        return found

    def headers(self, i: int) -> list[tuple[str, str]]:
        found = self._headers.get(i)
        if found is None:
            found = _header_fields(self.raw_header(i))
            self._headers[i] = found
        return found

    def sent_date(self, i: int) -> date:
        found = self._sent.get(i)
        if found is None:
            msg = self.msgs[i]
            env = getattr(msg, "envelope", None)
            if env is not None:
                # The stored ENVELOPE holds the Date field as sent: no header read needed.
                env_list = _json_list(env)
                value = env_list[0] if env_list else None
            else:
                value = next((v for n, v in self.headers(i) if n == "date"), None)
            found = _sent_date(value) or _utc_date(msg.internal_date)
            self._sent[i] = found
        return found

    # -- evaluation: returns the members of ``cand`` (positions, ascending) that match ---------------------------

    def run(self, key: SearchKey, cand: list[int]) -> list[int]:
        if not cand:
            return cand
        if isinstance(key, All):
            return cand
        if isinstance(key, And):
            for sub in sorted(key.keys, key=_cost):  # RFC-neutral: AND is commutative, so cheap keys go first
                cand = self.run(sub, cand)
                if not cand:
                    break
            return cand
        if isinstance(key, Or):
            first, second = sorted((key.left, key.right), key=_cost)
            hit = self.run(first, cand)
            if len(hit) == len(cand):
                return cand
            hit_set = set(hit)
            rest = [i for i in cand if i not in hit_set]
            hit_set.update(self.run(second, rest))
            return [i for i in cand if i in hit_set]
        if isinstance(key, Not):
            hit = set(self.run(key.key, cand))
            return [i for i in cand if i not in hit]
        if isinstance(key, FlagKey):
            return self._flag(key, cand)
        if isinstance(key, UidKey):
            return self._in_set(cand, "uid", key.seq_set, self.max_uid)
        if isinstance(key, SeqKey):
            return self._in_set(cand, "seq", key.seq_set, self.max_seq)
        if isinstance(key, SizeKey):
            sizes = self.col("size")
            n = key.size
            if key.op == "LARGER":
                return [i for i in cand if sizes[i] > n]  # RFC 3501 6.4.4: larger than
            return [i for i in cand if sizes[i] < n]
        if isinstance(key, ModSeqKey):
            modseqs = self.col("modseq")
            n = key.modseq
            return [i for i in cand if modseqs[i] >= n]  # RFC 7162 3.1.5: greater than or equal
        if isinstance(key, WithinKey):
            if self.now is None:
                raise SearchError("OLDER/YOUNGER need the current time")
            limit = float(self.now) - key.seconds
            dates = self.col("internal_date")
            if key.op == "OLDER":
                return [i for i in cand if dates[i] <= limit]  # RFC 5032 3
            return [i for i in cand if dates[i] > limit]
        if isinstance(key, DateKey):
            return self._date(key, cand)
        if isinstance(key, HeaderKey):
            return self._header(key, cand)
        if isinstance(key, BodyKey):
            needle = key.value.casefold()
            return [i for i in cand if needle in self.text(i)[1].casefold()]
        if isinstance(key, TextKey):
            return [i for i in cand if self._text_match(i, key.value.casefold())]
        raise SearchError(f"unsupported search key {type(key).__name__}")

    def ascending(self, name: str) -> bool:
        """Whether a column is strictly ascending (UIDs and sequence numbers in mailbox order are)."""
        found = self._ascending.get(name)
        if found is None:
            values = self.col(name)
            found = self._ascending[name] = all(map(lt, values, islice(values, 1, None)))
        return found

    def _in_set(self, cand: list[int], name: str, seq_set: SeqSet, largest: int) -> list[int]:
        """Members of ``cand`` whose column value lies in ``seq_set`` ("*" = ``largest``, RFC 3501 9)."""
        ranges = seq_set.resolve(largest)
        values = self.col(name)
        if not ranges:
            return []
        if self.ascending(name):
            # Positions by bisection: cost grows with the ranges, not with the mailbox.
            spans = []
            for lo, hi in ranges:
                a = bisect.bisect_left(values, lo)
                b = bisect.bisect_right(values, hi)
                if b > a:
                    spans.append((a, b))
            if len(cand) == len(values):  # every message is still a candidate
                out: list[int] = []
                for a, b in spans:
                    out.extend(range(a, b))
                return out
            mask = bytearray(len(values))
            for a, b in spans:
                mask[a:b] = b"\x01" * (b - a)
            return [i for i in cand if mask[i]]
        return _in_ranges(cand, values, ranges)

    def _flag(self, key: FlagKey, cand: list[int]) -> list[int]:
        lname = key.flag.lower()
        want = key.present
        if lname == "\\recent":
            uids = self.col("uid")
            recent = self.recent
            return [i for i in cand if (uids[i] in recent) == want]
        bit = _SYSTEM_FLAGS.get(lname)
        if bit is not None:
            flags = self.col("flags")
            if want:
                return [i for i in cand if flags[i] & bit]
            return [i for i in cand if not flags[i] & bit]
        if lname.startswith("\\"):
            return [] if want else cand  # no message carries an unknown system flag
        keywords = self.col("keywords")
        return [i for i in cand if _has_keyword(keywords[i], lname) == want]

    def _date(self, key: DateKey, cand: list[int]) -> list[int]:
        day = key.date
        if key.field == "SENT":
            get = self.sent_date
        else:
            # Internal dates in the server's time zone (UTC): compare timestamps with the day's bounds.
            stamps = self.col("internal_date")
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
            end = start + 86400.0
            if key.op == "BEFORE":
                return [i for i in cand if stamps[i] < start]
            if key.op == "ON":
                return [i for i in cand if start <= stamps[i] < end]
            return [i for i in cand if stamps[i] >= start]
        # RFC 3501 6.4.4: BEFORE = earlier than the date; ON = within the date; SINCE = within or later.
        if key.op == "BEFORE":
            return [i for i in cand if get(i) < day]
        if key.op == "ON":
            return [i for i in cand if get(i) == day]
        return [i for i in cand if get(i) >= day]

    def _header(self, key: HeaderKey, cand: list[int]) -> list[int]:
        field = key.field.lower()
        needle = key.value.casefold()
        out = []
        for i in cand:
            for name, value in self.headers(i):
                if name != field:
                    continue
                # RFC 9051 6.4.4: an empty string matches every message that has the field.
                if not needle or _value_matches(field, value, needle):
                    out.append(i)
                    break
        return out

    def _text_match(self, i: int, needle: str) -> bool:
        if needle in self.text(i)[1].casefold():
            return True
        for _name, value in self.headers(i):
            if _value_matches(_name, value, needle):
                return True
        # Field names are part of the header text too (RFC 9051 6.4.4 TEXT: header or body).
        return needle in bytes_to_text(self.raw_header(i)).casefold()


_ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-to",
                             "resent-cc", "resent-bcc", "resent-sender"})


def _value_matches(field: str, value: str, needle: str) -> bool:
    """Substring match on a field value: raw, RFC 2047-decoded and, for address fields, the parsed addresses
    ("name <local@domain>", comments and quoting removed). Runs of white space (folding) count as one space."""
    needle = _squeeze(needle)
    if needle in _squeeze(value.casefold()):
        return True
    decoded = decode_header_text(value) if "=?" in value else value
    if decoded is not value and needle in _squeeze(decoded.casefold()):
        return True
    if field in _ADDRESS_FIELDS:
        for name, addr in address_list(value):
            if needle in (f"{name} <{addr}>" if name else addr).casefold():
                return True
    return False


_WSP_RUN = re.compile(r"[ \t\r\n]+")


def _squeeze(text: str) -> str:
    return _WSP_RUN.sub(" ", text) if ("  " in text or "\t" in text or "\n" in text) else text


def _has_keyword(keywords: Iterable[str], lname: str) -> bool:
    for k in keywords:
        if k.lower() == lname:
            return True
    return False


def _in_ranges(cand: list[int], values: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    if len(ranges) == 1:
        lo, hi = ranges[0]
        return [i for i in cand if lo <= values[i] <= hi]
    starts = [lo for lo, _hi in ranges]
    ends = [hi for _lo, hi in ranges]
    out = []
    right = bisect.bisect_right
    for i in cand:
        v = values[i]
        k = right(starts, v) - 1
        if k >= 0 and v <= ends[k]:
            out.append(i)
    return out


def search(keys: SearchKey, messages: Sequence, *, seq_of: Callable[[int], int] | Mapping[int, int] | None = None,
           max_uid: int, max_seq: int, recent_uids: Iterable[int] = frozenset(), now: float | None = None,
           text_of: Callable[[object], tuple[bytes, str]] | None = None,
           header_of: Callable[[object], bytes] | None = None) -> list[int]:
    if not isinstance(recent_uids, (set, frozenset)):
        recent_uids = frozenset(recent_uids)
    ev = _Evaluator(messages, seq_of, max_uid, max_seq, recent_uids, now, text_of, header_of)
    hits = ev.run(keys, list(range(len(messages))))
    if not hits:
        return []
    uids = ev.col("uid")
    if len(hits) == len(uids):
        found = list(uids)
    else:
        found = [uids[i] for i in hits]
    return found if ev.ascending("uid") else sorted(found)


# ---------------------------------------------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------------------------------------------

def search_response(matches: Iterable[int], highest_modseq: int | None = None) -> bytes:
    numbers = list(matches)
    out = b"* SEARCH"
    if numbers:
        out += b" " + " ".join(map(str, numbers)).encode("ascii")
        if highest_modseq is not None:
            out += b" (MODSEQ %d)" % highest_modseq  # RFC 7162 3.1.5: search-sort-mod-seq
    return out + b"\r\n"


def _partial_set(numbers: list[int], low: int, high: int) -> bytes:
    if low > high:
        low, high = high, low
    chosen = numbers[low - 1 : high]
    return b"PARTIAL (%d:%d %s)" % (low, high, compact(chosen).encode("ascii") if chosen else b"NIL")


def esearch_response(tag: str, uid: bool, matches: Sequence[int], return_options: Iterable[str], *,
                     seq_numbers: Sequence[int] | None = None, modseq_of: Callable[[int], int] | None = None,
                     partial: tuple[int, int] | None = None) -> bytes:
    uids = sorted(matches)
    if uid:
        numbers = uids
    else:
        if seq_numbers is None:
            raise ValueError("seq_numbers are needed for a non-UID ESEARCH")
        numbers = sorted(seq_numbers)
    # RFC 4731 3.1: RETURN () means ALL; RFC 5267 4.4: PARTIAL replaces it. CONTEXT/UPDATE return no data here.
    options = [o.upper() for o in return_options] or (["ALL"] if partial is None else [])
    # RFC 9051 7.3.4: esearch-response = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
    out = [b"* ESEARCH (TAG " + response.quoted(tag) + b")"]
    if uid:
        out.append(b"UID")
    if numbers:
        for option in dict.fromkeys(options):
            if option == "MIN":
                out.append(b"MIN %d" % numbers[0])
            elif option == "MAX":
                out.append(b"MAX %d" % numbers[-1])
            elif option == "ALL":
                out.append(b"ALL " + compact(numbers).encode("ascii"))
            elif option == "COUNT":
                out.append(b"COUNT %d" % len(numbers))
        if partial is not None:
            out.append(_partial_set(numbers, *partial))
        if modseq_of is not None:
            if "ALL" in options or "COUNT" in options or partial is not None:
                reported = uids
            else:
                reported = ([uids[0]] if "MIN" in options else []) + ([uids[-1]] if "MAX" in options else [])
            # RFC 7162 3.1.5: the highest mod-sequence of the messages the response reports.
            out.append(b"MODSEQ %d" % max(modseq_of(u) for u in reported))
    else:
        if "COUNT" in options:
            out.append(b"COUNT 0")  # RFC 4731 3.1: MIN, MAX and ALL are omitted for an empty result
        if partial is not None:
            out.append(_partial_set(numbers, *partial))
    return b" ".join(out) + b"\r\n"
