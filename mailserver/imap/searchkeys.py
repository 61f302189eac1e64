"""The SEARCH key tree and its grammar (RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 7162 3.1.5 MODSEQ, RFC 5032 WITHIN,
RFC 4731 / RFC 9051 ESEARCH and RFC 5267 CONTEXT RETURN options), sans-IO.

Key nodes (frozen dataclasses, together the ``SearchKey`` union):
- ``All()``
- ``FlagKey(flag: str, present: bool)``: ANSWERED DELETED DRAFT FLAGGED SEEN RECENT (``\\\\Answered`` ...),
  KEYWORD/UNKEYWORD (``flag`` as sent), UN* variants (``present=False``); OLD is ``FlagKey("\\\\Recent", False)``,
  NEW is ``And((FlagKey("\\\\Recent", True), FlagKey("\\\\Seen", False)))``.
- ``HeaderKey(field: str, value: str)``: BCC CC FROM SUBJECT TO and HEADER (``field`` upper-cased; empty
  ``value`` means "has the field", RFC 9051 6.4.4).
- ``BodyKey(value: str)``, ``TextKey(value: str)``: substring, case-insensitive per RFC 9051 6.4.4.
- ``DateKey(field: "INTERNAL" | "SENT", op: "BEFORE" | "ON" | "SINCE", date: datetime.date)``.
- ``SizeKey(op: "LARGER" | "SMALLER", size: int)``.
- ``SeqKey(seq_set: SeqSet)`` (message sequence numbers), ``UidKey(seq_set: SeqSet)``.
- ``ModSeqKey(modseq: int, entry_name: str | None, entry_type: str | None)`` (RFC 7162 3.1.5).
- ``WithinKey(op: "OLDER" | "YOUNGER", seconds: int)`` (RFC 5032).
- ``Not(key)``, ``Or(left, right)``, ``And(keys: tuple)``.

Grammar helpers over a :class:`mailserver.imap.wire.Tokenizer`:
- ``read_search_keys(tok, charset: str | None) -> SearchKey``: ``search-key *(SP search-key)`` to the end of the
  command; one key is returned as itself, several as ``And``.
- ``read_charset(tok) -> str``: a charset name, upper-cased; raises ``ParseError(status="NO",
  code="BADCHARSET (US-ASCII UTF-8)")`` for any other (RFC 9051 6.4.4).
- ``read_search_return(tok) -> (options, partial)``: after ``RETURN``: ``(MIN MAX ALL COUNT CONTEXT UPDATE
  PARTIAL n:m)``; ``options`` the option names but PARTIAL, in order, without repeats (``()`` means ALL for the
  caller, RFC 4731 3.1); ``partial`` the PARTIAL range as ``(low, high)`` with low <= high, or None.
- ``read_seq_set(tok) -> SeqSet``, ``read_date(tok) -> date``.
String values are decoded as UTF-8 (US-ASCII is a subset); invalid UTF-8 is a BAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .seqset import SeqSet, SeqSetError
from .wire import ParseError, Tokenizer

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
BADCHARSET_CODE = "BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")"
ESEARCH_RETURN = frozenset({"MIN", "MAX", "ALL", "COUNT", "CONTEXT", "UPDATE"})  # RFC 4731 3.1, RFC 5267 4
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_SEQ_CHARS = frozenset(b"0123456789:,*")
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

_dc = dataclass(frozen=True)


@_dc
class All:
    pass


@_dc
class FlagKey:
    flag: str
    present: bool = True


@_dc
class HeaderKey:
    field: str
    value: str


@_dc
class BodyKey:
    value: str


@_dc
class TextKey:
    value: str


@_dc
class DateKey:
    field: str
    op: str
    date: date


@_dc
class SizeKey:
    op: str
    size: int


@_dc
class SeqKey:
    seq_set: SeqSet


@_dc
class UidKey:
    seq_set: SeqSet


@_dc
class ModSeqKey:
    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None


@_dc
class WithinKey:
    op: str
    seconds: int


@_dc
class Not:
    key: SearchKey


@_dc
class Or:
    left: SearchKey
    right: SearchKey


@_dc
class And:
    keys: tuple[SearchKey, ...]


SearchKey = All | FlagKey | HeaderKey | BodyKey | TextKey | DateKey | SizeKey | SeqKey | UidKey | ModSeqKey | (
    WithinKey | Not | Or | And
)

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "OLD": ("\\Recent", False),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS = {
    "BEFORE": ("INTERNAL", "BEFORE"),
    "ON": ("INTERNAL", "ON"),
    "SINCE": ("INTERNAL", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"),
    "SENTON": ("SENT", "ON"),
    "SENTSINCE": ("SENT", "SINCE"),
}
_ARG_KEYS = _HEADER_KEYS | frozenset(_DATE_KEYS) | frozenset(
    {"HEADER", "BODY", "TEXT", "KEYWORD", "UNKEYWORD", "LARGER", "SMALLER", "UID", "NOT", "OR", "OLDER", "YOUNGER",
     "MODSEQ"}
)


def read_seq_set(tok: Tokenizer) -> SeqSet:
    text = tok.read_chars(_SEQ_CHARS)
    if not text:
        raise tok.error("expected sequence set")
    try:
        return SeqSet.parse(text, max_ranges=tok.limits.max_sequence_ranges)
    except SeqSetError as e:
        raise tok.error(str(e)) from None


def read_date(tok: Tokenizer) -> date:
    """RFC 3501 9: date = date-text / DQUOTE date-text DQUOTE; date-text = date-day "-" date-month "-" date-year."""
    quoted = tok.take(b'"')
    day = tok.read_chars(frozenset(b"0123456789"))
    if not 1 <= len(day) <= 2:
        raise tok.error("invalid date")
    tok.expect(b"-", "date")
    month = _MONTHS.get(tok.read_chars(_LETTERS).decode("ascii").upper())
    tok.expect(b"-", "date")
    year = tok.read_chars(frozenset(b"0123456789"))
    if month is None or len(year) != 4:
        raise tok.error("invalid date")
    if quoted:
        tok.expect(b'"', "closing quote")
    try:
        return date(int(year), month, int(day))
    except ValueError:
        raise tok.error("invalid date") from None


def read_charset(tok: Tokenizer) -> str:
    charset = tok.astring("charset").decode("ascii", "replace").upper()
    if charset not in SUPPORTED_CHARSETS:
        raise ParseError(tok.tag, f"unsupported charset {charset}", status="NO", code=BADCHARSET_CODE)
    return charset


def read_search_return(tok: Tokenizer) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """RFC 4731 3.1: search-return-opts = "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")";
    RFC 5267 5: search-return-opt =/ "CONTEXT" / "PARTIAL" SP partial-range / "UPDATE"."""
    tok.open_paren()
    options: list[str] = []
    partial: tuple[int, int] | None = None
    first = True
    while not tok.take(b")"):
        if not first:
            tok.sp()
        first = False
        option = tok.atom("return option").decode("ascii").upper()
        if option == "PARTIAL":
            if partial is not None:
                raise tok.error("PARTIAL given twice")
            tok.sp()
            partial = _partial_range(tok)
            continue
        if option not in ESEARCH_RETURN:
            raise tok.error(f"unknown RETURN option {option}")
        if option not in options:
            options.append(option)
    tok.depth -= 1
    if partial is not None and "ALL" in options:
        raise tok.error("PARTIAL and ALL cannot be combined")  # RFC 5267 4.4
    return tuple(options), partial


def _partial_range(tok: Tokenizer) -> tuple[int, int]:
    """RFC 5267 5: partial-range = nz-number ":" nz-number ("500:400 is the same as 400:500"; no "*")."""
    low = tok.number(nz=True)
    tok.expect(b":", "partial range")
    high = tok.number(nz=True)
    return (low, high) if low <= high else (high, low)


def _text(tok: Tokenizer) -> str:
    raw = tok.astring("search string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise tok.error("invalid UTF-8 in search string") from None


def read_search_keys(tok: Tokenizer, charset: str | None = None) -> SearchKey:
    keys = [_read_key(tok)]
    while not tok.at_end():
        tok.sp()
        keys.append(_read_key(tok))
    return keys[0] if len(keys) == 1 else And(tuple(keys))


def _nested(tok: Tokenizer) -> SearchKey:
    # NOT and OR nest like parentheses: bound them by the same limit.
    tok.depth += 1
    if tok.depth > tok.limits.max_nesting:
        raise tok.error("search program too deeply nested")
    key = _read_key(tok)
    tok.depth -= 1
    return key


def _read_key(tok: Tokenizer) -> SearchKey:
    c = tok.peek()
    if c == b"(":
        tok.open_paren()
        keys = [_read_key(tok)]
        while tok.take(b" "):
            keys.append(_read_key(tok))
        tok.close_paren()
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if c and c in b"0123456789*":
        return SeqKey(read_seq_set(tok))
    word = tok.atom("search key").decode("ascii").upper()
    if word == "ALL":
        return All()
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return FlagKey(flag, present)
    if word == "NEW":
        # RFC 3501 6.4.4: NEW is equivalent to (RECENT UNSEEN).
        return And((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))
    if word not in _ARG_KEYS:
        raise tok.error(f"unknown search key {word}")
    tok.sp()
    if word in _HEADER_KEYS:
        return HeaderKey(word, _text(tok))
    if word == "HEADER":
        field = tok.astring("header field name").decode("ascii", "replace").upper()
        tok.sp()
        return HeaderKey(field, _text(tok))
    if word == "BODY":
        return BodyKey(_text(tok))
    if word == "TEXT":
        return TextKey(_text(tok))
    if word in ("KEYWORD", "UNKEYWORD"):
        return FlagKey(tok.atom("keyword").decode("ascii"), word == "KEYWORD")
    if word in _DATE_KEYS:
        field, op = _DATE_KEYS[word]
        return DateKey(field, op, read_date(tok))
    if word in ("LARGER", "SMALLER"):
        return SizeKey(word, tok.number64())  # RFC 9051 6.4.4: number64
    if word == "UID":
        return UidKey(read_seq_set(tok))
    if word == "NOT":
        return Not(_nested(tok))
    if word == "OR":
        left = _nested(tok)
        tok.sp()
        return Or(left, _nested(tok))
    if word in ("OLDER", "YOUNGER"):
        return WithinKey(word, tok.number(nz=True))  # RFC 5032 2
    if word == "MODSEQ":
        # RFC 7162 3.1.5: "MODSEQ" SP [search-modsequence-ext SP] mod-sequence-valzer
        entry_name = entry_type = None
        if tok.peek() == b'"':
            entry_name = tok.quoted().decode("utf-8", "replace")
            if not entry_name.lower().startswith("/flags/"):
                raise tok.error("invalid MODSEQ entry name")
            tok.sp()
            entry_type = tok.atom("entry type").decode("ascii").lower()
            if entry_type not in ("priv", "shared", "all"):
                raise tok.error("invalid MODSEQ entry type")
            tok.sp()
        return ModSeqKey(tok.number64(), entry_name, entry_type)
    raise tok.error(f"unknown search key {word}")
