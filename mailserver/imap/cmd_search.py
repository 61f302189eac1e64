"""Search IMAP commands (selected state): SEARCH, SORT and THREAD (with RFC 4731 ESEARCH, RFC 5267 ESORT and
CONTEXT: PARTIAL, UPDATE and CANCELUPDATE), the loader that gives the search engine message headers and text on
demand, and the rounds that keep UPDATE contexts (:mod:`mailserver.imap.context`) up to date.

Handlers take ``(session, command)`` and follow the contract of :mod:`mailserver.imap.cmd_common`.
"""

from __future__ import annotations

import math
from itertools import compress
from typing import TYPE_CHECKING

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from mailserver.threads import run_in
from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN
from storage.store import MessageMeta

from . import commands as c
from . import response as r
from .cmd_common import Bad, No, Ok
from .cmd_message import FETCH_BATCH
from .selected import SelectedMailbox

if TYPE_CHECKING:
    from .session import ImapSession

log = Logger()


#: A message as the search engine sees it, from the selected-mailbox cache (no database round trip); a tuple type,
#: so building 100,000 of them for a SEARCH stays cheap.
_SearchMeta = MessageMeta


def _snapshot(sel: SelectedMailbox) -> list[_SearchMeta]:
    kws = sel.keywords
    if not kws:
        return list(map(_SearchMeta, sel.uids, sel.modseqs, sel.flags, [()] * len(sel.uids), sel.sizes, sel.dates))
    return [_SearchMeta(u, m, f, kws.get(u, ()), z, d)
            for u, m, f, z, d in zip(sel.uids, sel.modseqs, sel.flags, sel.sizes, sel.dates, strict=True)]


def _needs_content(key) -> bool:
    from . import searchkeys as K

    if isinstance(key, (K.HeaderKey, K.BodyKey, K.TextKey)):
        return True
    if isinstance(key, K.DateKey):
        return key.field == "SENT"
    if isinstance(key, K.Not):
        return _needs_content(key.key)
    if isinstance(key, K.Or):
        return _needs_content(key.left) or _needs_content(key.right)
    if isinstance(key, K.And):
        return any(_needs_content(k) for k in key.keys)
    return False


class _ContentLoader:
    """Headers and decoded text for the search engine, loaded on demand in a pool thread (blocking)."""

    CHUNK = 200

    def __init__(self, store, mailbox_id: int, uids: list[int]):
        self.store = store
        self.mailbox_id = mailbox_id
        self.uids = uids
        self.infos: dict[int, object] = {}

    def info(self, uid: int):
        if uid not in self.infos:
            import bisect

            i = bisect.bisect_left(self.uids, uid)
            chunk = self.uids[i:i + self.CHUNK] or [uid]
            for info in self.store.get_messages(self.mailbox_id, chunk):
                self.infos[info.uid] = info
            self.infos.setdefault(uid, None)
        return self.infos[uid]

    def header_of(self, msg) -> bytes:
        info = self.info(msg.uid)
        if info is None:
            return b""
        return self.store.blobs.read(info.blob_id, 0, info.header_size or None)

    def text_of(self, msg) -> tuple[bytes, str]:
        from .search import message_text

        info = self.info(msg.uid)
        if info is None:
            return b"", ""
        return message_text(self.store.blobs.read(info.blob_id), info.bodystructure or None)


async def _refresh_dates(s: ImapSession) -> None:
    """Load the internal dates the cache does not know (messages that arrived after SELECT)."""
    sel = s.selected
    missing = [u for u, d in zip(sel.uids, sel.dates, strict=True) if math.isnan(d)]
    for i in range(0, len(missing), FETCH_BATCH):
        for info in await s.services.astore.get_messages(sel.mailbox_id, missing[i:i + FETCH_BATCH]):
            sel.set_date(info.uid, info.internal_date)


_SYSTEM_FLAG_BITS = {"\\seen": FLAG_SEEN, "\\answered": FLAG_ANSWERED, "\\flagged": FLAG_FLAGGED,
                     "\\deleted": FLAG_DELETED, "\\draft": FLAG_DRAFT}


