"""Cluster-wide leases: a job that exactly one process of the whole cluster runs (the queue runner, the blob collector).

A lease is one row of ``cluster_leases`` (name, holder, holder_pid, expires).  A process takes it when nobody holds it
or the holder's lease has expired, and renews it every ``ttl / 3`` seconds while it holds it; it lets go when it
stops.  The row is written in a write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the row lock of the
UPDATE, or the primary key of the INSERT), so two processes never both believe they won.

A holder that dies keeps the lease until it expires; the worker supervisor frees a dead worker's rows at once
(:func:`free_holder`).  A holder that cannot renew (the database is unreachable) gives the job up as soon as its
lease may have expired, before another process can have taken it over: ``on_lose`` runs at ``2/3 * ttl`` after the
last successful renewal at the latest.

``holder`` is unique per process start (``"<name>:<random>"``): a restarted worker that got the pid of a dead one is
still another holder.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from sqlalchemy import text
from twisted.internet import defer, task
from twisted.logger import Logger

from mailserver.threads import run_in

log = Logger()

#: The lease of the queue runner and the periodic blob collector (one process of the cluster runs both).
MAINTENANCE = "maintenance"


def new_holder(prefix: str = "") -> str:
    """A holder name unique to one process start (``prefix`` names it for the logs, e.g. "worker1")."""
    return f"{prefix or os.getpid()}:{secrets.token_hex(8)}"


# --------------------------------------------------------------------------------------------- blocking


def take_blocking(store, name: str, holder: str, now: float, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False if another holder has it."""
    p = {"n": name, "h": holder, "pid": os.getpid(), "now": now, "e": now + ttl}
    with store.transaction(durable=False) as conn:
        updated = conn.execute(text("UPDATE cluster_leases SET holder = :h, holder_pid = :pid, expires = :e"
                                    " WHERE name = :n AND (holder = :h OR expires <= :now)"), p).rowcount
        if updated:
            return True
        inserted = conn.execute(text("INSERT INTO cluster_leases (name, holder, holder_pid, expires)"
                                     " VALUES (:n, :h, :pid, :e) ON CONFLICT (name) DO NOTHING"), p).rowcount
        return bool(inserted)


def release_blocking(store, name: str, holder: str) -> None:
    with store.transaction(durable=False) as conn:
        conn.execute(text("DELETE FROM cluster_leases WHERE name = :n AND holder = :h"), {"n": name, "h": holder})


def holder_of(store, name: str, now: float) -> str | None:
    """Who holds ``name`` now (None: nobody, or the lease expired)."""
    with store.transaction(write=False) as conn:
        row = conn.execute(text("SELECT holder, expires FROM cluster_leases WHERE name = :n"), {"n": name}).first()
    return row.holder if row is not None and row.expires > now else None


def free_holder(store, holder: str) -> int:
    """Forget every lease, maildrop lock and heartbeat row of ``holder`` (a process known to be dead); returns the
    rows removed."""
    with store.transaction(durable=False) as conn:
        n = conn.execute(text("DELETE FROM cluster_leases WHERE holder = :h"), {"h": holder}).rowcount
        n += conn.execute(text("DELETE FROM maildrop_locks WHERE holder = :h"), {"h": holder}).rowcount
        n += conn.execute(text("DELETE FROM cluster_nodes WHERE holder = :h"), {"h": holder}).rowcount
    return n


# --------------------------------------------------------------------------------------------- reactor side


class ClusterLease:
    """Holds the lease ``name`` whenever it can, calling ``on_gain()`` when it got it and ``on_lose()`` (which may
    return a Deferred) when it lost it or stops.  Runs on the reactor; the database work runs in ``pool``."""

    def __init__(self, reactor, store, pool, name: str, *, holder: str, ttl: float,
                 on_gain: Callable[[], object], on_lose: Callable[[], object]):
        self.reactor = reactor
        self.store = store
        self.pool = pool
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.held = False
        self._renewed_at = 0.0
        self._loop: task.LoopingCall | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.ttl / 3, now=True)

    @defer.inlineCallbacks
    def _tick(self):
        now = self.reactor.seconds()
        try:
            won = yield run_in(self.reactor, self.pool, take_blocking, self.store, self.name, self.holder, now,
                               self.ttl)
        except Exception:
            log.failure("lease {name}: cannot reach the database", name=self.name)
            won = self.held and self.reactor.seconds() - self._renewed_at < self.ttl * 2 / 3
        if self._stopping:
            return
        if won:
            self._renewed_at = now
        if won and not self.held:
            self.held = True
            log.info("lease {name} taken by this process ({holder})", name=self.name, holder=self.holder)
            self.on_gain()
        elif not won and self.held:
            self.held = False
            log.warn("lease {name} lost", name=self.name)
            yield self.on_lose()

    @defer.inlineCallbacks
    def stop(self):
        """Stop renewing; if held, run ``on_lose`` and give the lease back (the next holder need not wait)."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.held:
            self.held = False
            yield self.on_lose()
            try:
                yield run_in(self.reactor, self.pool, release_blocking, self.store, self.name, self.holder)
            except Exception:
                log.failure("lease {name}: could not give it back (it expires by itself)", name=self.name)
