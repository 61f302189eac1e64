"""The selected-mailbox state of one IMAP session (RFC 9051 7.4.1, RFC 3501 2.3.1.2 / 7.4.1), without I/O.

``SelectedMailbox(mailbox_id, name, readonly, uid_validity, uid_next, highest_modseq, messages, keywords)``
holds what the session must answer without the database:

- the sequence number <-> UID map: ``uids`` is a sorted ``array('I')``; ``seq_of(uid)`` is a bisect and
  ``uid_of(seq)`` an index, so both stay O(log n) / O(1) for 100,000 messages; ``seqs_to_uids(seq_set)`` and
  ``uids_in(seq_set)`` resolve sets;
- the flags cache (``flags`` array of system-flag bits aligned with ``uids``, ``keywords`` only for the
  messages that have any, ``modseqs``);
- change events from the hub waiting to be told to the client (``pending``). :meth:`flush` turns them into
  untagged responses when the session is allowed to: EXISTS and FETCH FLAGS at every command end (and at once in
  IDLE), EXPUNGE (or VANISHED with QRESYNC) only when ``allow_expunge`` (RFC 9051 7.4.1: never while answering
  FETCH, STORE or SEARCH, where sequence numbers must not move); a message that arrives and is expunged between
  two flushes is never told at all (neither EXISTS nor EXPUNGE). Application is idempotent: an event already
  reflected in the cache (the session's own STORE, a message loaded by SELECT after the event was queued) is
  dropped silently.
- ``\\Recent`` (RFC 3501 2.3.2, IMAP4rev1 only): a :class:`mailserver.clusterstate.RecentClaims` (the server's
  cluster state; :class:`RecentTracker` in one process) hands each new message to exactly one session: the first
  that selects the mailbox read-write (or has it selected when it arrives).

Nothing here imports Twisted or the store; responses are ``bytes`` lines built with
:mod:`mailserver.imap.response`.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailserver.clusterstate import RecentTracker as RecentTracker  # re-exported: the in-process RecentClaims
from storage import changes as ch
from storage.models import FLAG_NAMES, FLAG_SEEN, SYSTEM_FLAGS

from . import response as r
from .seqset import SeqSet

SYSTEM_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_BITS = sorted(FLAG_NAMES)


def flag_names(bits: int, keywords: Iterable[str] = (), recent: bool = False) -> list[str]:
    """System flag bits and keywords as the names a FETCH FLAGS carries."""
    out = [FLAG_NAMES[b] for b in _FLAG_BITS if bits & b]
    if recent:
        out.append("\\Recent")
    out.extend(keywords)
    return out


def split_flags(flags: Iterable[str]) -> tuple[int, tuple[str, ...], bool]:
    """(system bits, keywords, \\Recent named) of a STORE/APPEND flag list; ``\\Recent`` cannot be set
    (RFC 3501 2.3.2) and is reported so the caller can ignore it."""
    bits = 0
    keywords: dict[str, str] = {}
    recent = False
    for f in flags:
        low = f.lower()
        if low in SYSTEM_FLAGS:
            bits |= SYSTEM_FLAGS[low]
        elif low == "\\recent":
            recent = True
        elif f.startswith("\\"):
            raise ValueError(f"unknown system flag {f}")
        else:
            keywords.setdefault(low, f)
    return bits, tuple(keywords.values()), recent


UNKNOWN_DATE = float("nan")


@dataclass(frozen=True, slots=True)
class CachedMeta:
    uid: int
    modseq: int
    size: int
    internal_date: float


@dataclass
class UpdateOptions:
    """How the session wants unsolicited updates rendered."""

    condstore: bool = False  # RFC 7162 3.1.4: FETCH responses carry MODSEQ once CONDSTORE is enabled
    qresync: bool = False  # RFC 7162 3.2.10: VANISHED instead of EXPUNGE, UID in FETCH
    rev1: bool = True  # RFC 3501 7.3.2: RECENT responses (IMAP4rev2 dropped them)


@dataclass
class SelectedMailbox:
    mailbox_id: int
    name: str
    readonly: bool
    uid_validity: int
    uid_next: int
    highest_modseq: int
    uids: array = field(default_factory=lambda: array("I"))
    flags: array = field(default_factory=lambda: array("B"))
    modseqs: array = field(default_factory=lambda: array("Q"))
    sizes: array = field(default_factory=lambda: array("Q"))
    dates: array = field(default_factory=lambda: array("d"))
    keywords: dict[int, tuple[str, ...]] = field(default_factory=dict)
    mailbox_keywords: list[str] = field(default_factory=list)
    recent: set[int] = field(default_factory=set)
    pending: list = field(default_factory=list)
    #: (uid, modseq) of expunges of announced messages not told yet (not allowed during FETCH/STORE/SEARCH).
    deferred_expunges: list[tuple[int, int]] = field(default_factory=list)
    deleted: bool = False
    #: EXISTS count last told to the client.
    told_exists: int = 0
    #: The highest modseq of every change applied or waiting (``highest_modseq`` is what the client may be told).
    seen_modseq: int = 0
    #: In a mailbox that keeps \\Seen per reader (storage/shared.py): this session's account, whose \\Seen the
    #: flags show; a FLAGS event of another reader leaves it alone.  0: \\Seen is the message's.
    reader: int = 0
    #: With worker processes (mailserver.commitboard): the other workers' change count last seen on the board (-1:
    #: unknown), whether a catch-up it asked for is queued, and the modseq up to which every change is known
    #: (what that catch-up reads from).
    board_seen: int = 0
    board_catch_up: bool = False
    complete_modseq: int = 0

    def apply_seen(self, seen_uids) -> None:
        """Lay the reader's \\Seen over the shared flags."""
        if not seen_uids:
            return
        for i, uid in enumerate(self.uids):
            if uid in seen_uids:
                self.flags[i] |= FLAG_SEEN

    @classmethod
    def load(cls, mailbox, messages: Iterable, *, readonly: bool) -> "SelectedMailbox":
        """From a ``MailboxInfo`` and its ``MessageMeta`` list (UID order)."""
        sel = cls(mailbox.id, mailbox.name, readonly, mailbox.uid_validity, mailbox.uid_next,
                  mailbox.highest_modseq)
        kw = dict.fromkeys(mailbox.keywords)
        for m in messages:
            sel.uids.append(m.uid)
            sel.flags.append(m.flags & 0xFF)
            sel.modseqs.append(m.modseq)
            sel.sizes.append(m.size)
            sel.dates.append(m.internal_date)
            if m.keywords:
                sel.keywords[m.uid] = tuple(m.keywords)
                kw.update(dict.fromkeys(m.keywords))
            if m.modseq > sel.highest_modseq:
                sel.highest_modseq = m.modseq
        if sel.uids and sel.uids[-1] >= sel.uid_next:
            sel.uid_next = sel.uids[-1] + 1
        sel.mailbox_keywords = list(kw)
        sel.told_exists = len(sel.uids)
        return sel

    @classmethod
    def from_snapshot(cls, mailbox, snap, *, readonly: bool) -> "SelectedMailbox":
        """From a ``MailboxInfo`` and a :class:`~mailserver.imap.snapshot.Snapshot` (arrays are copied)."""
        sel = cls(mailbox.id, mailbox.name, readonly, mailbox.uid_validity, mailbox.uid_next,
                  max(mailbox.highest_modseq, snap.max_modseq()))
        sel.uids = array("I", snap.uids)
        sel.flags = array("B", snap.flags)
        sel.modseqs = array("Q", snap.modseqs)
        sel.sizes = array("Q", snap.sizes)
        sel.dates = array("d", snap.dates)
        sel.keywords = dict(snap.keywords)
        kw = dict.fromkeys(mailbox.keywords)
        for k in snap.keywords.values():
            kw.update(dict.fromkeys(k))
        if sel.uids and sel.uids[-1] >= sel.uid_next:
            sel.uid_next = sel.uids[-1] + 1
        sel.mailbox_keywords = list(kw)
        sel.told_exists = len(sel.uids)
        return sel

    # -- lookups ----------------------------------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def index_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def meta_of(self, uid: int) -> "CachedMeta | None":
        """What the cache knows of a message (enough for FLAGS UID MODSEQ INTERNALDATE RFC822.SIZE)."""
        i = self.index_of(uid)
        if i is None:
            return None
        return CachedMeta(uid, self.modseqs[i], self.sizes[i], self.dates[i])

    def set_date(self, uid: int, internal_date: float) -> None:
        i = self.index_of(uid)
        if i is not None:
            self.dates[i] = internal_date

    def flags_of(self, uid: int) -> tuple[int, tuple[str, ...]]:
        i = self.index_of(uid)
        if i is None:
            return 0, ()
        return self.flags[i], self.keywords.get(uid, ())

    def flag_list_of(self, uid: int) -> list[str]:
        bits, kws = self.flags_of(uid)
        return flag_names(bits, kws, uid in self.recent)

    def modseq_of(self, uid: int) -> int:
        i = self.index_of(uid)
        return self.modseqs[i] if i is not None else 0

    def resolve_seqs(self, seq_set: SeqSet) -> list[int]:
        """RFC 9051 6.4: message sequence numbers of a set; a number above EXISTS is an error (ValueError)."""
        n = self.exists
        out: list[int] = []
        for lo, hi in seq_set.resolve(n):
            if hi > n or lo < 1:
                raise ValueError("message sequence number out of range")
            out.extend(range(lo, hi + 1))
        return out

    def seqs_to_uids(self, seq_set: SeqSet) -> list[int]:
        return [self.uids[s - 1] for s in self.resolve_seqs(seq_set)]

    def uids_in(self, uid_set: SeqSet) -> list[int]:
        """Existing UIDs a UID set names (RFC 9051 6.4.8: ``n:*`` includes the highest UID even if n is above)."""
        largest = self.uids[-1] if self.uids else 0
        out: list[int] = []
        uids = self.uids
        for lo, hi in uid_set.resolve(largest):
            a = bisect.bisect_left(uids, lo)
            b = bisect.bisect_right(uids, hi)
            out.extend(uids[a:b])
        return out

    def first_unseen(self) -> int | None:
        for i, bits in enumerate(self.flags):
            if not bits & FLAG_SEEN:
                return i + 1
        return None

    def count_flag(self, bit: int) -> int:
        return sum(1 for b in self.flags if b & bit)

    # -- own changes ------------------------------------------------------------------------------------------
    def set_cached_flags(self, uid: int, bits: int, keywords: Sequence[str], modseq: int) -> bool:
        """Store the state this session's own STORE (or \\Seen-setting FETCH) left a message in. True when the
        mailbox's keyword list grew: ``keywords`` is the message's whole list, which may hold a keyword another
        session added and this one has not been told of; a ``* FLAGS`` is then due before the FETCH that shows it
        (RFC 9051 7.3.5)."""
        i = self.index_of(uid)
        if i is None:
            return False
        self.flags[i] = bits & 0xFF
        self.modseqs[i] = max(self.modseqs[i], modseq)
        if keywords:
            self.keywords[uid] = tuple(keywords)
        else:
            self.keywords.pop(uid, None)
        if modseq > self.seen_modseq:
            self.seen_modseq = modseq
        waiting = self.deferred_expunges or any(c.kind == ch.EXPUNGE for c in self.pending)
        if modseq > self.highest_modseq and not waiting:
            self.highest_modseq = modseq  # else the next flush decides (RFC 7162 errata 1810)
        return bool(keywords) and self.new_keywords(keywords)

    def new_keywords(self, keywords: Iterable[str]) -> bool:
        """Add keywords to the mailbox's list; True when the list grew (a new ``* FLAGS`` is due)."""
        known = {k.lower() for k in self.mailbox_keywords}
        grew = False
        for k in keywords:
            if k.lower() not in known:
                self.mailbox_keywords.append(k)
                known.add(k.lower())
                grew = True
        return grew

    def flags_response(self) -> bytes:
        return r.untagged(b"FLAGS " + r.flag_list(list(SYSTEM_FLAG_ORDER) + self.mailbox_keywords))

    def permanent_flags_response(self) -> bytes:
        names = list(SYSTEM_FLAG_ORDER) + self.mailbox_keywords
        if self.readonly:
            return r.status_line("OK", "no permanent flags in read-only mode", "PERMANENTFLAGS ()")
        # RFC 9051 7.1: \* means clients may create new keywords.
        return r.status_line("OK", "flags permitted",
                             b"PERMANENTFLAGS " + r.flag_list(names + ["\\*"]))

    # -- updates from the hub ---------------------------------------------------------------------------------
    def on_change(self, change) -> None:
        """Queue one change event of this mailbox (call from the hub listener)."""
        kind = change.kind
        if kind == ch.MAILBOX_DELETE:
            self.deleted = True
        elif kind == ch.MAILBOX_RENAME:
            self.name = change.name
        elif kind in (ch.EXISTS, ch.FLAGS, ch.EXPUNGE):
            self.pending.append(change)

    def has_updates(self) -> bool:
        return bool(self.pending) or bool(self.deferred_expunges) or self.told_exists != self.exists

    def up_to_date(self) -> bool:
        """Nothing queued, nothing left to tell and the modseqs settled: :meth:`flush` would send nothing and change
        nothing (the common case between two commands of a session that no change reached)."""
        return (not self.pending and not self.deferred_expunges and self.told_exists == len(self.uids)
                and self.seen_modseq == self.highest_modseq)

    def expunge_issued(self) -> bool:
        """True while expunges of messages the client still sees wait to be told (after a FETCH, STORE or SEARCH):
        what that command answered from the store may lack them, and its tagged OK says so with
        ``[EXPUNGEISSUED]`` (RFC 9051 7.1, RFC 2180 4.1; imaptest then does not expect them in a SEARCH result)."""
        return bool(self.deferred_expunges)

    def _announced(self, i: int) -> bool:
        """Whether the message at index ``i`` is one the client has been told of. The client's view is always the
        first ``told_exists`` entries: new messages are appended at the end, and a message leaves the arrays only
        when its EXPUNGE is sent (or when it was never announced)."""
        return i < self.told_exists

    def _remove_at(self, i: int) -> int:
        uid = self.uids[i]
        del self.uids[i]
        del self.flags[i]
        del self.modseqs[i]
        del self.sizes[i]
        del self.dates[i]
        self.keywords.pop(uid, None)
        self.recent.discard(uid)
        return uid

    def flush(self, *, allow_expunge: bool, options: UpdateOptions, recent: RecentTracker | None) -> list[bytes]:
        """Apply queued changes and return the untagged responses that tell the client (RFC 9051 7.4.1).

        Order matters, because every number sent must be one the client has at that moment:

        1. events are applied in commit order; an EXPUNGE of a message never announced (it arrived since the last
           flush) removes it silently, at any time: no sequence number the client knows moves, and Dovecot does
           the same (RFC 9051 7.5.1: EXPUNGE names a message of the client's view; RFC 7162 3.2.10: VANISHED
           names messages the client knows);
        2. EXPUNGEs (VANISHED with QRESYNC) of announced messages, only when ``allow_expunge``, numbered in the
           client's view of before the new messages, from the highest down;
        3. EXISTS (and RECENT) for what is left, so messages that arrived are announced after the expunges;
        4. FETCH FLAGS for flag changes of messages the client knows, with the numbers of after the expunges.

        ``recent`` is the tracker when this session takes \\Recent for new messages (IMAP4rev1, read-write).
        """
        out: list[bytes] = []
        flag_lines: dict[int, None] = {}
        pending, self.pending = self.pending, []
        seen = max(self.seen_modseq, self.highest_modseq)
        new_uids: list[int] = []
        for c in pending:
            if c.kind == ch.EXPUNGE:
                i = self.index_of(c.uid)
                if i is None:
                    continue  # not loaded (the SELECT read came after the expunge), or already gone
                if self._announced(i):
                    self.deferred_expunges.append((c.uid, c.modseq))
                    continue
                self._remove_at(i)  # step 1: never told, so never to be told
                flag_lines.pop(c.uid, None)
                if c.uid in new_uids:
                    new_uids.remove(c.uid)
            elif c.kind == ch.EXISTS:
                last = self.uids[-1] if self.uids else 0
                if c.uid <= last:
                    continue  # already loaded (the SELECT read came after the event)
                self.uids.append(c.uid)
                self.flags.append(c.flags & 0xFF)
                self.modseqs.append(c.modseq)
                self.sizes.append(c.size)
                self.dates.append(UNKNOWN_DATE)  # the event does not carry it: FETCH loads it
                if c.keywords:
                    self.keywords[c.uid] = tuple(c.keywords)
                    if self.new_keywords(c.keywords):
                        out.append(self.flags_response())
                if c.uid >= self.uid_next:
                    self.uid_next = c.uid + 1
                new_uids.append(c.uid)
            elif c.kind == ch.FLAGS:
                i = self.index_of(c.uid)
                if i is None or self.modseqs[i] >= c.modseq:
                    continue  # gone, or the cache already has this state (our own STORE)
                if self.reader and c.reader != self.reader:
                    # Another reader's change: their \Seen is theirs, this reader keeps their own.
                    self.flags[i] = (c.flags & 0xFF & ~FLAG_SEEN) | (self.flags[i] & FLAG_SEEN)
                else:
                    self.flags[i] = c.flags & 0xFF
                self.modseqs[i] = c.modseq
                if c.keywords:
                    self.keywords[c.uid] = tuple(c.keywords)
                    if self.new_keywords(c.keywords):
                        out.append(self.flags_response())
                else:
                    self.keywords.pop(c.uid, None)
                flag_lines[c.uid] = None
            seen = max(seen, c.modseq)
        if recent is not None and new_uids:
            self.recent.update(recent.claim(self.mailbox_id, self.uid_validity, self.uids))
        if allow_expunge and self.deferred_expunges:
            gone = sorted(set(self.deferred_expunges))
            self.deferred_expunges = []
            expunged: list[int] = []
            # RFC 9051 7.5.1: each EXPUNGE renumbers the messages after it; send them from the highest down so
            # every number sent is the one the client still has (the client may process them in any order).
            for uid, _modseq in reversed(gone):
                i = self.index_of(uid)
                if i is None or not self._announced(i):
                    continue
                self._remove_at(i)
                flag_lines.pop(uid, None)
                expunged.append(uid)
                self.told_exists -= 1
                if not options.qresync:
                    out.append(r.untagged(b"%d EXPUNGE" % (i + 1)))
            if options.qresync and expunged:
                # RFC 7162 3.2.10: VANISHED (UIDs) replaces EXPUNGE once QRESYNC is enabled.
                out.append(r.untagged("VANISHED " + SeqSet.from_numbers(expunged).render()))
        self.seen_modseq = seen
        if self.deferred_expunges:
            # RFC 7162 errata 1810: while an expunge waits, no modseq at or above its own may be given out as the
            # mailbox's HIGHESTMODSEQ, or a client resynchronizing from it would never hear of the expunge.
            seen = min(seen, min(m for _u, m in self.deferred_expunges) - 1)
        self.highest_modseq = max(self.highest_modseq, seen)
        if self.exists != self.told_exists:
            if self.exists > self.told_exists or allow_expunge:
                out.append(r.untagged(b"%d EXISTS" % self.exists))
                if options.rev1:
                    out.append(r.untagged(b"%d RECENT" % len(self.recent)))
                self.told_exists = self.exists
        for uid in flag_lines:
            seq = self.seq_of(uid)
            if seq is None:
                continue
            out.append(self.fetch_flags_line(seq, uid, options))
        if options.qresync and self.deferred_expunges:
            # RFC 7162 errata 1810: FETCH MODSEQ (flag changes, this command's own STORE) may go out while expunges
            # with lower modseqs wait; tell the client a HIGHESTMODSEQ below them.
            out.append(r.status_line("OK", "expunges pending", f"HIGHESTMODSEQ {self.highest_modseq}"))
        return out

    def fetch_flags_line(self, seq: int, uid: int, options: UpdateOptions, *, with_uid: bool = False) -> bytes:
        items = []
        if with_uid or options.qresync:
            items.append(b"UID %d" % uid)
        items.append(b"FLAGS " + r.flag_list(self.flag_list_of(uid)))
        if options.condstore:
            items.append(b"MODSEQ (%d)" % self.modseq_of(uid))
        return r.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")")

    def fetch_modseq_line(self, seq: int, uid: int, options: UpdateOptions, *, with_uid: bool = False) -> bytes:
        """``* seq FETCH ([UID uid ]MODSEQ (m))``: a .SILENT conditional STORE's answer (RFC 7162 3.1.3)."""
        head = b"UID %d " % uid if with_uid or options.qresync else b""
        return r.untagged(b"%d FETCH (" % seq + head + b"MODSEQ (%d))" % self.modseq_of(uid))
