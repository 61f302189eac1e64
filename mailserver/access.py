"""Who may do what with a mailbox: the principal, rights as data (RFC 4314) and the one check.

Every protocol reaches a mailbox or a message through :class:`MailboxAccess` (reactor thread) or
:class:`BlockingMailboxAccess` (a database thread), never through the store's mailbox lookups directly
(``tests/test_access_paths.py`` greps for it):

- ``open_mailbox(principal, ref, need) -> MailboxInfo``: ``ref`` is a mailbox id (``int``: the webmail's URLs and
  forms) or a name in the principal's own namespace (``str``: IMAP, POP3).  A name is never read as an id.
- ``open_message(principal, ref, uid, need)`` / ``open_messages(principal, ref, uids, need)``: the same check, then
  the message(s) of that mailbox.
- ``authorize(principal, mailbox, need)``: the check alone, for a mailbox already in hand (one of
  ``visible_mailboxes``, or the selected one).
- ``rights(principal, mailbox) -> Rights``: what the principal may do there (IMAP keeps it for the selected mailbox).
- ``visible_mailboxes(principal)``: the mailboxes LIST and the folder tree show (those with ``l``).
- ``open_mailbox_listed(principal, id, need)`` / ``open_message_listed(principal, id, uid, need)``: the same check
  and ``visible_mailboxes`` from one store call, for a page that shows both (the webmail's list and message pages).
- ``create_target(principal, name, need) -> account id``: where CREATE puts ``name`` (RFC 4314 4: ``k`` on the parent).

Contract: a mailbox that does not exist and one the principal may not use raise the *same* :class:`MailboxNotFound`
with the same text (made from the caller's own ``ref``), so no answer tells them apart; a missing message of a
permitted mailbox raises :class:`MessageNotFound`, a subclass.  Both are :class:`storage.store.NotFound`, so code
that maps store errors answers them as a missing mailbox.

Rights: the owner of a personal mailbox has every right on it (the owner rule of :func:`rights_of`); the
mailbox's ACL rows (``storage/shared.py``: an account's address, ``anyone``, ``$group``) give the rest, read with
the mailbox in one store call for one reader (``MailboxInfo.reader``/``reader_rights``, turned into a
:class:`Grant` by :func:`grants_for`).  A shared mailbox (``Shared/…``) has no owner person: only its ACL counts.

One exception to "missing and forbidden alike" (RFC 4314 4, 6): when the principal may see the mailbox (``l``) but
lacks another right the command needs, :class:`Forbidden` (a MailboxNotFound) says so, so IMAP can answer
``NO [NOPERM]``; without ``l`` the answer stays that of a missing mailbox.

Names: ``str`` refs are resolved in the principal's namespaces (RFC 2342: ``Other Users/<address>/<name>``,
``Shared/<name>``, else its own); a mailbox of another account comes back named as the principal sees it (its
``stored_name`` is the owner's).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

from storage.models import FLAG_DELETED, FLAG_SEEN
from storage.store import MailboxInfo, MessageInfo, NotFound

#: Ids and UIDs outside these bounds name nothing (and are never sent to the database).
MAX_ID = 2**63 - 1
MAX_UID = 2**32 - 1  # RFC 9051: nz-number


class Rights(enum.Flag):
    """A set of RFC 4314 2.1 rights (``Rights.READ | Rights.SEEN``); ``need in have`` is the subset test."""

    NONE = 0
    LOOKUP = 1 << 0  # l: the mailbox is visible to LIST/LSUB
    READ = 1 << 1  # r: SELECT, EXAMINE, STATUS, FETCH, SEARCH, COPY from
    SEEN = 1 << 2  # s: keep \Seen
    WRITE = 1 << 3  # w: flags and keywords other than \Seen and \Deleted
    INSERT = 1 << 4  # i: APPEND, COPY/MOVE into
    POST = 1 << 5  # p: send mail to the mailbox's submission address
    CREATE = 1 << 6  # k: create mailboxes under this one
    DELETE_MAILBOX = 1 << 7  # x: DELETE, RENAME
    DELETE_MESSAGES = 1 << 8  # t: set or clear \Deleted
    EXPUNGE = 1 << 9  # e: EXPUNGE, and the expunge of CLOSE and MOVE
    ADMIN = 1 << 10  # a: administer the ACL

    @classmethod
    def parse(cls, letters: str) -> Rights:
        """``Rights.parse("lrs")``; an unknown letter is a ValueError."""
        out = cls.NONE
        for ch in letters:
            try:
                out |= _BY_LETTER[ch]
            except KeyError:
                raise ValueError(f"unknown right {ch!r}") from None
        return out

    @property
    def letters(self) -> str:
        """The rights as RFC 4314 letters, in the RFC's order (``"lrswipkxtea"`` for all of them)."""
        return "".join(ch for ch, right in _BY_LETTER.items() if right in self)


