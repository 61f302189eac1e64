"""Mailbox IMAP commands (authenticated state): SELECT/EXAMINE (with QRESYNC), CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND and the QUOTA commands.

Handlers take ``(session, command)`` and follow the contract of :mod:`mailserver.imap.cmd_common`. A mailbox the
command names is opened with ``session.open_mailbox`` (the rights come from the command table), never looked up in
the store directly; the store is then given the mailbox's own owner, not the session's account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.access import Rights
from storage.models import FLAG_DELETED
from storage.store import AlreadyExists, Invalid, check_mailbox_name

from . import commands as c
from . import response as r
from .cmd_common import AUTHENTICATED, SELECTED, Bad, No, Ok
from .mailboxes import list_entries, lsub_entries
from .selected import SelectedMailbox, UpdateOptions, split_flags
from .seqset import SeqSet
from .snapshot import Snapshot, SnapshotCache, server_cache

log = Logger()

if TYPE_CHECKING:
    from .session import ImapSession

#: Special-use attributes CREATE accepts (RFC 6154 2; \All and \Flagged are virtual mailboxes we do not offer).
CREATE_SPECIAL_USE = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})


def leave_selected(s: ImapSession, *, closed_code: bool) -> None:
    s.unwatch()
    s.selected_rights = Rights.NONE
    s.selected_foreign = False
    if s.selected is not None:
        s.selected = None
        if closed_code:
            # RFC 7162 3.2.11 / RFC 9051 7.1: the previous mailbox is closed.  Held, to leave with the answer
            # (which always follows: the new mailbox's data or the tagged NO).
            s.hold(r.status_line("OK", "previous mailbox closed", "CLOSED"))
    s.state = AUTHENTICATED


async def snapshot_for(services, mailbox) -> Snapshot:
    """The mailbox's listing: the process's snapshot plus what changed since, or listed afresh.

    Refreshes of one mailbox's snapshot are serialised (a lock per mailbox), so two sessions selecting it at once
    never fold results of different ages into it.
    """
    state = services.state
    if state.imap_snapshots is None:
        state.imap_snapshots = server_cache()
    cache: SnapshotCache = state.imap_snapshots
    locks = state.imap_snapshot_locks
    lock = locks.setdefault(mailbox.id, defer.DeferredLock())
    await lock.acquire()
    try:
        snap = cache.get(mailbox.id, mailbox.uid_validity)
        if snap is None:
            cache.misses += 1
            columns = await services.astore.list_message_columns(mailbox.id)
            snap = Snapshot.from_columns(mailbox.uid_validity, mailbox.highest_modseq, columns)
        else:
            cache.hits += 1
            if snap.modseq < mailbox.highest_modseq:
                changed, vanished = await services.astore.changes_since(mailbox.id, snap.modseq)
                snap.apply(changed, vanished, mailbox.highest_modseq)
        cache.put(mailbox.id, snap)
        return snap
    finally:
        lock.release()
        if not lock.locked and not lock.waiting:
            locks.pop(mailbox.id, None)


async def preload_snapshots(services) -> int:
    """At start, load the largest mailboxes' snapshots in the background, so that the first SELECT of a large
    mailbox after a restart also costs only what changed since.  Returns how many were loaded."""
    from .snapshot import MAX_SNAPSHOTS, MIN_CACHED_MESSAGES

    loaded = 0
    for mailbox in await services.astore.large_mailboxes(MIN_CACHED_MESSAGES, MAX_SNAPSHOTS):
        try:
            await snapshot_for(services, mailbox)
            loaded += 1
        except Exception:
            log.failure("preloading the listing of mailbox {id} failed", id=mailbox.id)
    return loaded


async def _load_selected(s: ImapSession, mailbox, readonly: bool) -> SelectedMailbox:
    snap = await snapshot_for(s.services, mailbox)
    sel = SelectedMailbox.from_snapshot(mailbox, snap, readonly=readonly)
    if mailbox.seen_per_reader:
        # storage/shared.py: the snapshot holds the shared flags; this reader's own \Seen goes over them.
        sel.reader = s.account_id
        sel.apply_seen(await s.services.astore.seen_uids(mailbox.id, s.account_id))
    return sel


async def select(s: ImapSession, cmd: c.Select):
    if cmd.qresync is not None and not s.qresync:
        raise Bad("QRESYNC parameter needs ENABLE QRESYNC")  # RFC 7162 3.2.5
    leave_selected(s, closed_code=True)
    mailbox = await s.open_mailbox(cmd.mailbox)
    board_seen = s.board_mark(mailbox)
    # Events for the mailbox published while its messages load are kept and applied (idempotently) afterwards.
    s.watch(mailbox.id)
    s.collect_changes(mailbox.id)
    try:
        sel = await _load_selected(s, mailbox, cmd.readonly)
        recent = s.recent_for(mailbox)
        if not s.rev2:
            # Sessions of other processes take \Recent too: settle with the cluster state (still collecting).
            if cmd.readonly:
                await recent.refresh(mailbox.id, mailbox.uid_validity)
            elif sel.uids:
                await recent.reserve(mailbox.id, mailbox.uid_validity, sel.uids[-1])
    except BaseException:
        s.unwatch()
        raise
    finally:
        collected = s.collected_changes()
    if cmd.condstore:
        s.condstore = True  # RFC 7162 3.1.8
    if not s.rev2:
        if cmd.readonly:
            unclaimed = recent.unclaimed_count(mailbox.id, mailbox.uid_validity, sel.uids)
            sel.recent = set(sel.uids[len(sel.uids) - unclaimed:])
        else:
            sel.recent = set(recent.claim(mailbox.id, mailbox.uid_validity, sel.uids))
    out = [sel.flags_response(), r.untagged(b"%d EXISTS" % sel.exists)]
    if not s.rev2:
        out.append(r.untagged(b"%d RECENT" % len(sel.recent)))  # RFC 3501 7.3.2
        unseen = sel.first_unseen()
        if unseen is not None:
            out.append(r.status_line("OK", "first unseen", f"UNSEEN {unseen}"))  # RFC 3501 6.3.1
    out.append(r.status_line("OK", "UIDs valid", f"UIDVALIDITY {sel.uid_validity}"))
    out.append(r.status_line("OK", "predicted next UID", f"UIDNEXT {sel.uid_next}"))
    out.append(sel.permanent_flags_response())
    # RFC 7162 3.1.2.1: HIGHESTMODSEQ in every successful SELECT/EXAMINE.
    out.append(r.status_line("OK", "highest", f"HIGHESTMODSEQ {sel.highest_modseq}"))
    if s.rev2:
        # RFC 9051 6.3.2: the server sends the mailbox's LIST response.
        out.append(r.untagged(b'LIST () "/" ' + r.mailbox(sel.name, utf8=s.utf8)))
    s.send(b"".join(out))
    sel.board_seen, sel.complete_modseq = board_seen, mailbox.highest_modseq
    s.selected = sel
    s.selected_rights = s.access.rights(s.principal, mailbox)
    s.selected_foreign = mailbox.account_id != s.account_id
    s.state = SELECTED
    sel.pending = collected
    q = cmd.qresync
    if q is not None and q.uid_validity == sel.uid_validity:
        await _qresync(s, sel, q)
    return Ok(f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed", "READ-ONLY" if cmd.readonly else "READ-WRITE")


async def _qresync(s: ImapSession, sel: SelectedMailbox, q: c.QresyncParams) -> None:
    """RFC 7162 3.2.5.2: VANISHED (EARLIER) and FETCH for what changed since the client's modseq."""
    changed, vanished = await s.services.astore.changes_since(sel.mailbox_id, q.modseq, sel.reader)
    known = q.known_uids
    largest = sel.uids[-1] if sel.uids else 0
    if known is not None:
        vanished = [u for u in vanished if known.contains(u, max(largest, vanished[-1] if vanished else 0))]
    vanished = [u for u in vanished if sel.index_of(u) is None]
    out = []
    if vanished:
        out.append(r.untagged("VANISHED (EARLIER) " + SeqSet.from_numbers(vanished).render()))
    opts = UpdateOptions(condstore=True, qresync=True)
    for m in changed:
        seq = sel.seq_of(m.uid)
        if seq is None or (known is not None and not known.contains(m.uid, largest)):
            continue
        out.append(sel.fetch_flags_line(seq, m.uid, opts, with_uid=True))
    if out:
        s.send(b"".join(out))


