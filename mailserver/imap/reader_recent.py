"""\\Recent per reader in a mailbox that keeps \\Seen per reader (a shared mailbox, storage/shared.py).

RFC 3501 2.3.2 gives each new message \\Recent in exactly one session.  In a shared mailbox that is one session *per
reader* (as Dovecot does for per-user seen): :class:`ReaderRecent` is the :class:`mailserver.clusterstate.RecentClaims`
of one session for such mailboxes, backed by the store's ``reader_recent`` row of (mailbox, reader), so it holds
across processes too.  ``reserve`` takes the UIDs in the store (async, before a claim); ``claim`` then hands this
session the UIDs it took; ``refresh`` + ``unclaimed_count`` answer EXAMINE and STATUS.
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

log = Logger()


class ReaderRecent:
    def __init__(self, astore, reader: int):
        self.astore = astore
        self.reader = reader
        #: (mailbox, uid_validity) -> UID ranges (low exclusive, high inclusive) this session took in the store
        self._taken: dict[tuple[int, int], list[tuple[int, int]]] = {}
        #: (mailbox, uid_validity) -> the highest UID any session of the reader is known to have taken
        self._last: dict[tuple[int, int], int] = {}
        #: (mailbox, uid_validity) -> the highest UID handed out by claim()
        self._given: dict[tuple[int, int], int] = {}

    def claim(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> list[int]:
        key = (mailbox_id, uid_validity)
        given = self._given.get(key, 0)
        ranges = self._taken.get(key, ())
        out = [u for u in uids[bisect.bisect_right(uids, given):] if any(lo < u <= hi for lo, hi in ranges)]
        if out:
            self._given[key] = out[-1]
        return out

    def unclaimed_count(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> int:
        last = self._last.get((mailbox_id, uid_validity), 0)
        return len(uids) - bisect.bisect_right(uids, last)

    async def reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int) -> None:
        key = (mailbox_id, uid_validity)
        if up_to_uid <= self._last.get(key, 0):
            return
        prev = await self.astore.claim_reader_recent(mailbox_id, self.reader, uid_validity, up_to_uid)
        if up_to_uid > prev:
            self._taken.setdefault(key, []).append((prev, up_to_uid))
        self._last[key] = max(self._last.get(key, 0), prev, up_to_uid)

    def after_reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int, then: Callable[[], None]) -> None:
        """Call ``then()`` once UIDs up to ``up_to_uid`` are reserved for this reader (at once when they are): the
        IDLE path of :class:`mailserver.clusterstate.RecentClaims`, one session's own here."""
        if up_to_uid <= self._last.get((mailbox_id, uid_validity), 0):
            then()
            return

        def failed(f):
            log.failure("reserving \\Recent messages for a reader failed", f)  # then not \Recent here

        d = ensureDeferred(self.reserve(mailbox_id, uid_validity, up_to_uid))
        d.addErrback(failed)
        d.addCallback(lambda _: then())

    async def refresh(self, mailbox_id: int, uid_validity: int) -> None:
        key = (mailbox_id, uid_validity)
        last = await self.astore.reader_recent_last(mailbox_id, self.reader, uid_validity)
        self._last[key] = max(self._last.get(key, 0), last)
