"""The PostgreSQL implementation of :mod:`mailserver.clusterstate`: several processes or nodes share one database.

* **POP3 maildrop lock**: a session-level advisory lock ``pg_try_advisory_lock(namespace, account_id)`` held on one
  dedicated connection (``application_name`` ``mailserver-locks <pid>``), used by one thread of its own, so locks and
  unlocks run in the order the reactor asked for them.  A process that dies loses its connection and with it its
  locks; server-side TCP keepalives end the connection of a node that vanished without closing it.  The namespace is
  derived from the schema (``current_schema()``), so installations sharing one database in separate schemas do not
  collide.  The connection is checked every :data:`LOCK_PING_INTERVAL` seconds; if it was lost, the locks this
  process holds are taken again on a new one (an error is logged for any that another process took meanwhile).
* **Failed-login counters**: one row per failure in ``auth_failures`` (the key is a SHA-256 of "ip:…" or
  "account:…", so typed login names are not stored), counted in the window; expired rows are deleted as failures are
  added.
* **\\Recent**: one row per mailbox in ``imap_recent`` with the highest UID any process has claimed.  A process
  reserves ``(previous, up_to]`` under the row lock (``SELECT … FOR UPDATE``, then ``UPDATE … RETURNING``) and hands
  those UIDs to its own sessions; a UIDVALIDITY newer than the row's starts the mailbox afresh.

Every blocking call runs in a thread pool (``db_read``/``db_write``, and the lock thread), never on the reactor.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailserver.clusterstate import ClusterState, MaildropLocks, failures_kept
from mailserver.threads import run_in

log = Logger()

#: Seconds between checks of the lock connection (a lost one is replaced and its locks taken again).
LOCK_PING_INTERVAL = 10.0
#: Server-side TCP keepalives of the lock connection: a vanished node's locks end within about a minute.
LOCK_KEEPALIVES = {"tcp_keepalives_idle": 20, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}
#: Client-side TCP keepalives (libpq parameters): a dead server is noticed while the connection is idle.
CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 20, "keepalives_interval": 5, "keepalives_count": 4}
#: Mailboxes whose claim state a process remembers (the least recently used are forgotten: asked again).
MAX_RECENT_MAILBOXES = 50_000


def _int32(value: int) -> int:
    return (value & 0xFFFFFFFF) - (1 << 32 if value & 0x80000000 else 0)


def lock_namespace(schema: str) -> int:
    """The first key of this installation's advisory locks: a 32-bit hash of its schema name."""
    return _int32(zlib.crc32(b"mailserver pop3 maildrop " + schema.encode()))


# --------------------------------------------------------------------------------------------- maildrop locks


