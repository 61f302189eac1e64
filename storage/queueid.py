"""Public queue ids: what log lines, Received fields, SMTP replies and the ``mailserver queue`` command show.

A queue id names one message taken in (an SMTP or webmail submission, or a report we generate) for good: it is
random, so it is never reused after a delete (a log line's id names one message, across restarts and nodes) and says
nothing about how much mail the server handles, which a counter would.  The outbound queue stores it in its own
unique column (``queue.public_id``); the integer keys of ``queue`` and ``queue_recipients`` stay internal (they are
never reused either: AUTOINCREMENT on SQLite, sequences on PostgreSQL).

Format: :data:`QUEUE_ID_LENGTH` characters of the RFC 4648 base32 alphabet (``A``–``Z``, ``2``–``7``), 80 random
bits, like ``KZ4Q7N2XWB5TPL3M``.  With 80 bits two ids collide with probability about n²/2⁸¹ (one in a billion after
some 50 billion messages), so a clash of the unique column is not retried.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading

#: Characters in a queue id.
QUEUE_ID_LENGTH = 16
_RANDOM_BYTES = QUEUE_ID_LENGTH * 5 // 8  # base32: 5 bits per character
QUEUE_ID_RE = re.compile(rf"[A-Z2-7]{{{QUEUE_ID_LENGTH}}}")


#: Ids drawn from one read of the system's random source.  ``os.urandom`` releases the GIL, and on a busy server
#: the reactor thread then waits for the GIL once per message: drawing for many ids at once makes that rare.  The
#: draw is encoded at once too: 5 random bytes are 8 base32 characters, so each id is a slice of the encoded draw.
_IDS_PER_DRAW = 256
_lock = threading.Lock()
_pool = ""
_next = 0


def _reset_after_fork() -> None:
    global _lock, _pool, _next
    _lock, _pool, _next = threading.Lock(), "", 0  # a child must never hand out the ids its parent will


os.register_at_fork(after_in_child=_reset_after_fork)


def new_queue_id() -> str:
    """A fresh random queue id (thread-safe; cryptographically random like ``secrets.token_bytes``)."""
    global _pool, _next
    with _lock:
        if _next >= len(_pool):
            _pool = base64.b32encode(secrets.token_bytes(_RANDOM_BYTES * _IDS_PER_DRAW)).decode("ascii")
            _next = 0
        start = _next
        _next += QUEUE_ID_LENGTH
        return _pool[start:_next]


def normalize_queue_id(text: str) -> str | None:
    """A queue id as typed by an operator (any case, surrounding space), or None if it is not one."""
    qid = text.strip().upper()
    return qid if QUEUE_ID_RE.fullmatch(qid) else None
