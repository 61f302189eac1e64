"""Dedicated thread pools: the reactor thread never blocks on the database, files, DNS or password hashing.

Twisted's default pool also serves getaddrinfo, so our work runs in pools of its own (shared notes: twisted.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool


@dataclass
class Pools:
    db_read: ThreadPool
    db_write: ThreadPool
    blob: ThreadPool
    hash: ThreadPool
    dns: ThreadPool
    cpu: ThreadPool

    @classmethod
    def create(cls, *, db_threads: int = 4, single_writer: bool = True) -> "Pools":
        return cls(
            db_read=ThreadPool(1, db_threads, "db-read"),
            # SQLite has one writer at a time: one thread keeps write transactions from queueing on the file lock.
            db_write=ThreadPool(1, 1 if single_writer else db_threads, "db-write"),
            blob=ThreadPool(1, 16, "blob"),
            hash=ThreadPool(1, 2, "hash"),
            dns=ThreadPool(1, 8, "dns"),
            cpu=ThreadPool(1, 2, "cpu"),
        )

    def all(self) -> list[ThreadPool]:
        return [self.db_read, self.db_write, self.blob, self.hash, self.dns, self.cpu]

    def start(self) -> None:
        for p in self.all():
            if not p.started:
                p.start()

    def stop(self) -> None:
        for p in self.all():
            if p.started:
                p.stop()


def run_in(reactor, pool: ThreadPool, f, *args, **kwargs) -> Deferred:
    """Run ``f(*args, **kwargs)`` in ``pool``; the Deferred fires on the reactor thread.

    A pool with a ``wait_observer`` (set by the server's metrics) is told, from the worker thread, how long the work
    waited for a thread."""
    observe = getattr(pool, "wait_observer", None)
    if observe is None:
        return threads.deferToThreadPool(reactor, pool, f, *args, **kwargs)
    queued = time.monotonic()

    def timed():
        observe(pool.name, time.monotonic() - queued)
        return f(*args, **kwargs)

    return threads.deferToThreadPool(reactor, pool, timed)