def _flag_only_masks(keys) -> tuple[int, int] | None:
    """(bits that must be set, bits that must be clear) when ``keys`` is ALL and system-flag keys only, else None."""
    from . import searchkeys as K

    items = keys.keys if isinstance(keys, K.And) else (keys,)
    must, must_not = 0, 0
    for k in items:
        if isinstance(k, K.All):
            continue
        if not isinstance(k, K.FlagKey):
            return None
        bit = _SYSTEM_FLAG_BITS.get(k.flag.lower())
        if bit is None:  # \Recent or a keyword: the general engine
            return None
        if k.present:
            must |= bit
        else:
            must_not |= bit
    return must, must_not


#: (must, must_not) -> the 256-byte table of which flag bytes match (at most 1,024: five system flags each way).
_FLAG_TABLES: dict[tuple[int, int], bytes] = {}


def _flag_mask(sel: SelectedMailbox, must: int, must_not: int) -> bytes:
    """One byte per selected message, 1 where its flags match, at C speed over the cached flags array."""
    table = _FLAG_TABLES.get((must, must_not))
    if table is None:
        table = _FLAG_TABLES[(must, must_not)] = bytes(
            1 if (f & must) == must and not (f & must_not) else 0 for f in range(256))
    return sel.flags.tobytes().translate(table)


def _flag_search(sel: SelectedMailbox, must: int, must_not: int) -> list[int]:
    """UIDs whose flags match (the common UNSEEN / DELETED searches)."""
    return list(compress(sel.uids, _flag_mask(sel, must, must_not)))


def seq_numbers(sel: SelectedMailbox, uids: list[int]) -> list[int]:
    """Sequence numbers of ascending ``uids`` (one merge pass over the mailbox, not a lookup per UID)."""
    if len(uids) < 64:
        return [sel.seq_of(u) for u in uids]
    # At C speed: the positions (1-based) of the mailbox's UIDs that are wanted, in mailbox order.
    return list(compress(range(1, len(sel.uids) + 1), map(set(uids).__contains__, sel.uids)))


def _uses_internal_date(key) -> bool:
    from . import searchkeys as K

    if isinstance(key, K.DateKey):
        return key.field == "INTERNAL"
    if isinstance(key, K.WithinKey):
        return True
    if isinstance(key, K.Not):
        return _uses_internal_date(key.key)
    if isinstance(key, K.Or):
        return _uses_internal_date(key.left) or _uses_internal_date(key.right)
    if isinstance(key, K.And):
        return any(_uses_internal_date(k) for k in key.keys)
    return False


async def _matching_uids(s: ImapSession, keys) -> list[int]:
    """The UIDs of the selected messages matching ``keys`` (ascending)."""
    from . import search as S

    sel = s.selected
    masks = _flag_only_masks(keys)
    if masks is not None:
        return _flag_search(sel, *masks)
    if _uses_internal_date(keys):
        await _refresh_dates(s)
    messages = _snapshot(sel)
    largest_uid = sel.uids[-1] if sel.uids else 0
    kwargs = dict(seq_of=None, max_uid=largest_uid, max_seq=sel.exists, recent_uids=frozenset(sel.recent),
                  now=s.services.reactor.seconds())
    if not _needs_content(keys):
        return S.search(keys, messages, **kwargs)
    services = s.services
    loader = _ContentLoader(services.store, sel.mailbox_id, list(sel.uids))
    return await run_in(services.reactor, services.pools.db_read, S.search, keys, messages, text_of=loader.text_of,
                        header_of=loader.header_of, **kwargs)


def _wants_update(cmd) -> bool:
    return cmd.return_options is not None and "UPDATE" in cmd.return_options


def _check_update_tag(s: ImapSession, cmd) -> None:
    """RFC 5267 4.3: UPDATE with the tag of a live updating command is a BAD (before anything runs)."""
    s.contexts.bind(s.selected)
    if s.contexts.get(cmd.tag) is not None:
        raise Bad("tag already names an updating search (RFC 5267 4.3)")


def _frozen_keys(sel: SelectedMailbox, keys):
    """The program with sequence numbers resolved now (RFC 5267 4.3)."""
    from .context import freeze_sequence_numbers

    def uids_of(seq_set) -> list[int]:
        out: list[int] = []
        for lo, hi in seq_set.resolve(sel.exists):
            out.extend(sel.uid_of(n) for n in range(max(lo, 1), min(hi, sel.exists) + 1))
        return out

    return freeze_sequence_numbers(keys, uids_of)


