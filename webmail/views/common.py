"""Helpers shared by the views: the access check (a mailbox or message id the account may not use is a 404, exactly
as a missing one) and the folder tree."""

from __future__ import annotations

from dataclasses import dataclass

from mailserver.access import MailboxAccess, MailboxNotFound, Principal, Rights
from storage.store import MailboxInfo, MessageInfo
from webmail.web import NotFoundError

#: Order of the special folders at the top of the tree.
_SPECIAL_ORDER = {"": 0, "\\Drafts": 1, "\\Sent": 2, "\\Archive": 3, "\\Junk": 4, "\\Trash": 5}


@dataclass(frozen=True)
class FolderRow:
    mailbox: MailboxInfo
    depth: int
    label: str


def folder_tree(mailboxes: list[MailboxInfo]) -> list[FolderRow]:
    """INBOX first, then special-use folders, then the rest by name; children under their parents."""

    names = {mb.name for mb in mailboxes}

    def key(mb: MailboxInfo):
        top = mb.name.split("/", 1)[0]
        root = next((m for m in mailboxes if m.name == top), mb)
        if mb.stored_name:  # another account's (Shared/..., Other Users/...): after one's own
            rank = 10
        elif top == "INBOX":
            rank = -1
        else:
            rank = _SPECIAL_ORDER.get(root.special_use, 9) if root.special_use else 9
        return (rank, mb.name.lower().split("/"))

    rows = []
    for mb in sorted(mailboxes, key=key):
        # A folder whose parent is not listed (a shared mailbox's "Shared/" or "Other Users/<owner>/" levels, a
        # parent without "l") is shown by its whole name, at the depth of its nearest listed ancestor.
        parts = mb.name.split("/")
        listed = [i for i in range(1, len(parts)) if "/".join(parts[:i]) in names]
        if listed and listed[-1] == len(parts) - 1:
            rows.append(FolderRow(mb, len(listed), parts[-1]))
        else:
            start = listed[-1] if listed else 0
            rows.append(FolderRow(mb, len(listed), "/".join(parts[start:])))
    return rows


def principal(ctx) -> Principal:
    return Principal(ctx.account_id, ctx.session.address)


def access(ctx) -> MailboxAccess:
    return MailboxAccess(ctx.astore)


def _number(text) -> int:
    try:
        return int(str(text), 10)
    except (TypeError, ValueError):
        raise NotFoundError() from None


async def open_mailbox(ctx, mailbox_id: int | str, need: Rights) -> MailboxInfo:
    """The mailbox ``mailbox_id`` (from a path or a form) if the signed-in account has the rights ``need`` on it;
    404 otherwise, missing and forbidden alike (never 403: ids are not confirmed)."""
    try:
        return await access(ctx).open_mailbox(principal(ctx), _number(mailbox_id), need)
    except MailboxNotFound:
        raise NotFoundError() from None


async def open_mailbox_listed(ctx, mailbox_id: int | str, need: Rights) -> tuple[MailboxInfo, list[MailboxInfo]]:
    """:func:`open_mailbox` and :func:`mailboxes` (the folder tree) from one store call; the same 404."""
    try:
        return await access(ctx).open_mailbox_listed(principal(ctx), _number(mailbox_id), need)
    except MailboxNotFound:
        raise NotFoundError() from None


async def open_message_listed(ctx, mailbox_id, uid, need: Rights
                              ) -> tuple[MailboxInfo, MessageInfo, list[MailboxInfo]]:
    """:func:`open_message` and :func:`mailboxes` (the folder tree), the mailbox and the tree from one store call."""
    try:
        return await access(ctx).open_message_listed(principal(ctx), _number(mailbox_id), _number(uid), need)
    except MailboxNotFound:
        raise NotFoundError() from None


async def open_message(ctx, mailbox_id, uid, need: Rights) -> tuple[MailboxInfo, MessageInfo]:
    """The mailbox and its message ``uid``, through the same check; 404 for a missing or forbidden either."""
    try:
        return await access(ctx).open_message(principal(ctx), _number(mailbox_id), _number(uid), need)
    except MailboxNotFound:
        raise NotFoundError() from None


def authorize(ctx, mailbox: MailboxInfo, need: Rights) -> MailboxInfo:
    """The same check for a mailbox already in hand (a special folder of :func:`mailboxes`)."""
    try:
        return access(ctx).authorize(principal(ctx), mailbox, need)
    except MailboxNotFound:
        raise NotFoundError() from None


async def create_target(ctx, name: str) -> int:
    """The account a new folder ``name`` goes to, with RFC 4314 "k" on its parent (404 otherwise)."""
    try:
        return await access(ctx).create_target(principal(ctx), name, Rights.CREATE)
    except MailboxNotFound:
        raise NotFoundError() from None


def rights(ctx, mailbox: MailboxInfo) -> Rights:
    return access(ctx).rights(principal(ctx), mailbox)


async def mailboxes(ctx) -> list[MailboxInfo]:
    """The mailboxes the folder tree shows (RFC 4314 "l")."""
    return await access(ctx).visible_mailboxes(principal(ctx))


def special(mbs: list[MailboxInfo], use: str) -> MailboxInfo | None:
    for mb in mbs:
        if mb.special_use == use:
            return mb
    return None


def inbox(mbs: list[MailboxInfo]) -> MailboxInfo | None:
    return next((mb for mb in mbs if mb.name == "INBOX"), None)


def parse_ref(text: str) -> tuple[int, int] | None:
    """"mailbox_id:uid" -> (mailbox_id, uid)."""
    try:
        a, b = text.split(":", 1)
        return int(a), int(b)
    except (ValueError, AttributeError):
        return None
