"""IMAP command parser: a :class:`~mailserver.imap.wire.Frame` in, a typed command out (RFC 3501 / RFC 9051
section 9 grammar and the extensions in :mod:`mailserver.imap.commands`), sans-IO.

- ``parse_command(frame, *, limits=DEFAULT_LIMITS, utf8=False) -> Command``: ``utf8`` is True once the client has
  enabled UTF8=ACCEPT or IMAP4rev2 (mailbox names are then UTF-8 on the wire, else modified UTF-7). A command word
  the server does not know gives ``Unknown``. Grammar errors raise ``ParseError(tag, message)`` (tag ``"*"`` when
  no tag could be read); an unsupported SEARCH/SORT/THREAD charset raises ``ParseError(status="NO",
  code="BADCHARSET (US-ASCII UTF-8)")``.
- ``parse_append_prefix(frame, *, limits=DEFAULT_LIMITS, utf8=False) -> AppendPrefix``: for
  ``LiteralAnnounced.prefix`` of a streamed APPEND literal: ``AppendPrefix(tag, mailbox, index, message)`` where
  ``message`` is the ``AppendMessage`` whose data is about to stream (``data`` is a ``StreamedLiteral``) and
  ``index`` its 0-based position (MULTIAPPEND). Lets the session check the mailbox, APPENDLIMIT and quota and open
  a blob writer before the data arrives.
- ``is_idle_done(frame) -> bool``: RFC 2177 / RFC 9051 6.3.13: the line that ends IDLE.
- ``parse_sasl_response(frame) -> bytes | None``: an AUTHENTICATE continuation line decoded from base64, None for
  the ``*`` cancellation (RFC 9051 6.2.2); raises ``ParseError`` for bad base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import commands as c
from .response import decode_mailbox
from .searchkeys import read_charset, read_search_keys, read_search_return, read_seq_set
from .wire import ASTRING_CHARS, DEFAULT_LIMITS, Frame, ParseError, ParserLimits, StreamedLiteral, Tokenizer

# RFC 2971 3.3: at most 30 field-value pairs, fields of at most 30 octets, values of at most 1024 octets.
ID_MAX_PAIRS = 30
ID_MAX_FIELD = 30
ID_MAX_VALUE = 1024

UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})
LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
THREAD_ALGORITHMS = frozenset({"REFERENCES", "ORDEREDSUBJECT"})
FETCH_SIMPLE = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY",
     "BODYSTRUCTURE", "UID", "MODSEQ"}
)
# RFC 3501 6.4.5 macros
FETCH_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_SECTION_WORD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")
_B64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
_DATE_TIME_RE = re.compile(
    rb"( ?[0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}


@dataclass(frozen=True)
class AppendPrefix:
    tag: str
    mailbox: str
    index: int
    message: c.AppendMessage


class _Parser:
    def __init__(self, tok: Tokenizer, tag: str, uid: bool, utf8: bool):
        self.tok = tok
        self.tag = tag
        self.uid = uid
        self.utf8 = utf8

    def error(self, message: str) -> ParseError:
        return self.tok.error(message)

    def mailbox(self) -> str:
        raw = self.tok.astring("mailbox name")
        try:
            return decode_mailbox(raw, utf8=self.utf8)
        except ValueError as e:
            # The syntax is a valid astring: a name that is not modified UTF-7 (RFC 3501 5.1.3) names no mailbox
            # that can exist, so the command fails with NO rather than BAD (as for any missing mailbox).
            raise ParseError(self.tag, f"invalid mailbox name: {e}", status="NO") from None

    def list_mailbox(self) -> str | None:
        """A LIST/LSUB pattern; None when it is not modified UTF-7 (RFC 3501 5.1.3): it then matches no mailbox."""
        raw = self.tok.list_mailbox()
        try:
            return decode_mailbox(raw, utf8=self.utf8)
        except ValueError:
            return None

    def utf8_text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"invalid UTF-8 in {what}") from None

    def word(self, what: str) -> str:
        return self.tok.atom(what).decode("ascii").upper()

    def flag(self) -> str:
        # RFC 3501 9: flag = "\Answered" / ... / flag-keyword / flag-extension ("\" atom)
        tok = self.tok
        if tok.take(b"\\"):
            return "\\" + tok.atom("flag").decode("ascii")
        return tok.atom("flag").decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        """RFC 3501 9: flag-list = "(" [flag *(SP flag)] ")"."""
        tok = self.tok
        tok.open_paren()
        flags: list[str] = []
        while not tok.take(b")"):
            if flags:
                tok.sp()
            flags.append(self.flag())
        tok.depth -= 1
        return tuple(flags)

    def atom_list(self, what: str) -> tuple[str, ...]:
        """ "(" atom *(SP atom) ")", upper-cased; at least one."""
        tok = self.tok
        tok.open_paren()
        items = [self.word(what)]
        while tok.take(b" "):
            items.append(self.word(what))
        tok.close_paren()
        return tuple(items)

    def date_time(self) -> datetime:
        """RFC 3501 9: date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        m = _DATE_TIME_RE.match(self.tok.quoted())
        if m is None:
            raise self.error("invalid date-time")
        month = _MONTHS.get(m.group(2).decode().upper())
        if month is None:
            raise self.error("invalid date-time")
        hours, minutes = int(m.group(8)), int(m.group(9))
        if minutes > 59:
            raise self.error("invalid date-time zone")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if m.group(7) == b"-" else 1)
        try:
            return datetime(
                int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)), int(m.group(6)),
                tzinfo=timezone(offset),
            )
        except ValueError:
            raise self.error("invalid date-time") from None


