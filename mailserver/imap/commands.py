"""Typed IMAP commands: one frozen, keyword-only dataclass per command (RFC 3501 6, RFC 9051 6, extensions).

Every command has ``tag: str`` and the class attribute ``name`` (the IMAP command word, e.g. ``"UID FETCH"`` is
``Fetch`` with ``uid=True``). Mailbox names are ``str`` already decoded (modified UTF-7 or UTF-8) with INBOX
normalised; flags are ``str`` as sent (system flags keep their case as written, e.g. ``"\\\\Seen"``; compare with
``flag.lower()``); keywords of ENABLE/STATUS/LIST options are upper-cased.

Any-state: Capability, Noop, Logout, Id(params), Unknown(name)
Not authenticated: StartTLS, Authenticate(mechanism, initial_response), Login(username, password)
Authenticated: Enable(capabilities), Select(mailbox, readonly, condstore, qresync), Create(mailbox, special_use),
  Delete(mailbox), Rename(mailbox, new_mailbox), Subscribe(mailbox), Unsubscribe(mailbox),
  List(reference, patterns, selection, return_options, return_status, extended), Lsub(reference, pattern),
  Namespace, Status(mailbox, items), Append(mailbox, messages), Idle, GetQuota(root), GetQuotaRoot(mailbox),
  SetQuota(root, limits), Compress(mechanism)
Selected: Check, Close, Unselect, Expunge(uid_set), Search(uid, charset, keys, return_options, partial),
  Fetch(uid, seq_set, items, changed_since, vanished), Store(uid, seq_set, mode, silent, flags, unchanged_since),
  Copy(uid, seq_set, mailbox), Move(uid, seq_set, mailbox), Sort(uid, criteria, charset, keys, return_options,
  partial), Thread(uid, algorithm, charset, keys), CancelUpdate(tags)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from .searchkeys import SearchKey
from .seqset import SeqSet
from .wire import StreamedLiteral

_dc = dataclass(frozen=True, kw_only=True)


@_dc
class Command:
    name: ClassVar[str] = ""
    tag: str


# -- any state ----------------------------------------------------------------------------------------------

@_dc
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@_dc
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@_dc
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@_dc
class Id(Command):
    """RFC 2971: ``params`` is None for ``ID NIL``, else (field, value-or-None) pairs in the order sent."""

    name: ClassVar[str] = "ID"
    params: tuple[tuple[str, str | None], ...] | None


@_dc
class Unknown(Command):
    """A command word this server does not implement (answered BAD)."""

    command: str


# -- not authenticated --------------------------------------------------------------------------------------

@_dc
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@_dc
class Authenticate(Command):
    """RFC 9051 6.2.2 / RFC 4959 SASL-IR: ``initial_response`` is the base64 text as sent ("=" = empty), or None."""

    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str  # upper-cased
    initial_response: str | None


@_dc
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    username: str
    password: str


# -- authenticated ------------------------------------------------------------------------------------------

@_dc
class Enable(Command):
    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...]  # upper-cased


@_dc
class QresyncParams:
    """RFC 7162 3.2.5.1: SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]))."""

    uid_validity: int
    modseq: int
    known_uids: SeqSet | None = None
    seq_match: tuple[SeqSet, SeqSet] | None = None  # (known sequence numbers, corresponding UIDs)


@_dc
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``."""

    name: ClassVar[str] = "SELECT"
    mailbox: str
    readonly: bool = False
    condstore: bool = False  # RFC 7162 3.1.8: (CONDSTORE) parameter
    qresync: QresyncParams | None = None


@_dc
class Create(Command):
    name: ClassVar[str] = "CREATE"
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 3: CREATE ... (USE (\Drafts))


@_dc
class Delete(Command):
    name: ClassVar[str] = "DELETE"
    mailbox: str


@_dc
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    mailbox: str
    new_mailbox: str


@_dc
class Subscribe(Command):
    name: ClassVar[str] = "SUBSCRIBE"
    mailbox: str


@_dc
class Unsubscribe(Command):
    name: ClassVar[str] = "UNSUBSCRIBE"
    mailbox: str


@_dc
class List(Command):
    """RFC 9051 6.3.9 / RFC 5258 LIST-EXTENDED / RFC 5819 LIST-STATUS / RFC 6154 SPECIAL-USE.

    ``reference`` and ``patterns`` are decoded names (patterns keep ``%`` and ``*``; a pattern that is not modified
    UTF-7 matches nothing and is left out, so ``patterns`` may be empty); ``selection`` and
    ``return_options`` are upper-cased option names (SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE /
    SUBSCRIBED CHILDREN SPECIAL-USE STATUS); ``return_status`` holds the STATUS items of RETURN (STATUS (...)).
    ``extended`` is True when the extended syntax (selection options, a pattern list or RETURN) was used.
    """

    name: ClassVar[str] = "LIST"
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()
    return_status: tuple[str, ...] = ()
    extended: bool = False


@_dc
class Lsub(Command):
    name: ClassVar[str] = "LSUB"
    reference: str
    pattern: str | None  # None: the pattern was not modified UTF-7 and matches nothing


@_dc
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT"}
)


@_dc
class Status(Command):
    name: ClassVar[str] = "STATUS"
    mailbox: str
    items: tuple[str, ...]  # upper-cased, members of STATUS_ITEMS, in the order asked


@_dc
class AppendMessage:
    """One message of APPEND (RFC 3502 MULTIAPPEND allows several).

    ``data`` is the literal, or a StreamedLiteral when the reader streamed it (the session has the bytes);
    ``binary`` marks literal8 (RFC 3516 / RFC 9051); ``utf8`` the RFC 6855 4 ``UTF8 (~{n})`` form.
    """

    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    data: bytes | StreamedLiteral
    binary: bool = False
    utf8: bool = False