class PgMaildropLocks:
    """:class:`mailserver.clusterstate.MaildropLockTable` with advisory locks on a dedicated connection."""

    def __init__(self, reactor, dsn: str):
        self.reactor = reactor
        self.dsn = dsn
        self.application_name = f"mailserver-locks {os.getpid()}"
        self._local = MaildropLocks()
        self._pool = ThreadPool(1, 1, "pop3-locks")
        self._ping: task.LoopingCall | None = None
        # Touched only in the pool's one thread:
        self._conn = None
        self._namespace = 0
        self._db_held: set[int] = set()

    # -- reactor side

    def start(self) -> None:
        self._pool.start()
        self._ping = task.LoopingCall(lambda: self._pool.callInThread(self._check))
        self._ping.clock = self.reactor
        self._ping.start(LOCK_PING_INTERVAL, now=False)

    def stop(self) -> None:
        if self._ping is not None and self._ping.running:
            self._ping.stop()
        if self._pool.started:
            self._pool.callInThread(self._close)
            self._pool.stop()  # runs the queued unlocks and the close first

    def acquire(self, account_id: int) -> bool:
        return self._local.acquire(account_id)

    async def acquire_cluster(self, account_id: int) -> bool:
        return await run_in(self.reactor, self._pool, self._try_lock, account_id)

    def release(self, account_id: int) -> None:
        if self._local.held(account_id):
            self._local.release(account_id)
            self._pool.callInThread(self._unlock, account_id)

    def held(self, account_id: int) -> bool:
        return self._local.held(account_id)

    # -- lock thread

    def _connection(self):
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True, application_name=self.application_name,
                               connect_timeout=10, **CLIENT_KEEPALIVES)
        for name, value in LOCK_KEEPALIVES.items():
            conn.execute(f"SET {name} = {int(value)}")
        schema = conn.execute("SELECT current_schema()").fetchone()[0] or ""
        self._namespace = lock_namespace(schema)
        self._conn = conn
        lost, self._db_held = self._db_held, set()
        for account_id in sorted(lost):  # the old connection's locks ended with it: take them again
            if self._lock_on(conn, account_id):
                log.info("maildrop lock of account {id} taken again on a new connection", id=account_id)
            else:
                log.error("maildrop lock of account {id} was lost: another process holds it now", id=account_id)
        return conn

    def _lock_on(self, conn, account_id: int) -> bool:
        ok = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._namespace, account_id)).fetchone()[0]
        if ok:
            self._db_held.add(account_id)
        return bool(ok)

    def _run(self, f, *args):
        """``f(conn, *args)``; if the connection turns out dead, once more on a new one."""
        import psycopg

        try:
            return f(self._connection(), *args)
        except psycopg.OperationalError:
            self._drop()
            return f(self._connection(), *args)

    def _try_lock(self, account_id: int) -> bool:
        if account_id in self._db_held:
            return False  # cannot happen while the local table is consulted first; never lock twice
        return self._run(self._lock_on, account_id)

    def _unlock(self, account_id: int) -> None:
        if account_id not in self._db_held:
            return
        self._db_held.discard(account_id)
        try:
            conn = self._connection()
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._namespace, account_id))
        except Exception:
            # A dead connection released it anyway; _connection() does not take it again (no longer held).
            self._drop()

    def _check(self) -> None:
        try:
            self._run(lambda conn: conn.execute("SELECT 1"))
        except Exception:
            log.failure("maildrop lock connection unavailable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _close(self) -> None:
        self._db_held.clear()
        self._drop()  # ends every lock of this process


# --------------------------------------------------------------------------------------------- login failures


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode("utf-8", "surrogatepass")).hexdigest()


_COUNT = text(
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM auth_failures WHERE key = :ip AND failed_at > :since"
    " LIMIT :ip_keep) AS i),"
    " (SELECT count(*) FROM (SELECT 1 FROM auth_failures WHERE key = :account AND failed_at > :since"
    " LIMIT :account_keep) AS a)")


_CLEAR = text(
    "WITH cleared AS (DELETE FROM auth_failures WHERE key = :account)"
    " SELECT count(*) FROM (SELECT 1 FROM auth_failures WHERE key = :ip AND failed_at > :since LIMIT :ip_keep) AS i")


