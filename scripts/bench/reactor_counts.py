"""Counts of the reactor's work that load does not move, for the IMAP cost scripts (``imap_cpu.py``,
``imap_idle_cost.py``): thread-pool hand-overs, calls back into the reactor from other threads, reactor iterations
(each a poll and a ``runUntilCurrent``), timed calls scheduled, TCP reads and sends (one ``send`` each) and the
bytes sent. Installed by wrapping Twisted's own classes and the running reactor, before or after it starts; it
imports nothing of the server's, so it runs unchanged in a worktree of an older revision.
"""

from __future__ import annotations

NAMES = ("pool calls", "from threads", "iterations", "callLater", "reads", "sends", "bytes sent")


def install() -> dict[str, int]:
    """Start counting; returns the live counters (a dict keyed by ``NAMES``)."""
    from twisted.internet import reactor, tcp
    from twisted.python.threadpool import ThreadPool

    counts = dict.fromkeys(NAMES, 0)

    def wrap_method(cls, name, key, nbytes=False):
        original = getattr(cls, name)

        def counted(self, *a, **kw):
            counts[key] += 1
            result = original(self, *a, **kw)
            if nbytes and isinstance(result, int):
                counts["bytes sent"] += result
            return result
        setattr(cls, name, counted)

    wrap_method(ThreadPool, "callInThreadWithCallback", "pool calls")
    wrap_method(tcp.Connection, "doRead", "reads")
    wrap_method(tcp.Connection, "writeSomeData", "sends", nbytes=True)

    def wrap_reactor(name, key):
        original = getattr(reactor, name)

        def counted(*a, **kw):
            counts[key] += 1
            return original(*a, **kw)
        setattr(reactor, name, counted)  # an instance attribute: the main loop looks it up every turn

    wrap_reactor("callFromThread", "from threads")
    wrap_reactor("runUntilCurrent", "iterations")
    wrap_reactor("callLater", "callLater")
    return counts


def snapshot(counts: dict[str, int]) -> dict[str, int]:
    return dict(counts)


def per(counts: dict[str, int], before: dict[str, int], n: int) -> str:
    """The counters' growth since ``before``, per ``n`` operations, as one line of text."""
    return "  ".join(f"{k} {(counts[k] - before[k]) / n:.2f}" for k in NAMES)
