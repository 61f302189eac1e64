"""Counts a process's group commits and its waits for the SQLite write lock, for the benchmarks (never imported by
the server itself).

Put this directory first on ``PYTHONPATH`` and set ``COMMITSTATS_DIR``: every Python process started with that
environment (a `mailserver serve` supervisor, its workers) that delivered something writes
``<COMMITSTATS_DIR>/<pid>.json`` at exit (a clean stop: SIGTERM) with

* ``batches``, ``deliveries``: ``Store.deliver_batch`` calls and the deliveries they carried; ``batch_cpu``,
  ``batch_wall``: the writer thread's CPU (``time.thread_time``) and wall seconds inside them (the flock wait,
  BEGIN IMMEDIATE, the statements, COMMIT and its fsync);
* ``locks``, ``lock_wait``, ``lock_waits_1ms``: exclusive ``flock`` calls on the ``-writelock`` file
  (``storage/db.py``), the seconds spent in them, and how many took over 1 ms (another process held the lock);
* ``flushes``, ``flush_cpu``, ``flush_wall``: blob flushes (``FileBlobStore._flush``: one syncfs(2) per batch).

``scripts/bench/smtp_reference.py --commit-stats`` sets this up for each ``--workers`` run and prints the counts.
"""

import atexit
import json
import os
import time

_DIR = os.environ.get("COMMITSTATS_DIR")
S = {"batches": 0, "deliveries": 0, "batch_cpu": 0.0, "batch_wall": 0.0, "locks": 0, "lock_wait": 0.0,
     "lock_waits_1ms": 0, "flushes": 0, "flush_cpu": 0.0, "flush_wall": 0.0}


def _install() -> None:
    import fcntl

    import storage.blobs as blobs
    import storage.db as db
    import storage.store as store

    deliver_batch = store.Store.deliver_batch

    def counted_deliver_batch(self, deliveries):
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            return deliver_batch(self, deliveries)
        finally:
            S["batches"] += 1
            S["deliveries"] += len(deliveries)
            S["batch_cpu"] += time.thread_time() - cpu
            S["batch_wall"] += time.monotonic() - wall

    counted_deliver_batch.__dict__.update(deliver_batch.__dict__)  # the @writes_changes declaration
    store.Store.deliver_batch = counted_deliver_batch

    class _Fcntl:
        def __getattr__(self, name):
            return getattr(fcntl, name)

        @staticmethod
        def flock(fd, op):
            if op != fcntl.LOCK_EX:
                return fcntl.flock(fd, op)
            wall = time.monotonic()
            fcntl.flock(fd, op)
            waited = time.monotonic() - wall
            S["locks"] += 1
            S["lock_wait"] += waited
            S["lock_waits_1ms"] += waited > 0.001

    db.fcntl = _Fcntl()  # storage/db.py's SqliteWriteLock calls fcntl.flock through its module global

    flush = blobs.FileBlobStore._flush

    def counted_flush(self):
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            return flush(self)
        finally:
            S["flushes"] += 1
            S["flush_cpu"] += time.thread_time() - cpu
            S["flush_wall"] += time.monotonic() - wall

    blobs.FileBlobStore._flush = counted_flush


def _dump() -> None:
    if S["deliveries"]:
        with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as f:
            json.dump(S, f)


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    _install()
    atexit.register(_dump)