_BY_LETTER = {"l": Rights.LOOKUP, "r": Rights.READ, "s": Rights.SEEN, "w": Rights.WRITE, "i": Rights.INSERT,
              "p": Rights.POST, "k": Rights.CREATE, "x": Rights.DELETE_MAILBOX, "t": Rights.DELETE_MESSAGES,
              "e": Rights.EXPUNGE, "a": Rights.ADMIN}
ALL = Rights.parse("lrswipkxtea")


@dataclass(frozen=True)
class Principal:
    """The signed-in account a request acts for."""

    account_id: int
    address: str = ""


@dataclass(frozen=True)
class Grant:
    """Rights on one mailbox given to one account (what its ACL rows add up to for that account)."""

    mailbox_id: int
    grantee: int
    rights: Rights


class MailboxNotFound(NotFound):
    """No such mailbox, or not one the principal may use this way: callers cannot tell which."""


class MessageNotFound(MailboxNotFound):
    """The mailbox is permitted, the message is not in it."""


class Forbidden(MailboxNotFound):
    """The principal may see the mailbox (``l``) but lacks a right the request needs (RFC 4314: NOPERM)."""


def grants_for(principal: Principal, mailbox: MailboxInfo) -> Sequence[Grant]:
    """The grants that give ``principal`` rights on ``mailbox``: its ACL rights as read with the mailbox for this
    principal (``MailboxInfo.reader_rights``); none when the mailbox was read for someone else."""
    if mailbox.reader != principal.account_id or not mailbox.reader_rights:
        return ()
    return (Grant(mailbox.id, principal.account_id, Rights.parse(mailbox.reader_rights)),)


def rights_of(principal: Principal, mailbox: MailboxInfo, grants: Sequence[Grant] = ()) -> Rights:
    """What ``principal`` may do with ``mailbox``: every right for its owner (the owner rule), plus its grants."""
    if mailbox.account_id == principal.account_id:
        return ALL  # nothing a grant gives adds to every right
    rights = Rights.NONE
    for grant in grants:
        if grant.mailbox_id == mailbox.id and grant.grantee == principal.account_id:
            rights |= grant.rights
    return rights


def namespace_rights(principal: Principal, account_id: int) -> Rights:
    """Rights at the root of ``account_id``'s namespace (a top-level CREATE): all in one's own, none elsewhere."""
    return ALL if account_id == principal.account_id else Rights.NONE


def flag_rights(flags: int, keywords: bool = False) -> Rights:
    """RFC 4314 4: the rights a change of these flags needs: ``s`` for \\Seen, ``t`` for \\Deleted, ``w`` for the
    others and for keywords."""
    need = Rights.NONE
    if flags & FLAG_SEEN:
        need |= Rights.SEEN
    if flags & FLAG_DELETED:
        need |= Rights.DELETE_MESSAGES
    if keywords or flags & ~(FLAG_SEEN | FLAG_DELETED):
        need |= Rights.WRITE
    return need


def _missing(ref: int | str) -> MailboxNotFound:
    return MailboxNotFound(f"no mailbox {ref}")


def authorize(principal: Principal, mailbox: MailboxInfo | None, need: Rights, ref: int | str = "", *,
              grants: Sequence[Grant] | None = None) -> MailboxInfo:
    """The one check: ``mailbox`` if it exists and ``principal`` has every right of ``need`` on it; else
    :class:`MailboxNotFound` (the same for both).  ``grants`` default to :func:`grants_for`."""
    if mailbox is not None:
        if mailbox.account_id == principal.account_id:
            return mailbox  # the owner rule: every right, so every need is met (rights_of)
        if grants is None:
            grants = grants_for(principal, mailbox)
        have = rights_of(principal, mailbox, grants)
        # Without "l" the mailbox is not there for the principal, whatever else it was given (no existence leak).
        if need in have and Rights.LOOKUP in have:
            return mailbox
        if Rights.LOOKUP in have:
            # RFC 4314 6: the principal knows the mailbox exists, so it may be told what is missing.
            raise Forbidden(f"no permission ({(need & ~have).letters}) on mailbox {ref or mailbox.name}")
    raise _missing(ref if ref != "" else (mailbox.name if mailbox else ""))