async def create(s: ImapSession, cmd: c.Create):
    special = ""
    if cmd.special_use:
        uses = [u for u in cmd.special_use]
        canon = {u.lower(): u for u in CREATE_SPECIAL_USE}
        if len(uses) > 1 or uses[0].lower() not in canon:
            raise No("unsupported special-use attribute", "USEATTR")  # RFC 6154 5.2
        special = canon[uses[0].lower()]
    if cmd.mailbox.rstrip("/") == "INBOX":
        raise No("INBOX exists", "ALREADYEXISTS")  # RFC 9051 6.3.4
    owner, name = await s.create_target(cmd.mailbox)
    # RFC 9051 6.3.4: CREATE does not subscribe; the parents it creates are not subscribed either.
    await s.services.astore.create_mailbox(owner, name, special, subscribed=False)


async def delete(s: ImapSession, cmd: c.Delete):
    if cmd.mailbox == "INBOX":
        raise No("INBOX cannot be deleted", "CANNOT")  # RFC 9051 6.3.5
    mailbox = await s.open_mailbox(cmd.mailbox)
    if s.selected is not None and s.selected.mailbox_id == mailbox.id:
        leave_selected(s, closed_code=False)
    await s.services.astore.delete_mailbox(mailbox.account_id, mailbox.local_name)