def _start_context(s: ImapSession, cmd, keys, order: list[int], criteria=None, values=None) -> None:
    from .context import MAX_UPDATE_CONTEXTS, UpdateContext

    if len(s.contexts) >= MAX_UPDATE_CONTEXTS:
        # RFC 5267 4.3.1: refused with NOUPDATE; the other return options were honoured.
        s.send(r.status_line("NO", "too many updating searches", b"NOUPDATE " + r.quoted(cmd.tag)))
        return
    s.contexts.add(s.selected, UpdateContext(tag=cmd.tag, uid=cmd.uid, keys=keys, criteria=criteria,
                                             order=list(order), values=dict(values or {})))


async def search(s: ImapSession, cmd: c.Search):
    from . import search as S

    sel = s.selected
    update = _wants_update(cmd)
    if update:
        _check_update_tag(s, cmd)
        frozen = _frozen_keys(sel, cmd.keys)
    with_modseq = S.uses_modseq(cmd.keys)
    if with_modseq:
        s.enable_condstore()  # RFC 7162 3.1.5: SEARCH MODSEQ enables CONDSTORE
    if cmd.return_options is None and not cmd.uid and not with_modseq:
        masks = _flag_only_masks(cmd.keys)
        if masks is not None:  # SEARCH UNSEEN: the sequence numbers straight from the flags, no UIDs between
            s.send(S.search_response(list(compress(range(1, sel.exists + 1), _flag_mask(sel, *masks)))))
            return None
    uids = await _matching_uids(s, cmd.keys)
    if cmd.return_options is None:
        numbers = uids if cmd.uid else seq_numbers(sel, uids)
        highest = max((sel.modseq_of(u) for u in uids), default=0) if with_modseq else None
        s.send(S.search_response(numbers, highest))
        return None
    # RFC 4731 / RFC 9051 6.4.4.4: ESEARCH; RFC 5267 4.4 PARTIAL
    seqs = None if cmd.uid else seq_numbers(sel, uids)
    s.send(S.esearch_response(cmd.tag, cmd.uid, uids, cmd.return_options, seq_numbers=seqs,
                              modseq_of=sel.modseq_of if with_modseq else None, partial=cmd.partial))
    if update:
        _start_context(s, cmd, frozen, uids)
    return None


async def _infos(s: ImapSession, uids: list[int]) -> list:
    """MessageInfo of the given selected UIDs (the parse stored at delivery), in UID order."""
    out: list = []
    sel = s.selected
    for i in range(0, len(uids), FETCH_BATCH):
        out.extend(await s.services.astore.get_messages(sel.mailbox_id, uids[i:i + FETCH_BATCH]))
    return out


async def sort(s: ImapSession, cmd: c.Sort):
    from . import search as S
    from . import sort as O

    sel = s.selected
    update = _wants_update(cmd)
    if update:
        _check_update_tag(s, cmd)
        frozen = _frozen_keys(sel, cmd.keys)
    with_modseq = S.uses_modseq(cmd.keys)
    if with_modseq:
        s.enable_condstore()  # RFC 7162 3.1.5: SEARCH MODSEQ enables CONDSTORE
    uids = await _matching_uids(s, cmd.keys)
    infos = [i for i in await _infos(s, uids) if sel.index_of(i.uid) is not None]
    ordered = O.sort_messages(cmd.criteria, infos, seq_of=sel.seq_of)  # RFC 5256 3
    numbers = ordered if cmd.uid else [sel.seq_of(u) for u in ordered]
    if cmd.return_options is None:
        highest = max((sel.modseq_of(u) for u in ordered), default=0) if with_modseq else None
        s.send(O.sort_response(numbers, highest))
        return None
    # RFC 5267 ESORT
    modseq_of = None
    if with_modseq:
        modseq_of = sel.modseq_of if cmd.uid else (lambda n: sel.modseq_of(sel.uid_of(n)))
    s.send(O.esort_response(cmd.tag, cmd.uid, numbers, cmd.return_options, modseq_of=modseq_of,
                            partial=cmd.partial))
    if update:
        values = {i.uid: O.sort_values(cmd.criteria, i) for i in infos}
        _start_context(s, cmd, frozen, ordered, cmd.criteria, values)
    return None


async def cancel_update(s: ImapSession, cmd: c.CancelUpdate):
    """RFC 5267 4.3.5: no more updates for the named contexts (all of them, or none when a tag is unknown)."""
    s.contexts.bind(s.selected)
    for tag in cmd.tags:
        if s.contexts.get(tag) is None:
            raise No(f"no updating search with tag {tag}")
    for tag in cmd.tags:
        s.contexts.cancel(tag)
    return Ok("no further updates")


