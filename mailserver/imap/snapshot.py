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
from itertools import compress

#: The default of :class:`SnapshotCache`: mailboxes smaller than this are simply listed again; larger ones are
#: cached.  Also the size from which a mailbox's listing is preloaded at start (``preload_snapshots``).
MIN_CACHED_MESSAGES = 2000
#: The default of :class:`SnapshotCache`: most mailboxes kept.
MAX_SNAPSHOTS = 64

#: The server's cache (:func:`server_cache`) keeps every mailbox of at least this many messages: listing 100
#: messages again costs more than ``changes_since`` (two indexed queries that return what changed), and an
#: unchanged mailbox then costs no listing at all.  Below it the listing is as cheap as asking what changed.
SERVER_MIN_CACHED_MESSAGES = 100
#: The server's cache holds at most this many mailboxes and this many messages in all (29 bytes each in the
#: arrays, plus keywords): about 60 MB at worst, least recently selected mailboxes going first.
SERVER_MAX_SNAPSHOTS = 1024
SERVER_MAX_MESSAGES = 2_000_000


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

    @classmethod
    def from_columns(cls, uid_validity: int, modseq: int, columns) -> "Snapshot":
        """From ``Store.list_message_columns`` (uids, modseqs, flag bytes, keyword texts, sizes, dates): arrays
        made at C speed, no object per message."""
        uids, modseqs, flags, keywords, sizes, dates = columns
        return cls(uid_validity, modseq, array("I", uids), array("B", flags), array("Q", modseqs),
                   array("Q", sizes), array("d", dates),
                   {u: kw for u, k in compress(zip(uids, keywords, strict=True), keywords) if (kw := tuple(k.split()))},
                   max(modseqs, default=0))

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
    """Snapshots by (mailbox id, UIDVALIDITY), least recently used first out.  ``min_messages``: smaller mailboxes
    are not kept; ``max_snapshots`` and ``max_messages`` (0: no bound) bound what is kept."""

    def __init__(self, max_snapshots: int = MAX_SNAPSHOTS, *, min_messages: int = MIN_CACHED_MESSAGES,
                 max_messages: int = 0):
        self.max = max_snapshots
        self.min_messages = min_messages
        self.max_messages = max_messages
        self._items: OrderedDict[tuple[int, int], Snapshot] = OrderedDict()
        self._messages = 0  # len(uids) of every snapshot kept, as it was when put
        self._counted: dict[tuple[int, int], int] = {}
        self.hits = 0
        self.misses = 0

    def get(self, mailbox_id: int, uid_validity: int) -> Snapshot | None:
        snap = self._items.get((mailbox_id, uid_validity))
        if snap is not None:
            self._items.move_to_end((mailbox_id, uid_validity))
        return snap

    def put(self, mailbox_id: int, snap: Snapshot) -> None:
        key = (mailbox_id, snap.uid_validity)
        self._messages -= self._counted.pop(key, 0)
        if len(snap.uids) < self.min_messages:
            self._items.pop(key, None)
            return
        self._items[key] = snap
        self._items.move_to_end(key)
        self._counted[key] = len(snap.uids)
        self._messages += len(snap.uids)
        while len(self._items) > 1 and (len(self._items) > self.max
                                        or (self.max_messages and self._messages > self.max_messages)):
            old, _ = self._items.popitem(last=False)
            self._messages -= self._counted.pop(old, 0)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def messages(self) -> int:
        """The messages of the snapshots kept (as counted when each was last put)."""
        return self._messages


def server_cache() -> SnapshotCache:
    """The cache a server process keeps (see :data:`SERVER_MIN_CACHED_MESSAGES`)."""
    return SnapshotCache(SERVER_MAX_SNAPSHOTS, min_messages=SERVER_MIN_CACHED_MESSAGES,
                         max_messages=SERVER_MAX_MESSAGES)
