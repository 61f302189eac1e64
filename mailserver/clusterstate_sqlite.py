"""The SQLite implementation of :mod:`mailserver.clusterstate` for several worker processes on one database file.

With ``[server] workers`` above 1 the workers are separate processes, so the in-process state would split (two POP3
sessions on one maildrop, failures counted per worker, a message \\Recent in two sessions).  The state lives in
tables of the same SQLite file instead; every write is one ``BEGIN IMMEDIATE`` transaction in the process's single
writer thread (``db_write``), so a process's requests run in the order the reactor made them.

* **POP3 maildrop lock**: a row of ``maildrop_locks`` per locked account naming its holder (unique per process
  start, :func:`mailserver.leases.new_holder`) and the holder's pid.  A row whose pid no longer runs is stale and
  taken over; the supervisor also deletes a dead worker's rows when it reaps it, and a worker deletes its own when it
  stops.  (One machine: SQLite is one file, so pids are comparable.)
* **Failed-login counters** and **\\Recent**: the tables and queries of the PostgreSQL implementation
  (``auth_failures``, ``imap_recent``), with SQLite's write lock in place of ``SELECT … FOR UPDATE``.
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from twisted.internet import task
from twisted.logger import Logger

from mailserver.clusterstate import ClusterState, MaildropLocks
from mailserver.clusterstate_pg import PgLoginFailures, PgRecentClaims
from mailserver.threads import run_in

log = Logger()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


class SqliteMaildropLocks:
    """:class:`mailserver.clusterstate.MaildropLockTable` in the ``maildrop_locks`` table."""

    def __init__(self, reactor, store, pool, holder: str):
        self.reactor = reactor
        self.store = store
        self.pool = pool
        self.holder = holder
        self._local = MaildropLocks()

    def acquire(self, account_id: int) -> bool:
        return self._local.acquire(account_id)

    async def acquire_cluster(self, account_id: int) -> bool:
        return await run_in(self.reactor, self.pool, self._lock_blocking, account_id)

    def release(self, account_id: int) -> None:
        if self._local.held(account_id):
            self._local.release(account_id)
            # The writer pool has one thread: this runs after any earlier lock of the same account.
            self.pool.callInThread(self._unlock_logged, account_id)

    def held(self, account_id: int) -> bool:
        return self._local.held(account_id)

    # -- writer thread

    def _lock_blocking(self, account_id: int) -> bool:
        p = {"a": account_id, "h": self.holder, "pid": os.getpid(), "now": self.reactor.seconds()}
        with self.store.transaction(durable=False) as conn:
            row = conn.execute(text("SELECT holder, holder_pid FROM maildrop_locks WHERE account_id = :a"), p).first()
            if row is None:
                conn.execute(text("INSERT INTO maildrop_locks (account_id, holder, holder_pid, since)"
                                  " VALUES (:a, :h, :pid, :now)"), p)
                return True
            if row.holder == self.holder or pid_alive(row.holder_pid):
                return False
            log.info("maildrop lock of account {id} taken over from process {pid}, which is gone", id=account_id,
                     pid=row.holder_pid)
            conn.execute(text("UPDATE maildrop_locks SET holder = :h, holder_pid = :pid, since = :now"
                              " WHERE account_id = :a"), p)
            return True

    def _unlock_logged(self, account_id: int) -> None:
        try:
            with self.store.transaction(durable=False) as conn:
                conn.execute(text("DELETE FROM maildrop_locks WHERE account_id = :a AND holder = :h"),
                             {"a": account_id, "h": self.holder})
        except Exception:
            log.failure("releasing the maildrop lock of account {id} failed", id=account_id)

    def release_all_blocking(self) -> None:
        with self.store.transaction(durable=False) as conn:
            conn.execute(text("DELETE FROM maildrop_locks WHERE holder = :h"), {"h": self.holder})


class SqliteLoginFailures(PgLoginFailures):
    """:class:`mailserver.clusterstate.LoginFailures` in ``auth_failures``, written under SQLite's write lock."""

    def __init__(self, reactor, store, read_pool, write_pool, limits):
        super().__init__(reactor, store.engine, read_pool, write_pool, limits)
        self.store = store

    def _counts_blocking(self, p: dict) -> tuple[int, int]:
        with self.store.transaction(write=False) as conn:  # a read: no PRAGMA synchronous switch (storage/db.py)
            return self._count(conn, p)

    def _add_blocking(self, p: dict) -> tuple[int, int]:
        with self.store.transaction(durable=False) as conn:
            conn.execute(text("DELETE FROM auth_failures WHERE key IN (:ip, :account) AND failed_at <= :since"), p)
            conn.execute(text("INSERT INTO auth_failures (key, failed_at) VALUES (:ip, :now), (:account, :now)"), p)
            return self._count(conn, p)

    def _clear_blocking(self, p: dict) -> tuple[int, int]:
        # Nearly every good login has nothing to clear: a read then, not a turn at the write lock every worker
        # queues for.
        with self.store.transaction(write=False) as conn:
            if conn.execute(text("SELECT 1 FROM auth_failures WHERE key = :account LIMIT 1"), p).first() is None:
                return self._count(conn, p)
        with self.store.transaction(durable=False) as conn:
            conn.execute(text("DELETE FROM auth_failures WHERE key = :account"), p)
            return self._count(conn, p)

    def prune_blocking(self, now: float) -> int:
        with self.store.transaction(durable=False) as conn:
            return conn.execute(text("DELETE FROM auth_failures WHERE failed_at <= :since"),
                                {"since": now - self.window}).rowcount