# -- RFC 5267 4.3: keeping UPDATE contexts up to date ----------------------------------------------------------

async def _matching_subset(s: ImapSession, keys, uids: list[int]) -> set[int]:
    """Which of the selected ``uids`` match ``keys`` now."""
    from . import search as S

    if _uses_internal_date(keys):
        await _refresh_dates(s)
    sel = s.selected
    kws = sel.keywords
    messages = []
    for u in uids:
        i = sel.index_of(u)
        if i is not None:
            messages.append(_SearchMeta(u, sel.modseqs[i], sel.flags[i], kws.get(u, ()), sel.sizes[i], sel.dates[i]))
    if not messages:
        return set()
    seq_of = {m.uid: sel.seq_of(m.uid) for m in messages}
    largest_uid = sel.uids[-1] if sel.uids else 0
    kwargs = dict(seq_of=seq_of, max_uid=largest_uid, max_seq=sel.exists, recent_uids=frozenset(sel.recent),
                  now=s.services.reactor.seconds())
    if not _needs_content(keys):
        return set(S.search(keys, messages, **kwargs))
    services = s.services
    loader = _ContentLoader(services.store, sel.mailbox_id, [m.uid for m in messages])
    return set(await run_in(services.reactor, services.pools.db_read, S.search, keys, messages,
                            text_of=loader.text_of, header_of=loader.header_of, **kwargs))


async def update_contexts(s: ImapSession, *, idle: bool = False) -> None:
    """Evaluate the changed messages against every UPDATE context and send the ADDTO/REMOVEFROM responses
    (RFC 5267 4.3). From the dispatcher after each command's flush (before the tagged reply); in IDLE after each
    flush, sending only while the IDLE lasts (otherwise the next command's round sends them). Rounds run one at a
    time; never raises."""
    contexts = s.contexts
    contexts.bind(s.selected)
    if not contexts or not contexts.dirty:
        return
    lock = getattr(contexts, "lock", None)
    if lock is None:
        from twisted.internet.defer import DeferredLock

        lock = contexts.lock = DeferredLock()
    await lock.acquire()
    try:
        await _update_round(s, idle)
    except Exception:
        log.failure("updating RFC 5267 contexts failed")
    finally:
        lock.release()


async def _update_round(s: ImapSession, idle: bool) -> None:
    from . import sort as O

    sel = s.selected
    contexts = s.contexts
    contexts.bind(sel)
    if sel is None or not contexts:
        return
    todo = contexts.pending(sel)
    if not todo:
        return
    uids = sorted(todo)
    matched: dict[str, set[int]] = {}
    for ctx in contexts:
        matched[ctx.tag] = await _matching_subset(s, ctx.keys, uids)
    values: dict[str, dict[int, tuple]] = {}
    wanted = {u for ctx in contexts if ctx.sorted for u in matched[ctx.tag] if u not in ctx.values}
    if wanted:
        infos = {i.uid: i for i in await _infos(s, sorted(wanted))}
        for ctx in contexts:
            if ctx.sorted:
                values[ctx.tag] = {u: O.sort_values(ctx.criteria, infos[u]) for u in matched[ctx.tag]
                                   if u not in ctx.values and u in infos}
    if s.closed or s.selected is not sel or (idle and not s.idling):
        return  # the changes stay marked for the next round
    lines = contexts.apply(sel, todo, matched, values)
    if lines:
        s.send(b"".join(lines))


def schedule_context_update(s: ImapSession) -> None:
    """In IDLE: a round of :func:`update_contexts` in the background (its responses may come at any time,
    RFC 5267 4.3.2)."""
    if s.contexts and s.contexts.dirty:
        ensureDeferred(update_contexts(s, idle=True))


async def thread(s: ImapSession, cmd: c.Thread):
    from . import thread as T

    sel = s.selected
    uids = await _matching_uids(s, cmd.keys)
    infos = [i for i in await _infos(s, uids) if sel.index_of(i.uid) is not None]
    threads = T.thread_messages(cmd.algorithm, infos, seq_of=sel.seq_of)  # RFC 5256 3
    s.send(T.thread_response(threads, None if cmd.uid else sel.seq_of))
    return None