# -- commands without arguments -----------------------------------------------------------------------------

def _no_args(cls):
    def parse(p: _Parser) -> c.Command:
        return cls(tag=p.tag)

    return parse


# -- not authenticated --------------------------------------------------------------------------------------

def _authenticate(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    mechanism = p.word("SASL mechanism")
    initial = None
    if not tok.at_end():
        tok.sp()
        # RFC 4959 7: initial-response = base64 / "="
        raw = tok.read_chars(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
        if raw != b"=" and (not raw or not _B64_RE.match(raw)):
            raise p.error("invalid SASL initial response")
        initial = raw.decode("ascii")
    return c.Authenticate(tag=p.tag, mechanism=mechanism, initial_response=initial)


def _login(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    user = p.utf8_text(tok.astring("user name"), "user name")
    tok.sp()
    password = p.utf8_text(tok.astring("password"), "password")
    return c.Login(tag=p.tag, username=user, password=password)


# -- authenticated ------------------------------------------------------------------------------------------

def _enable(p: _Parser) -> c.Command:
    tok = p.tok
    caps = []
    tok.sp()
    caps.append(p.word("capability"))
    while tok.take(b" "):
        caps.append(p.word("capability"))
    return c.Enable(tag=p.tag, capabilities=tuple(caps))


def _select(readonly: bool):
    def parse(p: _Parser) -> c.Command:
        tok = p.tok
        tok.sp()
        mailbox = p.mailbox()
        condstore = False
        qresync = None
        if tok.take(b" "):
            tok.open_paren()
            first = True
            while not tok.take(b")"):
                if not first:
                    tok.sp()
                first = False
                param = p.word("select parameter")
                if param == "CONDSTORE":  # RFC 7162 3.1.8
                    condstore = True
                elif param == "QRESYNC" and qresync is None:  # RFC 7162 3.2.5
                    tok.sp()
                    qresync = _qresync_params(p)
                else:
                    raise p.error(f"unknown SELECT parameter {param}")
            tok.depth -= 1
            if first:
                raise p.error("empty SELECT parameter list")
        return c.Select(tag=p.tag, mailbox=mailbox, readonly=readonly, condstore=condstore, qresync=qresync)

    return parse


def _qresync_params(p: _Parser) -> c.QresyncParams:
    # RFC 7162 3.2.5.1: "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
    tok = p.tok
    tok.open_paren()
    uid_validity = tok.number(nz=True)
    tok.sp()
    modseq = tok.number64(nz=True)
    known_uids = None
    seq_match = None
    if tok.take(b" "):
        if tok.peek() != b"(":
            known_uids = read_seq_set(tok)
            if known_uids.uses_star:
                raise p.error("known-uids must not contain *")
            if tok.take(b" "):
                seq_match = _seq_match(p)
        else:
            seq_match = _seq_match(p)
    tok.close_paren()
    return c.QresyncParams(uid_validity=uid_validity, modseq=modseq, known_uids=known_uids, seq_match=seq_match)


def _seq_match(p: _Parser):
    tok = p.tok
    tok.open_paren()
    seqs = read_seq_set(tok)
    tok.sp()
    uids = read_seq_set(tok)
    tok.close_paren()
    return (seqs, uids)


def _create(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    mailbox = p.mailbox()
    use: tuple[str, ...] = ()
    if tok.take(b" "):
        # RFC 6154 3: create-param =/ "USE" SP "(" [use-attr *(SP use-attr)] ")"
        tok.open_paren()
        if not tok.take_word(b"USE"):
            raise p.error("unknown CREATE parameter")
        tok.sp()
        use = p.flag_list()
        if any(not a.startswith("\\") for a in use):
            raise p.error("invalid special-use attribute")
        tok.close_paren()
    return c.Create(tag=p.tag, mailbox=mailbox, special_use=use)


def _one_mailbox(cls):
    def parse(p: _Parser) -> c.Command:
        p.tok.sp()
        return cls(tag=p.tag, mailbox=p.mailbox())

    return parse


def _acl_args(cls, *names: str):
    """RFC 4314 3: ``mailbox`` then astrings (identifier, rights)."""

    def parse(p: _Parser) -> c.Command:
        tok = p.tok
        tok.sp()
        mailbox = p.mailbox()
        values = {}
        for n in names:
            tok.sp()
            values[n] = tok.astring(n).decode("utf-8", "replace")
        return cls(tag=p.tag, mailbox=mailbox, **values)

    return parse


def _rename(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    old = p.mailbox()
    tok.sp()
    return c.Rename(tag=p.tag, mailbox=old, new_mailbox=p.mailbox())


def _list(p: _Parser) -> c.Command:
    # RFC 5258 6: list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    tok = p.tok
    tok.sp()
    extended = False
    selection: set[str] = set()
    if tok.peek() == b"(":
        extended = True
        tok.open_paren()
        while not tok.take(b")"):
            if selection:
                tok.sp()
            option = p.word("selection option")
            if option not in LIST_SELECTION:
                raise p.error(f"unknown LIST selection option {option}")  # RFC 5258 3
            selection.add(option)
        tok.depth -= 1
        if selection - {"REMOTE"} == {"RECURSIVEMATCH"}:
            # RFC 5258 3: RECURSIVEMATCH must not occur alone or with REMOTE only.
            raise p.error("RECURSIVEMATCH needs another selection option")
        tok.sp()
    reference = p.mailbox()
    tok.sp()
    if tok.peek() == b"(":
        extended = True
        tok.open_paren()
        patterns = [p.list_mailbox()]
        while tok.take(b" "):
            patterns.append(p.list_mailbox())
        tok.close_paren()
    else:
        patterns = [p.list_mailbox()]
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if tok.take(b" "):
        extended = True
        if not tok.take_word(b"RETURN"):
            raise p.error("expected RETURN")
        tok.sp()
        tok.open_paren()
        while not tok.take(b")"):
            if returns:
                tok.sp()
            option = p.word("return option")
            if option not in LIST_RETURN:
                raise p.error(f"unknown LIST return option {option}")
            if option == "STATUS":  # RFC 5819 2
                tok.sp()
                status = _status_items(p)
            returns.add(option)
        tok.depth -= 1
    if "SPECIAL-USE" in selection:
        returns.add("SPECIAL-USE")  # RFC 6154 5.1: the selection option implies the return option
    return c.List(
        tag=p.tag, reference=reference, patterns=tuple(x for x in patterns if x is not None), selection=frozenset(selection),
        return_options=frozenset(returns), return_status=status, extended=extended,
    )


def _lsub(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    reference = p.mailbox()
    tok.sp()
    return c.Lsub(tag=p.tag, reference=reference, pattern=p.list_mailbox())


def _status_items(p: _Parser) -> tuple[str, ...]:
    items = p.atom_list("status item")
    for item in items:
        if item not in c.STATUS_ITEMS:
            raise p.error(f"unknown STATUS item {item}")
    return tuple(dict.fromkeys(items))


def _status(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    mailbox = p.mailbox()
    tok.sp()
    return c.Status(tag=p.tag, mailbox=mailbox, items=_status_items(p))


def _append_messages(p: _Parser, *, partial: bool) -> tuple[str, list[c.AppendMessage]]:
    # RFC 3502 6: append = "APPEND" SP mailbox 1*append-message; append-message = append-opts SP append-data
    tok = p.tok
    tok.sp()
    mailbox = p.mailbox()
    messages: list[c.AppendMessage] = []
    last_segment = len(tok.segments) - 1
    while True:
        tok.sp()
        flags: tuple[str, ...] = ()
        when = None
        if tok.peek() == b"(":
            flags = p.flag_list()
            tok.sp()
        if tok.peek() == b'"':
            when = p.date_time()
            tok.sp()
        utf8 = False
        if tok.take_word(b"UTF8"):
            # RFC 6855 4: append-data =/ "UTF8" SP "(" literal8 ")"
            utf8 = True
            tok.sp()
            tok.open_paren()
        if not tok.at_literal():
            raise p.error("expected message literal")
        data, binary = tok.literal(allow_binary=True)
        if utf8 and not binary:
            raise p.error("UTF8 APPEND data must be literal8")
        messages.append(c.AppendMessage(flags=flags, internal_date=when, data=data, binary=binary, utf8=utf8))
        if partial and tok.i == last_segment:
            return mailbox, messages
        if utf8:
            tok.close_paren()
        if tok.at_end():
            return mailbox, messages


def _append(p: _Parser) -> c.Command:
    mailbox, messages = _append_messages(p, partial=False)
    return c.Append(tag=p.tag, mailbox=mailbox, messages=tuple(messages))


def _get_quota(p: _Parser) -> c.Command:
    p.tok.sp()
    return c.GetQuota(tag=p.tag, root=p.utf8_text(p.tok.astring("quota root"), "quota root"))


def _set_quota(p: _Parser) -> c.Command:
    # RFC 9208 4.1.3: setquota = "SETQUOTA" SP quota-root-name SP setquota-list
    tok = p.tok
    tok.sp()
    root = p.utf8_text(tok.astring("quota root"), "quota root")
    tok.sp()
    tok.open_paren()
    limits: list[tuple[str, int]] = []
    while not tok.take(b")"):
        if limits:
            tok.sp()
        resource = p.word("quota resource")
        tok.sp()
        limits.append((resource, tok.number64()))
    tok.depth -= 1
    return c.SetQuota(tag=p.tag, root=root, limits=tuple(limits))


def _id(p: _Parser) -> c.Command:
    # RFC 2971 4: id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil
    tok = p.tok
    tok.sp()
    if tok.take_word(b"NIL"):
        return c.Id(tag=p.tag, params=None)
    tok.open_paren()
    params: list[tuple[str, str | None]] = []
    while not tok.take(b")"):
        if params:
            tok.sp()
        field = tok.string()
        tok.sp()
        value = tok.nstring()
        if len(params) >= ID_MAX_PAIRS or len(field) > ID_MAX_FIELD or (value is not None and len(value) > ID_MAX_VALUE):
            raise p.error("ID parameters over the RFC 2971 limits")
        params.append((p.utf8_text(field, "ID field"), None if value is None else p.utf8_text(value, "ID value")))
    tok.depth -= 1
    return c.Id(tag=p.tag, params=tuple(params))


def _compress(p: _Parser) -> c.Command:
    p.tok.sp()
    return c.Compress(tag=p.tag, mechanism=p.word("compression mechanism"))


# -- selected -----------------------------------------------------------------------------------------------

def _expunge(p: _Parser) -> c.Command:
    if p.uid:
        # RFC 4315 2.1: UID EXPUNGE sequence-set
        p.tok.sp()
        return c.Expunge(tag=p.tag, uid_set=read_seq_set(p.tok))
    return c.Expunge(tag=p.tag)


def _search(p: _Parser) -> c.Command:
    # RFC 9051 9: search = "SEARCH" [search-return-opts] SP search-program
    tok = p.tok
    tok.sp()
    returns = partial = None
    if tok.take_word(b"RETURN"):
        tok.sp()
        returns, partial = read_search_return(tok)
        tok.sp()
    charset = None
    if tok.take_word(b"CHARSET"):
        tok.sp()
        charset = read_charset(tok)
        tok.sp()
    keys = read_search_keys(tok, charset)
    return c.Search(tag=p.tag, uid=p.uid, charset=charset, keys=keys, return_options=returns, partial=partial)


def _section(p: _Parser, *, binary: bool) -> c.Section:
    tok = p.tok
    tok.expect(b"[")
    parts: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if tok.peek() != b"]":
        dotted = True
        while tok.peek().isdigit():
            parts.append(tok.number(nz=True))
            dotted = tok.take(b".")
            if not dotted:
                break
        if tok.peek() != b"]" or (parts and dotted):
            if not dotted:  # BINARY[1.MIME] etc. accepted as Dovecot does (RFC 9051 allows only parts)
                raise p.error("invalid section")
            text = tok.read_chars(_SECTION_WORD_CHARS).decode("ascii").upper()
            if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                tok.sp()
                names = p.tok
                names.open_paren()
                found = [names.astring("header field name").decode("ascii", "replace").upper()]
                while names.take(b" "):
                    found.append(names.astring("header field name").decode("ascii", "replace").upper())
                names.close_paren()
                fields = tuple(found)
            elif text == "MIME":
                if not parts:
                    raise p.error("MIME needs a part number")  # RFC 3501 9 section-text
            elif text not in ("HEADER", "TEXT"):
                raise p.error(f"invalid section text {text}")
    tok.expect(b"]")
    return c.Section(part=tuple(parts), text=text, fields=fields)


def _partial(p: _Parser) -> tuple[int, int] | None:
    # RFC 9051 9: partial = "<" number64 "." nz-number64 ">"
    tok = p.tok
    if not tok.take(b"<"):
        return None
    start = tok.number64()
    tok.expect(b".")
    length = tok.number64(nz=True)
    tok.expect(b">")
    return (start, length)


def _fetch_att(p: _Parser, *, allow_macro: bool) -> list[c.FetchAtt]:
    tok = p.tok
    name = tok.read_chars(_FETCH_NAME_CHARS).decode("ascii").upper()
    if not name:
        raise p.error("expected FETCH item")
    if name in FETCH_MACROS:
        if not allow_macro:
            raise p.error("FETCH macros cannot be in a list")  # RFC 3501 9: fetch = ... ("ALL" / "FULL" / "FAST" / ...)
        return [c.FetchAtt(name=n) for n in FETCH_MACROS[name]]
    if tok.peek() == b"[":
        if name in ("BODY", "BODY.PEEK"):
            section = _section(p, binary=False)
            return [c.FetchAtt(name="BODY", section=section, partial=_partial(p), peek=name == "BODY.PEEK")]
        if name in ("BINARY", "BINARY.PEEK"):  # RFC 3516 4.1 / RFC 9051 6.4.5
            section = _section(p, binary=True)
            return [c.FetchAtt(name="BINARY", section=section, partial=_partial(p), peek=name == "BINARY.PEEK")]
        if name == "BINARY.SIZE":
            return [c.FetchAtt(name="BINARY.SIZE", section=_section(p, binary=True))]
        raise p.error(f"unexpected section after {name}")
    if name not in FETCH_SIMPLE:
        raise p.error(f"unknown FETCH item {name}")
    return [c.FetchAtt(name=name)]


def _fetch(p: _Parser) -> c.Command:
    tok = p.tok
    tok.sp()
    seq_set = read_seq_set(tok)
    tok.sp()
    items: list[c.FetchAtt] = []
    if tok.peek() == b"(":
        tok.open_paren()
        items += _fetch_att(p, allow_macro=False)
        while tok.take(b" "):
            items += _fetch_att(p, allow_macro=False)
        tok.close_paren()
    else:
        items += _fetch_att(p, allow_macro=True)
    changed_since = None
    vanished = False
    if tok.take(b" "):
        # RFC 7162 3.1.4.1: fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")"
        tok.open_paren()
        while True:
            modifier = p.word("FETCH modifier")
            if modifier == "CHANGEDSINCE":
                tok.sp()
                changed_since = tok.number64(nz=True)
            elif modifier == "VANISHED":
                vanished = True
            else:
                raise p.error(f"unknown FETCH modifier {modifier}")
            if not tok.take(b" "):
                break
        tok.close_paren()
        if vanished and (not p.uid or changed_since is None):
            raise p.error("VANISHED needs UID FETCH with CHANGEDSINCE")  # RFC 7162 3.2.6
    return c.Fetch(
        tag=p.tag, uid=p.uid, seq_set=seq_set, items=tuple(dict.fromkeys(items)), changed_since=changed_since,
        vanished=vanished,
    )


def _store(p: _Parser) -> c.Command:
    # RFC 3501 9: store = "STORE" SP sequence-set SP store-att-flags; RFC 7162 3.1.3 store-modifiers
    tok = p.tok
    tok.sp()
    seq_set = read_seq_set(tok)
    tok.sp()
    unchanged_since = None
    if tok.peek() == b"(":
        tok.open_paren()
        if not tok.take_word(b"UNCHANGEDSINCE"):
            raise p.error("unknown STORE modifier")
        tok.sp()
        unchanged_since = tok.number64()
        tok.close_paren()
        tok.sp()
    mode = c.StoreMode.REPLACE
    if tok.take(b"+"):
        mode = c.StoreMode.ADD
    elif tok.take(b"-"):
        mode = c.StoreMode.REMOVE
    word = p.word("FLAGS")
    if word not in ("FLAGS", "FLAGS.SILENT"):
        raise p.error("expected FLAGS or FLAGS.SILENT")
    tok.sp()
    if tok.peek() == b"(":
        flags = p.flag_list()
    else:
        found = [p.flag()]
        while tok.take(b" "):
            found.append(p.flag())
        flags = tuple(found)
    return c.Store(
        tag=p.tag, uid=p.uid, seq_set=seq_set, mode=mode, silent=word == "FLAGS.SILENT",
        flags=tuple(dict.fromkeys(flags)), unchanged_since=unchanged_since,
    )


def _copy_move(cls):
    def parse(p: _Parser) -> c.Command:
        tok = p.tok
        tok.sp()
        seq_set = read_seq_set(tok)
        tok.sp()
        return cls(tag=p.tag, uid=p.uid, seq_set=seq_set, mailbox=p.mailbox())

    return parse


def _sort(p: _Parser) -> c.Command:
    # RFC 5256 5: sort = ["UID" SP] "SORT" SP sort-criteria SP search-criteria; RFC 5267 3 ESORT RETURN
    tok = p.tok
    tok.sp()
    returns = partial = None
    if tok.take_word(b"RETURN"):
        tok.sp()
        returns, partial = read_search_return(tok)
        tok.sp()
    tok.open_paren()
    criteria: list[c.SortCriterion] = []
    while True:
        reverse = tok.take_word(b"REVERSE")
        if reverse:
            tok.sp()
        key = p.word("sort key")
        if key not in c.SORT_KEYS:
            raise p.error(f"unknown sort key {key}")
        criteria.append(c.SortCriterion(key=key, reverse=reverse))
        if not tok.take(b" "):
            break
    tok.close_paren()
    tok.sp()
    charset = read_charset(tok)
    tok.sp()
    keys = read_search_keys(tok, charset)
    return c.Sort(
        tag=p.tag, uid=p.uid, criteria=tuple(criteria), charset=charset, keys=keys, return_options=returns,
        partial=partial,
    )


def _cancel_update(p: _Parser) -> c.Command:
    # RFC 5267 5: command-select =/ "CANCELUPDATE" 1*(SP quoted)
    tok = p.tok
    tags: list[str] = []
    while not tok.at_end():
        tok.sp()
        tags.append(tok.quoted().decode("utf-8", "replace"))
    if not tags:
        raise p.error("CANCELUPDATE needs a tag")
    return c.CancelUpdate(tag=p.tag, tags=tuple(dict.fromkeys(tags)))


def _thread(p: _Parser) -> c.Command:
    # RFC 5256 5: thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria
    tok = p.tok
    tok.sp()
    algorithm = p.word("thread algorithm")
    if algorithm not in THREAD_ALGORITHMS:
        raise p.error(f"unknown thread algorithm {algorithm}")
    tok.sp()
    charset = read_charset(tok)
    tok.sp()
    keys = read_search_keys(tok, charset)
    return c.Thread(tag=p.tag, uid=p.uid, algorithm=algorithm, charset=charset, keys=keys)


COMMANDS = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "SELECT": _select(readonly=False),
    "EXAMINE": _select(readonly=True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(c.Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(c.Idle),
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move),
    "SORT": _sort,
    "THREAD": _thread,
    "CANCELUPDATE": _cancel_update,
    "GETQUOTA": _get_quota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
    "SETQUOTA": _set_quota,
    "ID": _id,
    "COMPRESS": _compress,
    "SETACL": _acl_args(c.SetAcl, "identifier", "rights"),
    "DELETEACL": _acl_args(c.DeleteAcl, "identifier"),
    "GETACL": _acl_args(c.GetAcl),
    "LISTRIGHTS": _acl_args(c.ListRights, "identifier"),
    "MYRIGHTS": _acl_args(c.MyRights),
}


def _start(frame: Frame, limits: ParserLimits, utf8: bool) -> tuple[_Parser, str]:
    raw_tag = frame.tag
    if raw_tag is None:
        raise ParseError("*", "missing or invalid tag")
    tag = raw_tag.decode("ascii")
    tok = Tokenizer(frame, limits, tag)
    tok.tag_token()
    if tok.at_end():
        raise tok.error("missing command")
    tok.sp()
    word = tok.read_chars(ASTRING_CHARS).decode("ascii").upper()
    if not word:
        raise tok.error("missing command")
    uid = False
    if word == "UID":
        tok.sp()
        word = tok.atom("command").decode("ascii").upper()
        if word not in UID_COMMANDS:
            raise tok.error(f"UID {word} is not a command")
        uid = True
    return _Parser(tok, tag, uid, utf8), word


def parse_command(frame: Frame, *, limits: ParserLimits = DEFAULT_LIMITS, utf8: bool = False) -> c.Command:
    p, word = _start(frame, limits, utf8)
    handler = COMMANDS.get(word)
    if handler is None:
        return c.Unknown(tag=p.tag, command=word)
    command = handler(p)
    p.tok.expect_end()
    return command


def parse_append_prefix(frame: Frame, *, limits: ParserLimits = DEFAULT_LIMITS, utf8: bool = False) -> AppendPrefix:
    """Parse the part of an APPEND up to a streamed literal's marker (see the module docstring)."""
    marker = re.search(rb"(~?)\{([0-9]{1,20})\+?\}\Z", frame.segments[-1]) if frame.segments else None
    if marker is None or len(frame.literals) != len(frame.segments) - 1:
        raise ParseError("*", "not an APPEND literal prefix")
    placeholder = StreamedLiteral(int(marker.group(2)), marker.group(1) == b"~")
    whole = Frame(frame.segments + (b"",), frame.literals + (placeholder,))
    p, word = _start(whole, limits, utf8)
    if word != "APPEND" or p.uid:
        raise p.error("not an APPEND command")
    mailbox, messages = _append_messages(p, partial=True)
    return AppendPrefix(tag=p.tag, mailbox=mailbox, index=len(messages) - 1, message=messages[-1])


def is_idle_done(frame: Frame) -> bool:
    line = frame.line
    return line is not None and line.upper() == b"DONE"


def parse_sasl_response(frame: Frame) -> bytes | None:
    """RFC 9051 6.2.2: a continuation line of AUTHENTICATE: base64, or "*" to cancel (None)."""
    line = frame.line
    if line is None:
        raise ParseError("*", "literal in SASL response")
    line = line.strip()
    if line == b"*":
        return None
    if not _B64_RE.match(line):
        raise ParseError("*", "invalid base64 in SASL response")
    try:
        return base64.b64decode(line, validate=True)
    except binascii.Error:
        raise ParseError("*", "invalid base64 in SASL response") from None
