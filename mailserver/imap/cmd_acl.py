"""RFC 4314 ACL commands (authenticated state): SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS.

The mailbox is opened with ``session.open_mailbox`` (the command table names ``a`` for all but MYRIGHTS), so a
mailbox without ``l`` answers as a missing one; the rows themselves live in ``storage/shared.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailserver.access import ALL, Rights
from storage.errors import Invalid
from storage.shared import normalize_rights

from . import commands as c
from . import response as r
from .cmd_common import Bad, No

if TYPE_CHECKING:
    from .session import ImapSession

#: RFC 4314 4: MYRIGHTS needs any one of these.
_MYRIGHTS_ANY = Rights.parse("lrikxa")


def _owner_address(s: ImapSession, mailbox) -> str | None:
    """The owner's address when the mailbox is a person's (its implicit full rights are listed), else None."""
    return s.username if mailbox.account_id == s.account_id else None


def _acl_line(mailbox_name: str, entries: list[tuple[str, str]], utf8: bool) -> bytes:
    out = b"ACL " + r.mailbox(mailbox_name, utf8=utf8)
    for ident, rights in entries:
        out += b" " + r.astring(ident) + b" " + r.astring(rights)
    return r.untagged(out)


async def setacl(s: ImapSession, cmd: c.SetAcl):
    mailbox = await s.open_mailbox(cmd.mailbox)
    body = cmd.rights[1:] if cmd.rights[:1] in ("+", "-") else cmd.rights
    try:
        normalize_rights(body)
    except Invalid as e:
        raise Bad(str(e)) from None  # RFC 4314 3.1: an unknown right is BAD
    if mailbox.account_id == s.account_id and cmd.identifier.lower() == s.username:
        raise No("the owner always has every right", "CANNOT")
    try:
        # Any well-formed address is kept: SETACL must not tell which addresses have accounts.
        await s.services.astore.set_acl(mailbox.id, cmd.identifier, cmd.rights, existing=False)
    except Invalid as e:
        raise No(str(e), "CANNOT") from None


async def deleteacl(s: ImapSession, cmd: c.DeleteAcl):
    mailbox = await s.open_mailbox(cmd.mailbox)
    await s.services.astore.delete_acl(mailbox.id, cmd.identifier)


async def getacl(s: ImapSession, cmd: c.GetAcl):
    mailbox = await s.open_mailbox(cmd.mailbox)
    entries = list(await s.services.astore.get_acl(mailbox.id))
    owner = _owner_address(s, mailbox)
    if owner is not None:
        entries = [(owner, ALL.letters)] + [e for e in entries if e[0] != owner]
    s.send(_acl_line(cmd.mailbox, entries, s.utf8))


async def listrights(s: ImapSession, cmd: c.ListRights):
    mailbox = await s.open_mailbox(cmd.mailbox)
    line = b"LISTRIGHTS " + r.mailbox(cmd.mailbox, utf8=s.utf8) + b" " + r.astring(cmd.identifier)
    if _owner_address(s, mailbox) == cmd.identifier.lower():
        line += b" " + r.astring(ALL.letters)  # RFC 4314 3.5: the owner always has them all
    else:
        line += b' "" ' + " ".join(ALL.letters).encode()
    s.send(r.untagged(line))


async def myrights(s: ImapSession, cmd: c.MyRights):
    mailbox = await s.open_mailbox(cmd.mailbox)
    have = s.access.rights(s.principal, mailbox)
    if not have & _MYRIGHTS_ANY:
        raise No(f"no mailbox {cmd.mailbox}", "NONEXISTENT")  # the same answer as a missing mailbox
    s.send(r.untagged(b"MYRIGHTS " + r.mailbox(cmd.mailbox, utf8=s.utf8) + b" " + r.astring(have.letters)))
