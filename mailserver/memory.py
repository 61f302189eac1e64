"""Giving memory back to the system after a burst (glibc's allocator; elsewhere these do nothing).

Freed memory stays in the process unless the allocator returns it, and glibc's keeps two kinds of it:

- large blocks: glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), so after the first
  password hash (argon2id takes 19 MiB) every later one is carved from the heap of the thread that computes it and
  stays there: two hash threads keep 38 MiB after one burst of logins. :func:`return_large_blocks_to_the_system`
  fixes the threshold at :data:`MMAP_THRESHOLD`, so such blocks get pages of their own, returned once freed;
- the small objects of many connections at once (3,000 connections that are aborted leave about 9 KB each of freed
  OpenSSL and Python memory between live objects): only ``malloc_trim`` returns those pages. :class:`MemoryTrim`
  calls it in a worker thread (it releases the GIL, but holds each heap's lock while it walks it: the first call
  after a burst can take 100 ms) at most every :data:`TRIM_INTERVAL` seconds, once :data:`TRIM_AFTER_CLOSES`
  connections have closed since the last call.

And Python's cyclic garbage collector: :func:`settle_heap`, once the first server of a process has started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

from twisted.internet import task
from twisted.logger import Logger

log = Logger()

#: Allocations of at least this many octets get pages of their own (mmap), which go back to the system when freed.
MMAP_THRESHOLD = 1 << 20
#: Seconds between checks whether connections have closed (and freed memory may be returned).
TRIM_INTERVAL = 10.0
#: Connections that must have closed since the last trim for the next one (a burst, not every quiet close).
TRIM_AFTER_CLOSES = 256
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def return_large_blocks_to_the_system() -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where there is no glibc."""
    return _LIBC is not None and bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


_settled = False


def settle_heap() -> bool:
    """Once per process (True the time it acts): one full collection, then every object still alive moves to the
    collector's permanent generation (``gc.freeze``).

    When a server has started, ~140,000 objects (modules, the config, the engine and its built statements, the
    listeners) sit in the oldest generation and stay there for good. Every full collection would walk them again
    (~100 ms), and which burst of traffic pays the first one depends on where the start-up left the generation
    counters: a ``deliver_raw`` fill of 2,000 messages paid one, ~50 us a message. Frozen, they are never walked;
    a full collection then walks only what the traffic left, and none is left due by the start. Objects freed by
    reference counting are freed as before; only cyclic garbage among the frozen (a server of the process started
    and stopped again, as tests do) stays, once, since the second start does nothing here."""
    global _settled
    if _settled:
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    return True


def trim() -> bool:
    """Return the free pages of every heap to the system (blocking: run it in a worker thread)."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


class MemoryTrim:
    """Every ``interval`` seconds, if ``closed()`` (a count of closed connections) moved by ``after`` or more, run
    :func:`trim` through ``run`` (which returns a Deferred; one trim at a time)."""

    def __init__(self, clock, closed: Callable[[], int], run: Callable, interval: float = TRIM_INTERVAL,
                 after: int = TRIM_AFTER_CLOSES):
        self.after = after
        self.closed = closed
        self.run = run
        self._seen = closed()
        self._busy = False
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = clock
        self.interval = interval

    def start(self) -> None:
        if _LIBC is not None:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        now = self.closed()
        if now - self._seen < self.after or self._busy:
            return
        self._seen = now
        self._busy = True

        def done(result):
            self._busy = False
            return None

        d = self.run(trim)
        d.addErrback(lambda f: log.failure("returning memory to the system failed", f))
        d.addBoth(done)
