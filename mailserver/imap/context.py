"""RFC 5267 CONTEXT=SEARCH / CONTEXT=SORT: the UPDATE contexts of one session, sans-IO.

An :class:`UpdateContext` is a searching command run with ``RETURN (UPDATE)``: its search program (message sequence
numbers already turned into the UIDs they named, RFC 5267 4.3: they are evaluated when the command is received) and
the result the client holds, as UIDs in the requested order (mailbox order for SEARCH, the sort order for SORT). The
client is told how that result changes with ADDTO and REMOVEFROM return data in ``* ESEARCH (TAG ...)`` responses
(RFC 5267 4.3.2-4.3.4), in UIDs or sequence numbers as the command was.

:class:`SearchContexts` holds a session's contexts and the bookkeeping between the session's flushes of pending
changes (RFC 9051 7.4.1, :meth:`mailserver.imap.selected.SelectedMailbox.flush`):

- ``bind(sel)``: the contexts belong to one selection; when ``sel`` is another (SELECT, CLOSE, UNSELECT), they are
  forgotten (RFC 5267 4.3: updates cease when the mailbox is no longer selected).
- ``on_change(change)``: a change event of the selected mailbox arrived; a new or changed message is marked to be
  evaluated again (every context, so a context created by the command running now sees it too).
- ``before_flush(sel)`` / ``after_flush(sel, token, lines)`` around ``sel.flush``: messages that the flush
  expunged are removed from every context, and their REMOVEFROM responses are put in front of the flush's lines,
  numbered as the client still has them (RFC 5267 4.3.4: sent before the expunge notification).
- ``pending(sel) -> {uid: generation}``: the marked messages to evaluate now (those the client has been told of;
  RFC 5267 4.3.3: an ADDTO of new messages follows their EXISTS; a change that arrived after the last flush waits
  for the next).
- ``apply(sel, evaluated, matched, values) -> [bytes]``: with the program's verdict on those messages
  (``matched``: tag -> set of matching UIDs; ``values``: tag -> {uid: sort values} for new members of SORT
  contexts), the REMOVEFROM/ADDTO lines, one ``* ESEARCH`` line per context that changed; a message marked again
  since ``evaluated`` was taken is left for the next round.

Positions (RFC 5267 4.3.3/4.3.4): SEARCH contexts use context position 0 and mailbox-ordered sets (the shortest form
the RFC recommends); SORT contexts give the 1-based position in the sorted result where each run of consecutive
additions lands, or where each run of removals starts, processed left to right as the client will.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from storage import changes as ch

from . import response
from .commands import SortCriterion
from .searchkeys import All, And, Not, Or, SearchKey, SeqKey, UidKey
from .seqset import SeqSet, compact
from .sort import order_key, ordered_set

__all__ = ["MAX_UPDATE_CONTEXTS", "UpdateContext", "SearchContexts", "freeze_sequence_numbers"]

#: Updating contexts per session; one more is refused with ``* NO [NOUPDATE "tag"]`` (RFC 5267 4.3.1: at least one
#: per client must be possible).
MAX_UPDATE_CONTEXTS = 10
#: Up to this many messages joining or leaving a result at once are placed by bisection; more by one pass over it.
_FEW = 64


@dataclass
class UpdateContext:
    tag: str
    uid: bool
    keys: SearchKey
    criteria: tuple[SortCriterion, ...] | None = None  # None: SEARCH (mailbox order)
    order: list[int] = field(default_factory=list)  # the client's result: UIDs in the requested order
    values: dict[int, tuple] = field(default_factory=dict)  # SORT: uid -> sort values (kept for removed ones too)
    members: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.members = set(self.order)
        self._key = order_key(self.criteria, self.values) if self.criteria is not None else None

    @property
    def sorted(self) -> bool:
        return self.criteria is not None

    def index(self, uid: int) -> int:
        """0-based position of a member in ``order``."""
        if self._key is None:
            return bisect.bisect_left(self.order, uid)
        key = self._key
        return bisect.bisect_left(self.order, key(uid), key=key)

    def remove(self, gone: Iterable[int], number: Callable[[int], int]) -> bytes | None:
        """Take ``gone`` members out; the REMOVEFROM return data saying so, or None."""
        leaving = {u for u in gone if u in self.members}
        if not leaving:
            return None
        order = self.order
        if len(leaving) <= _FEW:
            positions = sorted(self.index(u) for u in leaving)
        else:
            positions = [i for i, u in enumerate(order) if u in leaving]  # one pass, no comparisons
        pairs: list[str] = []
        if self.sorted:
            removed = 0
            for run in _runs(positions):
                # RFC 5267 4.3.4: the first result of the set occupies this position before its removal.
                pairs.append(f"{run[0] - removed + 1} {ordered_set([number(order[p]) for p in run])}")
                removed += len(run)
        else:
            pairs.append("0 " + compact(number(order[p]) for p in positions))
        if len(leaving) <= _FEW:
            for p in reversed(positions):
                del order[p]
        else:
            order[:] = [u for u in order if u not in leaving]
        self.members -= leaving
        return ("REMOVEFROM (" + " ".join(pairs) + ")").encode("ascii")

    def add(self, new: Iterable[int], number: Callable[[int], int]) -> bytes | None:
        """Put ``new`` (non-members; SORT: with their ``values`` known) in; the ADDTO return data, or None."""
        fresh = {u for u in new if u not in self.members}
        if not fresh:
            return None
        order = self.order
        self.members |= fresh
        if not self.sorted:
            if len(fresh) <= _FEW:
                for u in fresh:
                    bisect.insort(order, u)
            else:
                order.extend(fresh)
                order.sort()
            return ("ADDTO (0 " + compact(number(u) for u in fresh) + ")").encode("ascii")
        key = self._key
        ranked = sorted(fresh, key=key)
        if len(fresh) <= _FEW:
            for u in ranked:
                order.insert(bisect.bisect_left(order, key(u), key=key), u)
        else:
            order[:] = heapq.merge(order, ranked, key=key)
        # Runs of consecutive new members in the final order, left to right: inserting each at its final position
        # is what a client processing the pairs in order does (RFC 5267 4.3.3: the first result of the set
        # occupies the context position after insertion).
        runs: list[tuple[int, list[int]]] = []
        positions = sorted(self.index(u) for u in ranked) if len(fresh) <= _FEW else \
            [i for i, u in enumerate(order) if u in fresh]
        for i in positions:
            if runs and runs[-1][0] + len(runs[-1][1]) == i + 1:
                runs[-1][1].append(number(order[i]))
            else:
                runs.append((i + 1, [number(order[i])]))
        return ("ADDTO (" + " ".join(f"{pos} {ordered_set(nums)}" for pos, nums in runs) + ")").encode("ascii")

    def line(self, items: Sequence[bytes]) -> bytes:
        head = b"* ESEARCH (TAG " + response.quoted(self.tag) + b")" + (b" UID" if self.uid else b"")
        return b" ".join([head, *items]) + b"\r\n"


def _runs(positions: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][-1] == p - 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def freeze_sequence_numbers(keys: SearchKey, uid_of_seq: Callable[[SeqSet], list[int]]) -> SearchKey:
    """``keys`` with every SeqKey replaced by the UIDs it names now (``uid_of_seq(seq_set)``, numbers beyond the
    mailbox naming nothing): RFC 5267 4.3, sequence numbers in an updating program are evaluated once."""
    if isinstance(keys, SeqKey):
        uids = uid_of_seq(keys.seq_set)
        return UidKey(SeqSet.from_numbers(uids)) if uids else Not(All())
    if isinstance(keys, Not):
        return Not(freeze_sequence_numbers(keys.key, uid_of_seq))
    if isinstance(keys, Or):
        return Or(freeze_sequence_numbers(keys.left, uid_of_seq), freeze_sequence_numbers(keys.right, uid_of_seq))
    if isinstance(keys, And):
        return And(tuple(freeze_sequence_numbers(k, uid_of_seq) for k in keys.keys))
    return keys


class SearchContexts:
    def __init__(self) -> None:
        self.sel: object | None = None
        self.contexts: dict[str, UpdateContext] = {}
        self.dirty: dict[int, int] = {}  # uid -> generation of the last change seen
        self._generation = 0

    def __bool__(self) -> bool:
        return bool(self.contexts)

    def __len__(self) -> int:
        return len(self.contexts)

    def __iter__(self):
        return iter(list(self.contexts.values()))

    def bind(self, sel) -> None:
        if sel is not self.sel:
            self.sel = sel
            self.contexts.clear()
            self.dirty.clear()

    def get(self, tag: str) -> UpdateContext | None:
        return self.contexts.get(tag)

    def add(self, sel, context: UpdateContext) -> None:
        self.bind(sel)
        self.contexts[context.tag] = context

    def cancel(self, tag: str) -> bool:
        return self.contexts.pop(tag, None) is not None

    # -- changes --------------------------------------------------------------------------------------------------
    def on_change(self, change) -> None:
        if change.kind in (ch.EXISTS, ch.FLAGS):
            self._generation += 1
            self.dirty[change.uid] = self._generation

    def before_flush(self, sel):
        return sel.uids[:] if self.contexts and self.sel is sel else None

    def after_flush(self, sel, before, lines: list[bytes]) -> list[bytes]:
        if self.sel is not sel:
            self.bind(sel)
        if not self.contexts:
            self.dirty.clear()  # evaluated by nobody: the next context starts from the flushed cache
            return lines
        # Every change that arrived so far is in the cache now: a marked message not in it is gone (perhaps
        # before the client heard of it). Marks of changes arriving later stay until their flush.
        for u in [u for u in self.dirty if sel.index_of(u) is None]:
            del self.dirty[u]
        if before is None or sel.uids[: len(before)] == before:
            return lines  # nothing expunged
        gone = set(before)
        gone.difference_update(sel.uids)
        if not gone:
            return lines

        def old_number(uid: int) -> int:
            return bisect.bisect_left(before, uid) + 1

        out = []
        for ctx in self:
            data = ctx.remove(gone, (lambda u: u) if ctx.uid else old_number)
            if data is not None:
                out.append(ctx.line([data]))
        # RFC 5267 4.3.4: before the EXPUNGE (or VANISHED) responses, in the numbering the client still has.
        return out + lines

    def pending(self, sel) -> dict[int, int]:
        told = getattr(sel, "told_exists", sel.exists)
        out: dict[int, int] = {}
        for uid, gen in self.dirty.items():
            i = sel.index_of(uid)
            if i is not None and i < told:  # absent: not flushed yet (or gone, dropped at the next flush)
                out[uid] = gen
        return out

    def apply(self, sel, evaluated: Mapping[int, int], matched: Mapping[str, set[int]],
              values: Mapping[str, Mapping[int, tuple]]) -> list[bytes]:
        current = [u for u, gen in evaluated.items() if self.dirty.get(u) == gen and sel.index_of(u) is not None]
        for u in current:
            del self.dirty[u]
        if not current or self.sel is not sel:
            return []

        def seq(uid: int) -> int:
            return sel.seq_of(uid)

        lines = []
        for ctx in self:
            hits = matched.get(ctx.tag)
            if hits is None:
                continue
            number = (lambda u: u) if ctx.uid else seq
            left = [u for u in current if u in ctx.members and u not in hits]
            joined = [u for u in current if u not in ctx.members and u in hits]
            if ctx.sorted:
                known = values.get(ctx.tag, {})
                ctx.values.update((u, known[u]) for u in joined if u in known)
                joined = [u for u in joined if u in ctx.values]
            items = [d for d in (ctx.remove(left, number), ctx.add(joined, number)) if d is not None]
            if items:
                lines.append(ctx.line(items))
        return lines
