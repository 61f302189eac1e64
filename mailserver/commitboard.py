"""The commit board: what each worker of one supervisor has committed, per mailbox, readable by the others at once.

Change events reach the other workers asynchronously (the worker bus collects them for up to ``bus.COALESCE``
seconds; PostgreSQL's NOTIFY is asynchronous too).  An IDLE session only needs them within a second, but a client
that works with two connections (imaptest's scripted tests do, and so do clients that keep one connection per
mailbox) expects what one connection committed to show in the next command of the other, as it does in one
process, and in Dovecot, which reads its index at every command.

So the supervisor makes a file in ``data_dir/run`` with one row per worker, :data:`SLOTS` slots a row, and every
worker maps it.  A slot is three eight-byte words: a mailbox id, how many changes this worker committed in the slot
(it only grows) and the modseq of the latest.  After each commit, on the reactor thread and before the producer
answers (the hub's ``publish``), a worker writes its own row's slot ``mailbox_id % SLOTS``.  An IMAP session with a
mailbox selected reads that slot in every other row at the end of each command: when the sum of the counts moved
since it last looked, another worker committed something it may not have heard of yet, and it catches up from the
database (``changes_since``, mailserver.imap.resync) before it answers; the events that arrive later over the bus
are dropped as known.  The modseq serves SELECT: a commit between its database read and its look at the board has
a modseq above what it read.  Counts, not modseqs, decide "changed": a mailbox deleted and made anew under the same
id starts its modseqs again.

Each row has one writer (its worker's reactor thread).  A slot taken by another mailbox, or being rewritten (its
id is then :data:`_BUSY`; the id is read before and after the rest), says "unknown", and the session catches up: a
shared slot costs a database read, never a missed change.  A restarted worker keeps its row; the file is made anew
by each supervisor start.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

#: Slots per worker row (a power of two; 24 bytes each: 192 KiB a worker).
SLOTS = 1 << 13
_MASK = SLOTS - 1
_ROW = SLOTS * 24
_BUSY = (1 << 64) - 1  # the id of a slot being handed to another mailbox
FILE_NAME = "commits"


def board_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FILE_NAME


def create(run_dir: str | Path, workers: int) -> Path:
    """Make the board for ``workers`` rows, all zero (the supervisor, before it spawns a worker)."""
    path = board_path(run_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, workers * _ROW)
    finally:
        os.close(fd)
    return path


class CommitBoard:
    """Worker ``index``'s view of the board at ``path``."""

    def __init__(self, path: str | Path, index: int):
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            rows = size // _ROW
            if rows < 1 or not 0 <= index < rows:
                raise ValueError(f"commit board {path}: no row {index} in a file of {size} bytes")
            self._map = mmap.mmap(fd, rows * _ROW, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        view = memoryview(self._map)
        rows_q = [view[r * _ROW:(r + 1) * _ROW].cast("Q") for r in range(rows)]
        self._views = [view, *rows_q]
        self._mine = rows_q[index]
        self._others = tuple(q for r, q in enumerate(rows_q) if r != index)
        self.index = index
        self.rows = rows

    def mark(self, changes) -> None:
        """Record this worker's committed ``changes`` (call before their producer answers, in commit order)."""
        mine = self._mine
        for c in changes:
            modseq, mailbox_id = c.modseq, c.mailbox_id
            if modseq and mailbox_id:
                i = (mailbox_id & _MASK) * 3
                if mine[i] != mailbox_id:
                    mine[i] = _BUSY  # readers see "unknown" until the slot is whole again
                    mine[i + 1] += 1
                    mine[i + 2] = modseq
                    mine[i] = mailbox_id
                else:
                    mine[i + 1] += 1
                    mine[i + 2] = modseq

    def state(self, mailbox_id: int) -> tuple[int, int] | None:
        """(how many changes the other workers committed in ``mailbox_id``, the highest modseq of their latest), or
        None when a slot of another worker is held by another mailbox or being rewritten (unknown: read the
        database)."""
        i = (mailbox_id & _MASK) * 3
        count = modseq = 0
        for q in self._others:
            first = q[i]
            n, m = q[i + 1], q[i + 2]
            if first == 0 and n == 0:
                continue  # that worker committed in no mailbox of this slot
            if first != mailbox_id or q[i] != mailbox_id:
                return None
            count += n
            if m > modseq:
                modseq = m
        return count, modseq

    def close(self) -> None:
        for v in reversed(self._views):
            v.release()
        self._views = []
        self._map.close()
