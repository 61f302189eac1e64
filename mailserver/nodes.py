"""Heartbeats: one ``cluster_nodes`` row per running server process, so ``mailserver node list`` shows who serves.

Every ``MailServer`` process (a single ``serve``, each worker, each node of a PostgreSQL cluster) writes its row at
start and renews it every ``[server] heartbeat`` seconds; the row says until when it counts as alive
(``expires`` = last beat + :data:`MISSED_BEATS` heartbeats).  A process that stops deletes its row; one that dies
leaves it to expire (the worker supervisor deletes a dead worker's row at once, with its leases).  Rows dead for
longer than :data:`FORGET_AFTER` are removed by whichever process beats next.  Times are the processes' wall
clocks, so the nodes must keep them in step (NTP), as for the leases.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

from sqlalchemy import text
from twisted.internet import defer, task
from twisted.logger import Logger

from mailserver.threads import run_in

log = Logger()

#: A row counts as alive until this many heartbeats were missed.
MISSED_BEATS = 3
#: Dead rows older than this (seconds) are deleted.
FORGET_AFTER = 86400.0


@dataclass(frozen=True)
class NodeRow:
    holder: str
    node: str
    role: str
    pid: int
    started: float
    seen: float
    expires: float
    listeners: tuple[str, ...]

    def alive(self, now: float) -> bool:
        return self.expires > now


def node_name(configured: str) -> str:
    return configured or socket.gethostname()


# --------------------------------------------------------------------------------------------- blocking


def beat_blocking(store, *, holder: str, node: str, role: str, started: float, now: float, ttl: float,
                  listeners: tuple[str, ...]) -> None:
    """Write or renew ``holder``'s row, alive until ``now + ttl``."""
    p = {"h": holder, "n": node, "r": role, "pid": os.getpid(), "st": started, "now": now, "e": now + ttl,
         "l": json.dumps(list(listeners)), "old": now - FORGET_AFTER}
    with store.transaction(durable=False) as conn:
        n = conn.execute(text("UPDATE cluster_nodes SET seen = :now, expires = :e, listeners = :l"
                              " WHERE holder = :h"), p).rowcount
        if not n:
            conn.execute(text("INSERT INTO cluster_nodes (holder, node, role, pid, started, seen, expires, listeners)"
                              " VALUES (:h, :n, :r, :pid, :st, :now, :e, :l) ON CONFLICT (holder) DO NOTHING"), p)
        conn.execute(text("DELETE FROM cluster_nodes WHERE expires < :old"), p)


def forget_blocking(store, holder: str) -> int:
    with store.transaction(durable=False) as conn:
        return conn.execute(text("DELETE FROM cluster_nodes WHERE holder = :h"), {"h": holder}).rowcount


def list_nodes(store) -> list[NodeRow]:
    """Every row (alive or not yet forgotten), by node, then start."""
    with store.transaction(write=False) as conn:
        rows = conn.execute(text("SELECT holder, node, role, pid, started, seen, expires, listeners"
                                 " FROM cluster_nodes ORDER BY node, started, holder")).all()
    out = []
    for r in rows:
        try:
            listeners = tuple(str(x) for x in json.loads(r.listeners))
        except (ValueError, TypeError):
            listeners = ()
        out.append(NodeRow(r.holder, r.node, r.role, r.pid, r.started, r.seen, r.expires, listeners))
    return out


# --------------------------------------------------------------------------------------------- reactor side


class Heartbeat:
    """Renews this process's row every ``interval`` seconds on the reactor ``clock`` (``wall`` gives the times
    written: the reactor's ``seconds()`` by default); the database work runs in ``pool``."""

    def __init__(self, reactor, store, pool, *, holder: str, node: str, role: str, interval: float,
                 listeners=lambda: (), wall=None):
        self.reactor = reactor
        self.store = store
        self.pool = pool
        self.holder = holder
        self.node = node
        self.role = role
        self.interval = interval
        self.listeners = listeners
        self.wall = wall or reactor.seconds
        self.started = self.wall()
        self.beats = 0
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._beat)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    @defer.inlineCallbacks
    def _beat(self):
        try:
            yield run_in(self.reactor, self.pool, beat_blocking, self.store, holder=self.holder, node=self.node,
                         role=self.role, started=self.started, now=self.wall(),
                         ttl=self.interval * MISSED_BEATS, listeners=tuple(self.listeners()))
            self.beats += 1
        except Exception:
            log.failure("heartbeat: cannot reach the database")

    def halt(self) -> None:
        """Stop beating; the row stays until it expires (a start that failed)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def stop(self):
        """Stop beating and delete the row (the process is going)."""
        self.halt()
        try:
            yield run_in(self.reactor, self.pool, forget_blocking, self.store, self.holder)
        except Exception:
            log.failure("heartbeat: could not delete this process's row (it expires by itself)")
