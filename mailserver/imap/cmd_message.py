"""Message IMAP commands (selected state): CHECK, CLOSE, UNSELECT, EXPUNGE, STORE, COPY, MOVE and FETCH.

Handlers take ``(session, command)`` and follow the contract of :mod:`mailserver.imap.cmd_common`.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from typing import TYPE_CHECKING

from mailserver.access import Rights
from mailserver.threads import run_in
from storage.models import FLAG_SEEN

from . import commands as c
from . import response as r
from .cmd_common import Bad, No, Ok
from .cmd_mailbox import leave_selected
from .selected import SelectedMailbox, split_flags
from .seqset import SeqSet

if TYPE_CHECKING:
    from .session import ImapSession


def _require_writable(s: ImapSession, what: str) -> SelectedMailbox:
    sel = s.selected
    if sel.readonly:
        raise No(f"mailbox is read-only: {what} not allowed", "READ-ONLY")
    return sel


def _target_uids(s: ImapSession, uid: bool, seq_set: SeqSet) -> list[int]:
    sel = s.selected
    if uid:
        return sel.uids_in(seq_set)
    try:
        return sel.seqs_to_uids(seq_set)
    except ValueError as e:
        raise Bad(str(e)) from None


async def check(s: ImapSession, cmd):
    return None


async def close(s: ImapSession, cmd: c.Close):
    sel = s.selected
    if not sel.readonly and Rights.EXPUNGE in s.selected_rights:
        # RFC 9051 6.4.1: CLOSE expunges silently (RFC 4314 4: only with "e").
        await s.services.astore.expunge(sel.mailbox_id)
    leave_selected(s, closed_code=False)


async def unselect(s: ImapSession, cmd: c.Unselect):
    leave_selected(s, closed_code=False)


async def expunge(s: ImapSession, cmd: c.Expunge):
    sel = _require_writable(s, "EXPUNGE")
    uids = None
    if cmd.uid_set is not None:
        uids = sel.uids_in(cmd.uid_set)  # RFC 4315 2.1 UID EXPUNGE
        if not uids:
            return None
    await s.services.astore.expunge(sel.mailbox_id, uids)
    # The EXPUNGE (or VANISHED) responses come from the change events, told by the dispatcher.
    return None


_STORE_MODES = {c.StoreMode.ADD: "add", c.StoreMode.REMOVE: "remove", c.StoreMode.REPLACE: "replace"}


async def store(s: ImapSession, cmd: c.Store):
    sel = _require_writable(s, "STORE")
    try:
        bits, keywords, _recent = split_flags(cmd.flags)
    except ValueError as e:
        raise Bad(str(e)) from None
    if cmd.unchanged_since is not None:
        s.enable_condstore()  # RFC 7162 3.1: UNCHANGEDSINCE enables CONDSTORE
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    if not uids:
        return None
    changed = await s.services.astore.set_flags(sel.mailbox_id, uids, _STORE_MODES[cmd.mode], bits, keywords,
                                              cmd.unchanged_since, reader=sel.reader)
    result = changed.value
    out = []
    grew = bool(keywords) and cmd.mode is not c.StoreMode.REMOVE and sel.new_keywords(keywords)
    for fu in result.updated:
        grew |= sel.set_cached_flags(fu.uid, fu.flags, fu.keywords, fu.modseq)
    if grew:
        # RFC 9051 7.3.5: the new keywords are announced before a FETCH shows them.
        out.append(sel.flags_response())
        out.append(sel.permanent_flags_response())
    opts = s.options()
    if not cmd.silent or opts.condstore:
        for fu in result.updated:
            seq = sel.seq_of(fu.uid)
            if seq is None:
                continue
            if cmd.silent:
                # RFC 7162 3.1.3: with CONDSTORE on (UNCHANGEDSINCE turns it on) every updated message is answered
                # with its new MODSEQ, even .SILENT; the FLAGS are left out, as the client asked (Dovecot does the
                # same, so the client's modseq cache stays right).
                out.append(sel.fetch_modseq_line(seq, fu.uid, opts, with_uid=cmd.uid))
            else:
                out.append(sel.fetch_flags_line(seq, fu.uid, opts, with_uid=cmd.uid))
    if out:
        s.send(b"".join(out))
    if result.modified:
        # RFC 7162 3.1.3: MODIFIED lists what failed the UNCHANGEDSINCE test (UIDs for UID STORE).
        numbers = result.modified if cmd.uid else [sel.seq_of(u) for u in result.modified if sel.seq_of(u)]
        return Ok("conditional STORE failed for some messages", "MODIFIED " + SeqSet.from_numbers(numbers).render())
    return None


async def _copy_move(s: ImapSession, cmd, move: bool):
    sel = s.selected
    if move:
        _require_writable(s, "MOVE")
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    astore = s.services.astore
    target = await s.open_mailbox(cmd.mailbox)  # "i"; missing: NO [TRYCREATE] (RFC 9051 6.4.7)
    if not uids:
        return None
    changed = await astore.copy(sel.mailbox_id, uids, target.id, move=move, reader=s.account_id)
    result = changed.value
    if not result.pairs:
        return None
    src = SeqSet.from_numbers(p[0] for p in result.pairs).render()
    dst = SeqSet.from_numbers(p[1] for p in result.pairs).render()
    code = f"COPYUID {result.uid_validity} {src} {dst}"  # RFC 4315 3
    if move:
        # RFC 6851 4.3: COPYUID goes in an untagged OK before the expunges.
        s.send(r.status_line("OK", "moved", code))
        return None
    return Ok("COPY completed", code)


async def copy(s: ImapSession, cmd: c.Copy):
    return await _copy_move(s, cmd, move=False)


async def move(s: ImapSession, cmd: c.Move):
    return await _copy_move(s, cmd, move=True)


#: FETCH works through the selected messages in batches: at most this many per database round trip ...
FETCH_BATCH = 500
#: ... and at most this many body octets read ahead per batch (bodies stream, never a whole mailbox in memory).
FETCH_BATCH_OCTETS = 4 * 1024 * 1024


def _read_ranges(store, wanted: list[tuple[str, list[tuple[int, int]]]]) -> list[dict]:
    """Blocking (blob pool): the byte ranges of each blob, ``[{(start, end): bytes}]``."""
    out = []
    for blob_id, ranges in wanted:
        chunks = {}
        for start, end in ranges:
            chunks[(start, end)] = store.blobs.read(blob_id, start, end)
        out.append(chunks)
    return out


#: A FETCH batch whose body octets to read stay under this reads them in the same database-pool call that loads the
#: messages (one thread hand-over instead of two: the headers or small bodies most FETCHes ask for); a larger one
#: reads them in the blob pool, so file reads of megabytes do not hold a database thread.
FETCH_INLINE_OCTETS = 256 * 1024


def _messages_and_ranges(store, mailbox_id: int, batch: list[int], plan) -> tuple[list, dict[int, dict]]:
    """Blocking (database pool): the messages of ``batch`` and the byte ranges ``plan`` reads of each."""
    infos = store.get_messages(mailbox_id, batch)
    wanted = [(m.uid, m.blob_id, plan.ranges(m)) for m in infos]
    wanted = [w for w in wanted if w[2]]
    chunks = _read_ranges(store, [(b, rs) for _u, b, rs in wanted]) if wanted else []
    return infos, {u: ch_ for (u, _b, _r), ch_ in zip(wanted, chunks, strict=True)}


def _fetch_batches(uids: list[int], sel: SelectedMailbox, plan) -> list[list[int]]:
    if not plan.needs_body:
        return [uids[i:i + FETCH_BATCH] for i in range(0, len(uids), FETCH_BATCH)]
    batches: list[list[int]] = []
    current: list[int] = []
    octets = 0
    for uid in uids:
        i = sel.index_of(uid)
        size = sel.sizes[i] if i is not None else 0
        if current and (len(current) >= FETCH_BATCH or octets + size > FETCH_BATCH_OCTETS):
            batches.append(current)
            current, octets = [], 0
        current.append(uid)
        octets += size if not plan.header_only else 0
    if current:
        batches.append(current)
    return batches


async def fetch(s: ImapSession, cmd: c.Fetch):
    from . import fetch as F

    sel = s.selected
    if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in cmd.items):
        s.enable_condstore()  # RFC 7162 3.1: CHANGEDSINCE and the MODSEQ item enable CONDSTORE
    if cmd.vanished and not (cmd.uid and s.qresync and cmd.changed_since is not None):
        raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")  # RFC 7162 3.2.6
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    opts = s.options()
    plan = F.plan_fetch(cmd.items, uid_command=cmd.uid, condstore=opts.condstore, changed_since=cmd.changed_since)
    astore = s.services.astore
    if cmd.changed_since is not None:
        uids = [u for u in uids if sel.modseq_of(u) > cmd.changed_since]  # RFC 7162 3.1.4.1
    if cmd.vanished:
        _changed, vanished = await astore.changes_since(sel.mailbox_id, cmd.changed_since)
        largest = max(sel.uids[-1] if sel.uids else 0, vanished[-1] if vanished else 0)
        vanished = [u for u in vanished if cmd.seq_set.contains(u, largest) and sel.index_of(u) is None]
        if vanished:
            s.send(r.untagged("VANISHED (EARLIER) " + SeqSet.from_numbers(vanished).render()))
    want_date = any(a.name == "INTERNALDATE" for a in plan.items)
    set_seen = plan.sets_seen and not sel.readonly and Rights.SEEN in s.selected_rights  # RFC 4314 4: "s"
    if not set_seen and not plan.needs_info and not plan.needs_body and \
            all(a.name in _CACHED_ITEMS for a in plan.items):
        # The flag-sync clients do on every open (UID FETCH 1:* (UID FLAGS)): answered from the cache alone.
        await _fetch_cached(s, sel, uids, [a.name for a in plan.items])
        return None
    for batch in _fetch_batches(uids, sel, plan):
        infos: dict[int, object] = {}
        bodies: dict[int, dict] = {}
        need_info = plan.needs_info or (want_date and any(_unknown_date(sel, u) for u in batch))
        inline = plan.needs_body and need_info and _body_octets(sel, batch, plan) <= FETCH_INLINE_OCTETS
        if inline:
            services = s.services
            found, bodies = await run_in(services.reactor, services.pools.db_read, _messages_and_ranges,
                                         services.store, sel.mailbox_id, batch, plan)
            for info in found:
                infos[info.uid] = info
                sel.set_date(info.uid, info.internal_date)
        elif need_info:
            for info in await astore.get_messages(sel.mailbox_id, batch):
                infos[info.uid] = info
                sel.set_date(info.uid, info.internal_date)
        else:
            for u in batch:
                meta = sel.meta_of(u)
                if meta is not None:
                    infos[u] = meta
        seen_now: set[int] = set()
        if set_seen:
            # RFC 3501 6.4.5: a non-PEEK body fetch sets \Seen; the response then carries FLAGS too.
            unseen = [u for u in batch if u in infos and not sel.flags_of(u)[0] & FLAG_SEEN]
            if unseen:
                changed = await astore.set_flags(sel.mailbox_id, unseen, "add", FLAG_SEEN, reader=sel.reader)
                grew = False
                for fu in changed.value.updated:
                    grew |= sel.set_cached_flags(fu.uid, fu.flags, fu.keywords, fu.modseq)
                    seen_now.add(fu.uid)
                    infos[fu.uid] = _with_modseq(infos[fu.uid], fu.modseq)
                if grew:
                    s.send(sel.flags_response())  # RFC 9051 7.3.5: before the FETCH that shows the keyword
        if plan.needs_body and not inline:
            wanted = [(u, infos[u].blob_id, plan.ranges(infos[u])) for u in batch if u in infos]
            wanted = [w for w in wanted if w[2]]
            if wanted:
                services = s.services
                chunks = await run_in(services.reactor, services.pools.blob, _read_ranges, services.store,
                                      [(b, rs) for _u, b, rs in wanted])
                bodies = {u: ch_ for (u, _b, _r), ch_ in zip(wanted, chunks, strict=True)}
        out = []
        for u in batch:
            info = infos.get(u)
            seq = sel.seq_of(u)
            if info is None or seq is None:
                continue  # expunged meanwhile: the EXPUNGE is told after this command (RFC 9051 7.4.1)
            bits, keywords = sel.flags_of(u)
            try:
                out.append(F.fetch_response(
                    seq, info, plan.items, body_reader=F.RangeReader(bodies.get(u, {})), flags=bits,
                    keywords=keywords, recent=u in sel.recent, uid_command=cmd.uid, condstore=opts.condstore,
                    utf8=s.utf8, rev2=s.rev2, include_flags=u in seen_now))
            except F.FetchError as e:
                if out:
                    s.send(b"".join(out))
                raise No(e.text, e.code) from None
        if out:
            s.send(b"".join(out))
        await s.drain()
    return None


def _body_octets(sel: SelectedMailbox, batch: list[int], plan) -> int:
    """At most the body octets a batch reads (a header-only plan reads a part of each message)."""
    total = 0
    for u in batch:
        i = sel.index_of(u)
        if i is not None:
            total += sel.sizes[i]
    return total // 8 if plan.header_only else total


_CACHED_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})


#: How each cached item is written in a FETCH response (RFC 9051 7.5.2; MODSEQ: RFC 7162 3.1.4).
_CACHED_FORMATS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)"}
#: Messages rendered (and written) per step of a cached FETCH.
_CACHED_STEP = 2000


async def _fetch_cached(s: ImapSession, sel: SelectedMailbox, uids: list[int], names: list[str]) -> None:
    """FETCH of UID/FLAGS/MODSEQ only, rendered straight from the selected-mailbox arrays (same bytes as
    :func:`mailserver.imap.fetch.fetch_response`, without a per-message item walk): column by column, each line
    one ``%`` of a template made once for the command's items."""
    from .fetch import _flags_value

    rev2 = s.rev2
    template = b"* %d FETCH (" + b" ".join(_CACHED_FORMATS[name] for name in names) + b")\r\n"
    first = sel.index_of(uids[0]) if uids else None
    if first is not None and sel.uids[first:first + len(uids)] == array("I", uids):
        positions = range(first, first + len(uids))  # a run of the mailbox (1:*, n:m): no lookup per message
    else:
        positions = []
        present = []
        for u in uids:
            i = sel.index_of(u)
            if i is not None:
                positions.append(i)
                present.append(u)
        uids = present
    keywords, recent = sel.keywords, sel.recent
    flag_text: dict = {}
    for k in range(0, len(positions), _CACHED_STEP):
        step = positions[k:k + _CACHED_STEP]
        step_uids = uids[k:k + _CACHED_STEP]
        columns: list = [[i + 1 for i in step] if isinstance(step, list) else range(step.start + 1, step.stop + 1)]
        for name in names:
            if name == "UID":
                columns.append(step_uids)
            elif name == "FLAGS":
                flags = sel.flags[step.start:step.stop] if isinstance(step, range) else [sel.flags[i] for i in step]
                if not keywords and not recent:
                    for f in set(flags).difference(flag_text):
                        flag_text[f] = _flags_value(f, (), False, rev2)
                    columns.append(list(map(flag_text.__getitem__, flags)))
                else:
                    texts = []
                    for u, f in zip(step_uids, flags, strict=True):
                        key = (f, keywords.get(u, ()), u in recent)
                        text = flag_text.get(key)
                        if text is None:
                            text = flag_text[key] = _flags_value(key[0], key[1], key[2], rev2)
                        texts.append(text)
                    columns.append(texts)
            else:  # MODSEQ
                columns.append(sel.modseqs[step.start:step.stop] if isinstance(step, range)
                               else [sel.modseqs[i] for i in step])
        s.send(b"".join(map(template.__mod__, zip(*columns, strict=True))))
        await s.drain()
    if not positions:
        await s.drain()


def _unknown_date(sel: SelectedMailbox, uid: int) -> bool:
    i = sel.index_of(uid)
    return i is not None and math.isnan(sel.dates[i])


def _with_modseq(info, modseq: int):
    return dataclasses.replace(info, modseq=modseq)