async def rename(s: ImapSession, cmd: c.Rename):
    try:
        new = check_mailbox_name(cmd.new_mailbox)  # a bad or INBOX new name is told first, as the store does
        if new == "INBOX":
            raise AlreadyExists("INBOX exists")  # RFC 9051 6.3.6
        mailbox = await s.open_mailbox(cmd.mailbox)
        owner, new_name = await s.create_target(new)
        if owner != mailbox.account_id:
            raise Invalid("cannot rename a mailbox into another namespace")
        await s.services.astore.rename_mailbox(mailbox.account_id, mailbox.local_name, new_name)
    except Invalid as e:
        raise No(str(e), "CANNOT") from None


async def subscribe(s: ImapSession, cmd: c.Subscribe):
    await s.services.astore.set_subscribed(s.account_id, cmd.mailbox, True)


async def unsubscribe(s: ImapSession, cmd: c.Unsubscribe):
    await s.services.astore.set_subscribed(s.account_id, cmd.mailbox, False)


def _list_line(kind: str, entry, utf8: bool) -> bytes:
    line = kind.encode() + b" " + r.flag_list(entry.attributes) + b' "/" ' + r.mailbox(entry.name, utf8=utf8)
    if entry.childinfo:
        line += b' ("CHILDINFO" ("SUBSCRIBED"))'  # RFC 5258 3.5
    return r.untagged(line)


async def list_(s: ImapSession, cmd: c.List):
    if not cmd.extended and len(cmd.patterns) == 1 and cmd.patterns[0] == "":
        # RFC 9051 6.3.9: an empty pattern asks for the hierarchy delimiter and the root.
        s.send(r.untagged('LIST (\\Noselect) "/" ""'))
        return None
    mailboxes = await s.access.visible_mailboxes(s.principal)
    subs = None
    if "SUBSCRIBED" in cmd.selection or "SUBSCRIBED" in cmd.return_options:
        subs = set(await s.services.astore.list_subscriptions(s.account_id))
    entries = list_entries(mailboxes, cmd.patterns, reference=cmd.reference, selection=cmd.selection,
                           return_options=cmd.return_options, subscriptions=subs)
    by_name = {m.name: m for m in mailboxes}
    for e in entries:
        s.send(_list_line("LIST", e, s.utf8))
        mailbox = by_name.get(e.name)
        if "STATUS" in cmd.return_options and e.selectable and mailbox is not None and \
                Rights.READ in s.access.rights(s.principal, mailbox):
            # RFC 5819 2: the STATUS response follows the mailbox's LIST response (RFC 4314 4: STATUS needs "r").
            s.send(await _status_line(s, mailbox, cmd.return_status))


async def lsub(s: ImapSession, cmd: c.Lsub):
    if cmd.pattern is None:
        return None
    mailboxes = await s.access.visible_mailboxes(s.principal)
    subs = set(await s.services.astore.list_subscriptions(s.account_id))
    for e in lsub_entries(mailboxes, cmd.reference, cmd.pattern, subs):
        s.send(_list_line("LSUB", e, s.utf8))