def _id_ref(ref: int | str) -> int | None:
    """The mailbox id ``ref`` names (an int), or None for a name; an id out of range is missing."""
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise TypeError(f"a mailbox is named by an id or a name, not {type(ref).__name__}")
    if isinstance(ref, int):
        if not 0 < ref <= MAX_ID:
            raise _missing(ref)
        return ref
    return None


def _uids(uids: Sequence[int]) -> list[int]:
    return [u for u in uids if isinstance(u, int) and not isinstance(u, bool) and 0 < u <= MAX_UID]


def _nearest_ancestor(mailboxes: Sequence[MailboxInfo], name: str) -> MailboxInfo | None:
    by_name = {m.name: m for m in mailboxes}
    parts = name.split("/")
    for i in range(len(parts) - 1, 0, -1):
        m = by_name.get("/".join(parts[:i]))
        if m is not None:
            return m
    return None


def _create_target(principal: Principal, mailboxes: Sequence[MailboxInfo], name: str, need: Rights) -> int:
    parent = _nearest_ancestor(mailboxes, name)
    if parent is None:
        if need not in namespace_rights(principal, principal.account_id):
            raise _missing(name)
        return principal.account_id
    return authorize(principal, parent, need, name).account_id


class MailboxAccess:
    """The check on the reactor thread, over an :class:`mailserver.asyncstore.AsyncStore`."""

    def __init__(self, astore):
        self.astore = astore

    async def open_mailbox(self, principal: Principal, ref: int | str, need: Rights) -> MailboxInfo:
        mailbox_id = _id_ref(ref)
        if mailbox_id is None:
            found = await self.astore.resolve_mailbox(principal.account_id, ref)
            mailbox = found[0] if found else None
        else:
            mailbox = await self.astore.mailbox_for_reader(mailbox_id, principal.account_id)
        return authorize(principal, mailbox, need, ref)

    async def open_mailbox_quota(self, principal: Principal, name: str, need: Rights
                                 ) -> tuple[MailboxInfo, tuple[int, int]]:
        """:meth:`open_mailbox` of a name, with the owner's quota (used, limit) read in the same store call."""
        found, quota = await self.astore.resolve_mailbox_quota(principal.account_id, name)
        return authorize(principal, found[0] if found else None, need, name), quota

    async def open_messages(self, principal: Principal, ref: int | str, uids: Sequence[int], need: Rights
                            ) -> tuple[MailboxInfo, list[MessageInfo]]:
        """The mailbox and those of ``uids`` that are in it (in UID order)."""
        mailbox = await self.open_mailbox(principal, ref, need)
        return mailbox, await self._messages(principal, mailbox, uids)

    async def _messages(self, principal: Principal, mailbox: MailboxInfo, uids: Sequence[int]) -> list[MessageInfo]:
        """Those of ``uids`` in ``mailbox`` (already checked), in UID order."""
        wanted = _uids(uids)
        if not wanted:
            return []
        if mailbox.seen_per_reader:  # the reader's own \Seen (storage/shared.py)
            return await self.astore.get_messages(mailbox.id, wanted, reader=principal.account_id)
        return await self.astore.get_messages(mailbox.id, wanted)

    async def open_message(self, principal: Principal, ref: int | str, uid: int, need: Rights
                           ) -> tuple[MailboxInfo, MessageInfo]:
        mailbox, messages = await self.open_messages(principal, ref, [uid], need)
        if not messages:
            raise MessageNotFound(f"no message {uid} in mailbox {ref}")
        return mailbox, messages[0]

    def authorize(self, principal: Principal, mailbox: MailboxInfo | None, need: Rights) -> MailboxInfo:
        return authorize(principal, mailbox, need)

    def rights(self, principal: Principal, mailbox: MailboxInfo) -> Rights:
        return rights_of(principal, mailbox, grants_for(principal, mailbox))

    async def visible_mailboxes(self, principal: Principal, *, others: bool = True) -> list[MailboxInfo]:
        """RFC 4314 4: LIST shows the mailboxes with ``l``, by name: the principal's own, then (``others``) those of
        other accounts and shared mailboxes, named as the principal sees them (RFC 2342)."""
        if not others:
            return self._visible(principal, await self.astore.list_mailboxes(principal.account_id))
        return self._visible(principal, await self.astore.reader_mailboxes(principal.account_id))

    async def open_mailbox_listed(self, principal: Principal, ref: int, need: Rights
                                  ) -> tuple[MailboxInfo, list[MailboxInfo]]:
        """:meth:`open_mailbox` of a mailbox id and :meth:`visible_mailboxes`, from one store call (a page that
        shows the folder tree): the mailbox is looked for among every mailbox the principal has rights on, as
        ``mailbox_for_reader`` would give it, and goes through the same check (a mailbox that is not among them is
        missing, as it is for ``open_mailbox``: with no rights there, it has no ``l``)."""
        mailbox_id = _id_ref(ref)
        if mailbox_id is None:
            raise TypeError("open_mailbox_listed takes a mailbox id")
        everything = await self.astore.reader_mailboxes(principal.account_id)
        mailbox = next((m for m in everything if m.id == mailbox_id), None)
        return authorize(principal, mailbox, need, ref), self._visible(principal, everything)

    async def open_message_listed(self, principal: Principal, ref: int, uid: int, need: Rights
                                  ) -> tuple[MailboxInfo, MessageInfo, list[MailboxInfo]]:
        """:meth:`open_message` with :meth:`visible_mailboxes` (see :meth:`open_mailbox_listed`)."""
        mailbox, visible = await self.open_mailbox_listed(principal, ref, need)
        messages = await self._messages(principal, mailbox, [uid])
        if not messages:
            raise MessageNotFound(f"no message {uid} in mailbox {ref}")
        return mailbox, messages[0], visible

    def _visible(self, principal: Principal, mailboxes) -> list[MailboxInfo]:
        return [m for m in mailboxes if Rights.LOOKUP in self.rights(principal, m)]

    async def create_target(self, principal: Principal, name: str, need: Rights) -> int:
        """The account whose namespace ``name`` is created in, after checking ``need`` on its nearest existing
        ancestor (RFC 4314 4: ``k`` on the parent; CREATE makes the missing levels) or on the namespace root."""
        return (await self.create_target_name(principal, name, need))[0]

    async def create_target_name(self, principal: Principal, name: str, need: Rights) -> tuple[int, str]:
        """(account, the name in that account's own namespace) for a new mailbox ``name``, checked as
        :meth:`create_target` does; in another account's namespace the nearest existing ancestor decides."""
        target = await self.astore.resolve_owner(principal.account_id, name.strip("/"))
        if target is None:
            raise _missing(name)
        owner, stored, _address = target
        if owner == principal.account_id:
            if "/" not in name.strip("/"):
                return _create_target(principal, (), name, need), stored
            return _create_target(principal, await self.astore.list_mailboxes(principal.account_id), name,
                                  need), stored
        parts = name.strip("/").split("/")
        for i in range(len(parts) - 1, 1, -1):
            found = await self.astore.resolve_mailbox(principal.account_id, "/".join(parts[:i]))
            if found is not None:
                authorize(principal, found[0], need, name)
                return owner, stored
        raise _missing(name)  # the root of another's namespace: nobody creates there


class BlockingMailboxAccess:
    """The same check for code on a database thread (POP3's maildrop load, the CLI), over a ``Store``."""

    def __init__(self, store):
        self.store = store

    def open_mailbox(self, principal: Principal, ref: int | str, need: Rights) -> MailboxInfo:
        mailbox_id = _id_ref(ref)
        if mailbox_id is None:
            mailbox = self.store.get_mailbox(principal.account_id, ref)
        else:
            mailbox = self.store.get_mailbox_by_id(mailbox_id)
        return authorize(principal, mailbox, need, ref)

    def open_messages(self, principal: Principal, ref: int | str, uids: Sequence[int], need: Rights
                      ) -> tuple[MailboxInfo, list[MessageInfo]]:
        mailbox = self.open_mailbox(principal, ref, need)
        wanted = _uids(uids)
        return mailbox, (self.store.get_messages(mailbox.id, wanted) if wanted else [])
