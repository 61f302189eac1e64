"""Catching up after a gap in the change events (a :data:`~storage.changes.RESYNC` event).

With PostgreSQL, events of other processes arrive through LISTEN; notifications sent while that connection was
down are lost.  When it is back, the bridge publishes RESYNC, and each IMAP session with a mailbox selected reads
``changes_since`` its ``highest_modseq`` (RFC 7162: the (mailbox, modseq) index and the expunge tombstones, as the
snapshot cache does) and queues the result as ordinary change events, before its next flush (at once in IDLE,
RFC 9051 6.3.13; else at the end of the next command).  Applying them is idempotent, so what the session already
knew is dropped by :meth:`~mailserver.imap.selected.SelectedMailbox.flush`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage import changes as ch

if TYPE_CHECKING:
    from .selected import SelectedMailbox
    from .session import ImapSession


def catch_up_events(sel: SelectedMailbox, account_id: int, changed, vanished) -> list[ch.Change]:
    """``changes_since`` rows (MessageMeta in UID order) and vanished UIDs as the change events they stand for."""
    events = []
    for m in changed:
        kind = ch.FLAGS if sel.index_of(m.uid) is not None else ch.EXISTS
        events.append(ch.Change(kind, account_id, sel.mailbox_id, uid=m.uid, modseq=m.modseq, flags=m.flags,
                                keywords=tuple(m.keywords), size=m.size, reader=sel.reader))
    for uid in vanished:
        if sel.index_of(uid) is not None:
            events.append(ch.Change(ch.EXPUNGE, account_id, sel.mailbox_id, uid=uid))
    return events


async def catch_up(s: ImapSession, since: int | None = None) -> int:
    """Queue what changed in the selected mailbox since the session's ``highest_modseq`` (or since ``since`` when
    that is lower: the commit board's catch-up, mailserver.commitboard); the caller flushes.  Returns the highest
    modseq among the changed messages read (``since`` if none)."""
    sel = s.selected
    if sel is None or s.account_id is None:
        return since or 0
    base = sel.highest_modseq if since is None else min(since, sel.highest_modseq)
    changed, vanished = await s.services.astore.changes_since(sel.mailbox_id, base, sel.reader)
    if s.selected is not sel or s.closed:
        return since or 0  # the session moved on meanwhile; its next SELECT reads the mailbox afresh
    for event in catch_up_events(sel, s.account_id, changed, vanished):
        sel.on_change(event)
    return max((m.modseq for m in changed), default=since or 0)
