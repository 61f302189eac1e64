"""A per-process cache of mailbox listings, so SELECT of a large mailbox costs what changed, not its size.

The first SELECT of a mailbox loads every message's (uid, flags, modseq, size, date, keywords) and keeps it as a
:class:`Snapshot` tagged with the mailbox's ``highest_modseq``.  A later SELECT asks the store only for what changed
since then (``changes_since``: the (mailbox, modseq) index and the expunge tombstones, RFC 7162), applies it, and
copies the arrays into the new session's :class:`~mailserver.imap.selected.SelectedMailbox` — array copies, no
per-message Python work for the unchanged rest.

Snapshots are keyed by (mailbox id, UIDVALIDITY), so a re-created mailbox never reuses one; the cache holds a bounded
number of mailboxes (least recently used go first).  Sans-IO: the session does the store calls.
"""

from __future__ import annotations

import bisect
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

#: Mailboxes smaller than this are simply listed again (cheap); larger ones are cached.
MIN_CACHED_MESSAGES = 2000
#: Most mailboxes kept per process.
MAX_SNAPSHOTS = 64


@dataclass
class Snapshot:
    uid_validity: int
    modseq: int  # every change up to this modseq is included
    uids: array = field(default_factory=lambda: array("I"))
    flags: array = field(default_factory=lambda: array("B"))
    modseqs: array = field(default_factory=lambda: array("Q"))
    sizes: array = field(default_factory=lambda: array("Q"))
    dates: array = field(default_factory=lambda: array("d"))
    keywords: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: The highest of ``modseqs`` (None: not known, scanned on the next :meth:`max_modseq`), kept so that a SELECT
    #: does not scan every message's modseq.
    _max_modseq: int | None = field(default=None, repr=False, compare=False)

    def max_modseq(self) -> int:
        """The highest modseq of a message in the snapshot (0 when empty)."""
        if self._max_modseq is None:
            self._max_modseq = max(self.modseqs, default=0)
        return self._max_modseq

    @classmethod
    def from_messages(cls, uid_validity: int, modseq: int, messages) -> "Snapshot":
        """From MessageMeta rows in UID order."""
        snap = cls(uid_validity, modseq)
        snap.uids = array("I", [m.uid for m in messages])
        snap.flags = array("B", [m.flags & 0xFF for m in messages])
        modseqs = [m.modseq for m in messages]
        snap.modseqs = array("Q", modseqs)
        snap._max_modseq = max(modseqs, default=0)
        snap.sizes = array("Q", [m.size for m in messages])
        snap.dates = array("d", [m.internal_date for m in messages])
        snap.keywords = {m.uid: tuple(m.keywords) for m in messages if m.keywords}
        return snap

    def apply(self, changed, vanished, modseq: int) -> None:
        """Fold in ``changes_since(self.modseq)``: changed/new MessageMeta rows and vanished UIDs (idempotent)."""
        for uid in sorted(set(vanished), reverse=True):
            i = bisect.bisect_left(self.uids, uid)
            if i < len(self.uids) and self.uids[i] == uid:
                if self.modseqs[i] == self._max_modseq:
                    self._max_modseq = None  # the highest may be gone: scan again when asked
                for a in (self.uids, self.flags, self.modseqs, self.sizes, self.dates):
                    del a[i]
                self.keywords.pop(uid, None)
        for m in changed:  # UID order
            i = bisect.bisect_left(self.uids, m.uid)
            if i < len(self.uids) and self.uids[i] == m.uid:
                if m.modseq < self.modseqs[i]:
                    continue  # an older state than the one already here
                self.flags[i] = m.flags & 0xFF
                self.modseqs[i] = m.modseq
            else:
                self.uids.insert(i, m.uid)
                self.flags.insert(i, m.flags & 0xFF)
                self.modseqs.insert(i, m.modseq)
                self.sizes.insert(i, m.size)
                self.dates.insert(i, m.internal_date)
            if m.keywords:
                self.keywords[m.uid] = tuple(m.keywords)
            else:
                self.keywords.pop(m.uid, None)
            if self._max_modseq is not None and m.modseq > self._max_modseq:
                self._max_modseq = m.modseq
        self.modseq = max(self.modseq, modseq)

    def copy(self) -> "Snapshot":
        return Snapshot(self.uid_validity, self.modseq, array("I", self.uids), array("B", self.flags),
                        array("Q", self.modseqs), array("Q", self.sizes), array("d", self.dates),
                        dict(self.keywords), self._max_modseq)


class SnapshotCache:
    def __init__(self, max_snapshots: int = MAX_SNAPSHOTS):
        self.max = max_snapshots
        self._items: OrderedDict[tuple[int, int], Snapshot] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, mailbox_id: int, uid_validity: int) -> Snapshot | None:
        snap = self._items.get((mailbox_id, uid_validity))
        if snap is not None:
            self._items.move_to_end((mailbox_id, uid_validity))
        return snap

    def put(self, mailbox_id: int, snap: Snapshot) -> None:
        if len(snap.uids) < MIN_CACHED_MESSAGES:
            self._items.pop((mailbox_id, snap.uid_validity), None)
            return
        self._items[(mailbox_id, snap.uid_validity)] = snap
        self._items.move_to_end((mailbox_id, snap.uid_validity))
        while len(self._items) > self.max:
            self._items.popitem(last=False)