class SqliteRecentClaims(PgRecentClaims):
    """:class:`mailserver.clusterstate.RecentClaims` over ``imap_recent``; the write lock replaces ``FOR UPDATE``."""

    def __init__(self, reactor, store, read_pool, write_pool):
        super().__init__(reactor, store.engine, read_pool, write_pool)
        self.store = store

    def _read(self):
        return self.store.transaction(write=False)  # no PRAGMA synchronous switch (storage/db.py)

    def _reserve_blocking(self, mailbox_id: int, uid_validity: int, up_to: int) -> tuple[int, int]:
        p = {"m": mailbox_id, "v": uid_validity, "u": up_to}
        # Most SELECTs find every UID claimed already (last_uid only grows within one UIDVALIDITY): a read answers
        # those without the write lock; the write below checks again.
        with self.store.transaction(write=False) as conn:
            row = conn.execute(text("SELECT uid_validity, last_uid FROM imap_recent WHERE mailbox_id = :m"), p).first()
        if row is not None and row.uid_validity > uid_validity:
            return up_to, up_to
        if row is not None and row.uid_validity == uid_validity and row.last_uid >= up_to:
            return row.last_uid, row.last_uid
        try:
            with self.store.transaction(durable=False) as conn:
                row = conn.execute(text("SELECT uid_validity, last_uid FROM imap_recent WHERE mailbox_id = :m"),
                                   p).first()
                if row is None:
                    conn.execute(text("INSERT INTO imap_recent (mailbox_id, uid_validity, last_uid)"
                                      " VALUES (:m, :v, :u)"), p)
                    return 0, up_to
                if row.uid_validity > uid_validity:
                    return up_to, up_to  # the session saw an earlier incarnation of the mailbox: nothing is new
                previous = row.last_uid if row.uid_validity == uid_validity else 0
                if previous >= up_to:
                    return previous, previous
                conn.execute(text("UPDATE imap_recent SET uid_validity = :v, last_uid = :u WHERE mailbox_id = :m"),
                             p)
                return previous, up_to
        except IntegrityError:
            return up_to, up_to  # the mailbox is gone


class SqliteClusterState(ClusterState):
    """Per-cluster state in the SQLite file, for one of several worker processes (``holder`` names this one)."""

    def __init__(self, reactor, store, pools, limits, holder: str):
        self.reactor = reactor
        self.maildrop_locks = SqliteMaildropLocks(reactor, store, pools.db_write, holder)
        self.login_failures = SqliteLoginFailures(reactor, store, pools.db_read, pools.db_write, limits)
        self.recent = SqliteRecentClaims(reactor, store, pools.db_read, pools.db_write)
        self._pools = pools
        self._prune: task.LoopingCall | None = None

    def start(self) -> None:
        self._prune = task.LoopingCall(self._prune_failures)
        self._prune.clock = self.reactor
        self._prune.start(max(60.0, self.login_failures.window), now=False)

    def _prune_failures(self):
        d = run_in(self.reactor, self._pools.db_write, self.login_failures.prune_blocking, self.reactor.seconds())
        return d.addErrback(lambda f: log.failure("removing old login failures failed", f))

    def stop(self) -> None:
        if self._prune is not None and self._prune.running:
            self._prune.stop()
        # Queued behind any pending unlock in the single writer thread; the pool runs it before it stops.
        self._pools.db_write.callInThread(self._release_all_logged)

    def _release_all_logged(self) -> None:
        try:
            self.maildrop_locks.release_all_blocking()
        except Exception:
            log.failure("releasing this process's maildrop locks failed")
