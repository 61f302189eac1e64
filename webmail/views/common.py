"""Helpers shared by the views: ownership checks (another account's id is always a 404) and the folder tree."""

from __future__ import annotations

from dataclasses import dataclass

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

    def key(mb: MailboxInfo):
        top = mb.name.split("/", 1)[0]
        root = next((m for m in mailboxes if m.name == top), mb)
        if top == "INBOX":
            rank = -1
        else:
            rank = _SPECIAL_ORDER.get(root.special_use, 9) if root.special_use else 9
        return (rank, mb.name.lower().split("/"))

    rows = []
    for mb in sorted(mailboxes, key=key):
        depth = mb.name.count("/")
        rows.append(FolderRow(mb, depth, mb.name.rsplit("/", 1)[-1]))
    return rows


async def owned_mailbox(ctx, mailbox_id: int | str) -> MailboxInfo:
    """The mailbox if it belongs to the signed-in account; 404 otherwise (never 403: ids are not confirmed)."""
    try:
        mid = int(mailbox_id)
    except (TypeError, ValueError):
        raise NotFoundError() from None
    mb = await ctx.astore.get_mailbox_by_id(mid)
    if mb is None or mb.account_id != ctx.account_id:
        raise NotFoundError()
    return mb


async def owned_message(ctx, mailbox_id, uid) -> tuple[MailboxInfo, MessageInfo]:
    mb = await owned_mailbox(ctx, mailbox_id)
    try:
        u = int(uid)
    except (TypeError, ValueError):
        raise NotFoundError() from None
    msgs = await ctx.astore.get_messages(mb.id, [u])
    if not msgs:
        raise NotFoundError()
    return mb, msgs[0]


async def mailboxes(ctx) -> list[MailboxInfo]:
    return await ctx.astore.list_mailboxes(ctx.account_id)


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