class PgLoginFailures:
    """:class:`mailserver.clusterstate.LoginFailures` in the ``auth_failures`` table."""

    def __init__(self, reactor, engine, read_pool, write_pool, limits):
        self.reactor = reactor
        self.engine = engine
        self.read_pool = read_pool
        self.write_pool = write_pool
        self.window = limits.auth_failure_window
        self.ip_keep = failures_kept(limits.auth_max_failures_per_ip)
        self.account_keep = failures_kept(limits.auth_max_failures_per_account)

    def _params(self, ip_key: str, address: str, now: float) -> dict:
        return {"ip": _key("ip", ip_key), "account": _key("account", address), "since": now - self.window,
                "ip_keep": self.ip_keep, "account_keep": self.account_keep, "now": now}

    def _count(self, conn, p: dict) -> tuple[int, int]:
        row = conn.execute(_COUNT, p).one()
        return int(row[0]), int(row[1])

    def _counts_blocking(self, p: dict) -> tuple[int, int]:
        with self.engine.connect() as conn:
            return self._count(conn, p)

    def _add_blocking(self, p: dict) -> tuple[int, int]:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM auth_failures WHERE key IN (:ip, :account) AND failed_at <= :since"), p)
            conn.execute(text("INSERT INTO auth_failures (key, failed_at) VALUES (:ip, :now), (:account, :now)"), p)
            return self._count(conn, p)

    def _clear_blocking(self, p: dict) -> tuple[int, int]:
        # Every successful login comes here: one statement, committed on its own (AUTOCOMMIT: no BEGIN and COMMIT
        # round trips), instead of BEGIN, DELETE, count, COMMIT.  The account has no failure left once it ran; the
        # address's count is read in the same statement (the hashed keys of an address and of an account differ).
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return int(conn.execute(_CLEAR, p).scalar_one()), 0

    async def counts(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        return await run_in(self.reactor, self.read_pool, self._counts_blocking, self._params(ip_key, address, now))

    async def add(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        return await run_in(self.reactor, self.write_pool, self._add_blocking, self._params(ip_key, address, now))

    async def clear_account(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        return await run_in(self.reactor, self.write_pool, self._clear_blocking, self._params(ip_key, address, now))

    def prune_blocking(self, now: float) -> int:
        """Delete every failure older than the window (all keys); returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(text("DELETE FROM auth_failures WHERE failed_at <= :since"),
                                {"since": now - self.window}).rowcount


# --------------------------------------------------------------------------------------------- \Recent


class PgRecentClaims:
    """:class:`mailserver.clusterstate.RecentClaims` over the ``imap_recent`` table.

    Per (mailbox, UIDVALIDITY) the process remembers ``known``, a lower bound of the highest UID claimed by any
    process, and ``held``, the spans ``(lo, hi]`` this process won and has not handed to a session yet.
    """

    def __init__(self, reactor, engine, read_pool, write_pool):
        self.reactor = reactor
        self.engine = engine
        self.read_pool = read_pool
        self.write_pool = write_pool
        self._known: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._held: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._busy: dict[tuple[int, int], list[defer.Deferred]] = {}
        #: Per mailbox waiting for :meth:`after_reserve`: [highest UID wanted, callbacks in arrival order].
        self._batches: dict[tuple[int, int], list] = {}

    # -- answers from what this process holds

    def claim(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> list[int]:
        key = (mailbox_id, uid_validity)
        spans = self._held.get(key)
        if not spans or not uids:
            return []
        out: list[int] = []
        for lo, hi in spans:
            out.extend(uids[bisect.bisect_right(uids, lo):bisect.bisect_right(uids, hi)])
        # Everything up to the session's highest UID is settled now; the rest stays for the next claim.
        top = uids[-1]
        rest = [(max(lo, top), hi) for lo, hi in spans if hi > top]
        if rest:
            self._held[key] = rest
        else:
            del self._held[key]
        return out

    def unclaimed_count(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> int:
        key = (mailbox_id, uid_validity)
        n = len(uids) - bisect.bisect_right(uids, self._known.get(key, 0))
        for lo, hi in self._held.get(key, ()):
            n += bisect.bisect_right(uids, hi) - bisect.bisect_right(uids, lo)
        return n

    # -- asking the database

    async def reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int) -> None:
        key = (mailbox_id, uid_validity)
        while self._known.get(key, 0) < up_to_uid:
            waiters = self._busy.get(key)
            if waiters is not None:  # one reservation per mailbox at a time; then look again
                d: defer.Deferred = defer.Deferred()
                waiters.append(d)
                await d
                continue
            self._busy[key] = []
            try:
                previous, claimed = await run_in(self.reactor, self.write_pool, self._reserve_blocking,
                                                 mailbox_id, uid_validity, up_to_uid)
            finally:
                for d in self._busy.pop(key):
                    d.callback(None)
            if claimed > previous:
                self._hold(key, previous, claimed)
            self._learn(key, claimed)  # claimed >= up_to_uid: the loop ends

    def after_reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int, then: Callable[[], None]) -> None:
        key = (mailbox_id, uid_validity)
        batch = self._batches.get(key)
        if batch is None:
            if self._known.get(key, 0) >= up_to_uid:
                then()  # settled already (another session's reservation covered it): no Deferred, no coroutine
                return
            batch = self._batches[key] = [up_to_uid, [then]]
            defer.ensureDeferred(self._reserve_batch(key, batch))
            return
        batch[0] = max(batch[0], up_to_uid)
        batch[1].append(then)

    async def _reserve_batch(self, key: tuple[int, int], batch: list) -> None:
        try:
            while True:
                up_to = batch[0]
                try:
                    await self.reserve(key[0], key[1], up_to)
                except Exception:
                    log.failure("reserving \\Recent messages failed")  # those messages are then not Recent here
                if batch[0] <= up_to:
                    break  # else newer messages came for callers that joined meanwhile: reserve those too
        finally:
            del self._batches[key]
        for then in batch[1]:
            try:
                then()
            except Exception:
                log.failure("a caller waiting for a \\Recent reservation failed")

    async def refresh(self, mailbox_id: int, uid_validity: int) -> None:
        claimed = await run_in(self.reactor, self.read_pool, self._claimed_blocking, mailbox_id, uid_validity)
        self._learn((mailbox_id, uid_validity), claimed)

    def _hold(self, key: tuple[int, int], lo: int, hi: int) -> None:
        spans = self._held.setdefault(key, [])
        if spans and spans[-1][1] == lo:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
            spans.sort()

    def _learn(self, key: tuple[int, int], claimed: int) -> None:
        if claimed > self._known.get(key, 0):
            self._known[key] = claimed
        if key in self._known:
            self._known.move_to_end(key)
        while len(self._known) > MAX_RECENT_MAILBOXES:
            self._known.popitem(last=False)

    # -- blocking (thread pools)

    def _reserve_blocking(self, mailbox_id: int, uid_validity: int, up_to: int) -> tuple[int, int]:
        """(highest UID claimed before, highest claimed now): this process won the UIDs in between."""
        p = {"m": mailbox_id, "v": uid_validity, "u": up_to}
        try:
            with self.engine.begin() as conn:
                conn.execute(text("INSERT INTO imap_recent (mailbox_id, uid_validity, last_uid) VALUES (:m, :v, 0)"
                                  " ON CONFLICT (mailbox_id) DO NOTHING"), p)
                row = conn.execute(text("SELECT uid_validity, last_uid FROM imap_recent WHERE mailbox_id = :m"
                                        " FOR UPDATE"), p).one()
                if row.uid_validity > uid_validity:
                    return up_to, up_to  # the session saw an earlier incarnation of the mailbox: nothing is new
                previous = row.last_uid if row.uid_validity == uid_validity else 0
                if previous >= up_to:
                    return previous, previous
                claimed = conn.execute(text("UPDATE imap_recent SET uid_validity = :v, last_uid = :u"
                                            " WHERE mailbox_id = :m RETURNING last_uid"), p).scalar_one()
                return previous, claimed
        except IntegrityError:
            return up_to, up_to  # the mailbox is gone

    def _read(self):
        """A connection for one read (SQLite's subclass: a read-only store transaction)."""
        return self.engine.connect()

    def _claimed_blocking(self, mailbox_id: int, uid_validity: int) -> int:
        with self._read() as conn:
            row = conn.execute(text("SELECT uid_validity, last_uid FROM imap_recent WHERE mailbox_id = :m"),
                               {"m": mailbox_id}).first()
        if row is None or row.uid_validity < uid_validity:
            return 0
        if row.uid_validity > uid_validity:
            return 1 << 62  # an earlier incarnation: every UID counts as claimed
        return row.last_uid


# --------------------------------------------------------------------------------------------- bundle


class PgClusterState(ClusterState):
    """Per-cluster state in PostgreSQL, for the server process using ``engine``."""

    def __init__(self, reactor, engine, pools, limits):
        from storage.pgnotify import _psycopg_dsn

        self.reactor = reactor
        self.maildrop_locks = PgMaildropLocks(reactor, _psycopg_dsn(engine.url.render_as_string(hide_password=False)))
        self.login_failures = PgLoginFailures(reactor, engine, pools.db_read, pools.db_write, limits)
        self.recent = PgRecentClaims(reactor, engine, pools.db_read, pools.db_write)
        self._prune: task.LoopingCall | None = None
        self._pools = pools

    def start(self) -> None:
        self.maildrop_locks.start()
        # Failures older than the window of keys nobody tries any more are deleted here.
        self._prune = task.LoopingCall(self._prune_failures)
        self._prune.clock = self.reactor
        self._prune.start(max(60.0, self.login_failures.window), now=False)

    def _prune_failures(self):
        d = run_in(self.reactor, self._pools.db_write, self.login_failures.prune_blocking, self.reactor.seconds())
        return d.addErrback(lambda f: log.failure("removing old login failures failed", f))

    def stop(self) -> None:
        if self._prune is not None and self._prune.running:
            self._prune.stop()
        self.maildrop_locks.stop()