@_dc
class Append(Command):
    name: ClassVar[str] = "APPEND"
    mailbox: str
    messages: tuple[AppendMessage, ...]


@_dc
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@_dc
class GetQuota(Command):
    name: ClassVar[str] = "GETQUOTA"
    root: str


@_dc
class GetQuotaRoot(Command):
    name: ClassVar[str] = "GETQUOTAROOT"
    mailbox: str


@_dc
class SetQuota(Command):
    name: ClassVar[str] = "SETQUOTA"
    root: str
    limits: tuple[tuple[str, int], ...]  # (resource upper-cased, limit)


@_dc
class Compress(Command):
    name: ClassVar[str] = "COMPRESS"
    mechanism: str  # upper-cased; RFC 4978 defines DEFLATE


# -- selected -----------------------------------------------------------------------------------------------

@_dc
class Check(Command):
    name: ClassVar[str] = "CHECK"


@_dc
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@_dc
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@_dc
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE <uid_set> (RFC 4315 2.1) when ``uid_set`` is set."""

    name: ClassVar[str] = "EXPUNGE"
    uid_set: SeqSet | None = None


@_dc
class Search(Command):
    """``return_options`` None: classic SEARCH; a tuple (RFC 4731 / RFC 9051 ESEARCH): ``()`` without ``partial``
    means ALL. ``partial``: the RFC 5267 PARTIAL range (low, high), low <= high."""

    name: ClassVar[str] = "SEARCH"
    uid: bool = False
    charset: str | None = None  # upper-cased; only US-ASCII / UTF-8 pass the parser
    keys: SearchKey
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None


@_dc
class Section:
    """RFC 3501 9 section: ``part`` numbers, then ``text``: None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT
    or MIME; ``fields`` upper-cased for HEADER.FIELDS(.NOT). ``BODY[]`` is ``Section()``."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def render(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
            if self.fields:
                out += " (" + " ".join(self.fields) + ")"
        return out


@_dc
class FetchAtt:
    """One FETCH item. ``name`` is FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, UID, RFC822,
    RFC822.HEADER, RFC822.TEXT, BINARY, BINARY.SIZE or MODSEQ.
    ``BODY[...]`` is name BODY with a ``section`` (plain BODY has section None); ``peek`` for BODY.PEEK /
    BINARY.PEEK; ``partial`` is (origin, length)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> str:
        """The item name as the FETCH response carries it (RFC 3501 7.4.2: no .PEEK, partial shows the origin)."""
        if self.section is None:
            return self.name
        out = f"{self.name}[{self.section.render()}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out

    @property
    def sets_seen(self) -> bool:
        """RFC 3501 6.4.5: BODY[...], BINARY[...], RFC822 and RFC822.TEXT set \\Seen; PEEK variants do not."""
        if self.peek:
            return False
        return (self.name in ("BODY", "BINARY") and self.section is not None) or self.name in ("RFC822", "RFC822.TEXT")


@_dc
class Fetch(Command):
    name: ClassVar[str] = "FETCH"
    uid: bool = False
    seq_set: SeqSet
    items: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 3.1.4.1 CHANGEDSINCE
    vanished: bool = False  # RFC 7162 3.2.6 VANISHED (UID FETCH only, with CHANGEDSINCE)


class StoreMode(enum.Enum):
    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@_dc
class Store(Command):
    name: ClassVar[str] = "STORE"
    uid: bool = False
    seq_set: SeqSet
    mode: StoreMode
    silent: bool = False
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 3.1.3 UNCHANGEDSINCE


@_dc
class Copy(Command):
    name: ClassVar[str] = "COPY"
    uid: bool = False
    seq_set: SeqSet
    mailbox: str


@_dc
class Move(Command):
    name: ClassVar[str] = "MOVE"
    uid: bool = False
    seq_set: SeqSet
    mailbox: str


SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})


@_dc
class SortCriterion:
    key: str  # member of SORT_KEYS
    reverse: bool = False


@_dc
class Sort(Command):
    """RFC 5256 3 SORT (and RFC 5267 ESORT ``RETURN`` options, None when absent; ``partial`` as for Search)."""

    name: ClassVar[str] = "SORT"
    uid: bool = False
    criteria: tuple[SortCriterion, ...]
    charset: str
    keys: SearchKey
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None


@_dc
class CancelUpdate(Command):
    """RFC 5267 4.3.5: CANCELUPDATE 1*(SP quoted): the tags of the searching commands whose updates end."""

    name: ClassVar[str] = "CANCELUPDATE"
    tags: tuple[str, ...]


@_dc
class Thread(Command):
    name: ClassVar[str] = "THREAD"
    uid: bool = False
    algorithm: str  # REFERENCES or ORDEREDSUBJECT
    charset: str
    keys: SearchKey


# RFC 4314 3: the ACL commands.  ``identifier`` and ``rights`` are the client's astrings as sent (UTF-8).


@_dc
class SetAcl(Command):
    name: ClassVar[str] = "SETACL"
    mailbox: str
    identifier: str
    rights: str  # may start with "+" or "-" (RFC 4314 3.1)


@_dc
class DeleteAcl(Command):
    name: ClassVar[str] = "DELETEACL"
    mailbox: str
    identifier: str


@_dc
class GetAcl(Command):
    name: ClassVar[str] = "GETACL"
    mailbox: str


@_dc
class ListRights(Command):
    name: ClassVar[str] = "LISTRIGHTS"
    mailbox: str
    identifier: str


@_dc
class MyRights(Command):
    name: ClassVar[str] = "MYRIGHTS"
    mailbox: str