async def _status_line(s: ImapSession, mailbox, items: tuple[str, ...]) -> bytes:
    uids = None
    deleted = None
    if "RECENT" in items or "DELETED" in items:
        sel = s.selected
        if sel is not None and sel.mailbox_id == mailbox.id:
            uids = list(sel.uids)
            deleted = sel.count_flag(FLAG_DELETED)
        else:
            metas = await s.services.astore.list_messages(mailbox.id)
            uids = [m.uid for m in metas]
            deleted = sum(1 for m in metas if m.flags & FLAG_DELETED)
    unseen = mailbox.unseen_count
    if "UNSEEN" in items and mailbox.seen_per_reader:
        unseen = await s.services.astore.reader_unseen(mailbox.id, s.account_id)  # the reader's own \Seen
    values = {
        "MESSAGES": mailbox.message_count,
        "UIDNEXT": mailbox.uid_next,
        "UIDVALIDITY": mailbox.uid_validity,
        "UNSEEN": unseen,
        "SIZE": mailbox.total_size,  # RFC 8438
        "HIGHESTMODSEQ": mailbox.highest_modseq,  # RFC 7162 3.1.6
        "APPENDLIMIT": s.append_limit,  # RFC 7889 3
    }
    parts = []
    for item in items:
        if item == "RECENT":
            recent = s.recent_for(mailbox)
            await recent.refresh(mailbox.id, mailbox.uid_validity)
            value = recent.unclaimed_count(mailbox.id, mailbox.uid_validity, uids)
            sel = s.selected
            if sel is not None and sel.mailbox_id == mailbox.id:
                value += len(sel.recent)
        elif item == "DELETED":
            value = deleted
        else:
            value = values[item]
        parts.append(f"{item} {value}")
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()  # RFC 7162 3.1: STATUS (HIGHESTMODSEQ) is a CONDSTORE-enabling command
    return r.untagged(b"STATUS " + r.mailbox(mailbox.name, utf8=s.utf8) + b" (" + " ".join(parts).encode() + b")")


async def status(s: ImapSession, cmd: c.Status):
    mailbox = await s.open_mailbox(cmd.mailbox)
    s.send(await _status_line(s, mailbox, cmd.items))


async def append(s: ImapSession, cmd: c.Append):
    state = s.take_append()
    if state is None or len(state.writers) != len(cmd.messages):
        if state is not None:
            state.abort()
        raise Bad("APPEND data was not received")
    from mailserver.delivery import envelope as ev

    pipeline = s.services.pipeline
    ingests = []
    try:
        for msg, writer in zip(cmd.messages, state.writers, strict=True):
            try:
                bits, keywords, _recent = split_flags(msg.flags)
            except ValueError as e:
                raise Bad(str(e)) from None
            when = msg.internal_date.timestamp() if msg.internal_date is not None else None
            owner = state.mailbox.account_id  # the target was opened with "i" when the literal was announced
            placement = ev.Placement(owner, mailbox_id=state.mailbox.id, flags=bits, keywords=keywords,
                                     internal_date=when)
            ingests.append(pipeline.begin(ev.Request(ev.APPEND, placement=placement), writer=writer))
    except BaseException:
        for w in state.writers:
            w.abort()
        raise
    if len(ingests) == 1:  # the common case shares the group commit with deliveries
        results = [await ingests[0].finish()]
    else:  # RFC 3502 MULTIAPPEND: all of them or none
        results = await pipeline.finish_together(ingests)
    outcomes = [res.outcomes[0] for res in results]
    failed = next((o for o in outcomes if not o.ok), None)
    if failed is not None:
        raise No(*_APPEND_REFUSALS.get(failed.reason, (failed.text, None)))
    # RFC 4315 3 / RFC 3502: APPENDUID with the UIDs of every appended message.
    uids = SeqSet.from_numbers([o.uid for o in outcomes]).render()
    return Ok("APPEND completed", f"APPENDUID {outcomes[0].uid_validity} {uids}")


#: Outcome reasons -> the tagged NO of a refused APPEND (RFC 9051 6.3.12, RFC 9208 4.3).
_APPEND_REFUSALS = {
    "overquota": ("mailbox full", "OVERQUOTA"),
    "nonexistent": ("no such mailbox", "NONEXISTENT"),
    "error": ("APPEND failed: server error", "SERVERBUG"),
}


def _quota_line(used: int, limit: int) -> bytes:
    # RFC 9208 5.1: STORAGE in units of 1024 octets.
    return r.untagged('QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, limit // 1024))


async def getquota(s: ImapSession, cmd: c.GetQuota):
    if cmd.root != "":
        raise No("no such quota root", "NONEXISTENT")
    used, limit = await s.services.astore.quota(s.account_id)
    if not limit:
        raise No("no quota on this account", "NONEXISTENT")
    s.send(_quota_line(used, limit))


async def getquotaroot(s: ImapSession, cmd: c.GetQuotaRoot):
    mailbox = await s.open_mailbox(cmd.mailbox)
    used, limit = await s.services.astore.quota(mailbox.account_id)  # the owner's quota root
    if not limit:
        s.send(r.untagged(b"QUOTAROOT " + r.mailbox(mailbox.name, utf8=s.utf8)))
        return None
    s.send(r.untagged(b'QUOTAROOT ' + r.mailbox(mailbox.name, utf8=s.utf8) + b' ""'))
    s.send(_quota_line(used, limit))


async def setquota(s: ImapSession, cmd: c.SetQuota):
    raise No("quotas are set by the administrator", "NOPERM")  # RFC 9208 4.1.3
