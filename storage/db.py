"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (scale-out).

SQLite notes (see shared notes): every write transaction starts with ``BEGIN IMMEDIATE`` so that it takes the write lock up
front (a deferred transaction that upgrades fails with "database is locked" regardless of busy_timeout); WAL with
``synchronous=FULL`` so a commit that returned is on disk before we answer "250" or "OK".

Several processes on one file (worker processes, the command line next to a running server) queue for the write lock
on an ``flock`` of ``<database>-writelock`` (:func:`write_lock`) before ``BEGIN IMMEDIATE``.  SQLite's own busy
handler waits by sleeping (1, 2, 5 … up to 100 ms between tries), so under contention from several processes the
lock sat free while every waiter slept: four workers served half of what one did.  The kernel wakes a waiter on
``flock`` as soon as the holder lets go, and ``BEGIN IMMEDIATE`` then finds the lock free (``busy_timeout`` stays as
the backstop for writers that do not take the file lock, e.g. another program).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class SqliteWriteLock:
    """One writer at a time among all threads and processes that use this lock file (blocking; a context manager).

    A thread lock orders this process's threads (an ``flock`` is held by the open file, which they share); the
    ``flock`` orders processes.  Re-entrant: a write transaction opened inside another on the same thread gets
    past this lock (and then meets SQLite's own, as it always did).  The file is opened once per process (again after a fork: a child must not share its
    parent's open file, or both would hold the lock at once).  The kernel drops a dead process's lock.
    """

    def __init__(self, path: str):
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0
        self.acquired = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self):
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1
        self.acquired += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()
        return False


_write_locks: dict[str, SqliteWriteLock] = {}
#: The BEGIN of a SQLite transaction by mode (storage/db.py _sqlite_begin).
_BEGIN = {"DEFERRED": "BEGIN DEFERRED", "IMMEDIATE": "BEGIN IMMEDIATE"}
#: The synchronous levels a connection switches between (storage/db.py _sqlite_begin).
_SYNC = {"FULL": "PRAGMA synchronous=FULL", "NORMAL": "PRAGMA synchronous=NORMAL"}
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine):
    """The context manager a write transaction on ``engine`` runs inside: the file lock of its SQLite database
    (:class:`SqliteWriteLock`, one per database file and process), or nothing (PostgreSQL, in-memory SQLite)."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    path = engine.url.database or ""
    if not path or path == ":memory:":
        return contextlib.nullcontext()
    path = os.path.abspath(path) + "-writelock"
    lock = _write_locks.get(path)
    if lock is None:
        with _write_locks_guard:
            lock = _write_locks.setdefault(path, SqliteWriteLock(path))
    return lock


def _sqlite_begin(pooled) -> None:
    """BEGIN of a SQLite transaction, straight on the driver connection (``pooled`` is the pool's connection
    proxy; its ``info`` is the SQLAlchemy Connection's).

    Reads and writes run with the same BEGIN; IMMEDIATE only when the caller asked for a write transaction
    (``info["sqlite_begin"]``, set by Store.transaction).  A write that no reply promises to keep
    (``Store.transaction(durable=False)``: ``info["sqlite_sync"] = "NORMAL"``) commits without the WAL fsync
    (synchronous=NORMAL: still atomic, and ordered before every later FULL commit, which syncs the frames before
    it too); the level is the connection's, so it is set whenever it changes, except for a read-only transaction
    (``info["sqlite_read"]``), which commits nothing and leaves the level for the next write to set.
    """
    info = pooled.info
    dbapi = pooled.dbapi_connection
    if not info.get("sqlite_read"):
        sync = info.get("sqlite_sync", "FULL")
        if info.get("sqlite_sync_now", "FULL") != sync:
            dbapi.execute(_SYNC[sync])
            info["sqlite_sync_now"] = sync
    dbapi.execute(_BEGIN[info.get("sqlite_begin", "DEFERRED")])


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create the engine for ``url`` with the pragmas and pooling this project relies on."""
    if is_sqlite(url):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=60,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-65536")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        # The BEGIN is the dialect's (``do_begin``, called with the pooled connection, whose ``info`` is the
        # Connection's), not a "begin" event listener: a connection event would be the engine's only one, and any
        # makes SQLAlchemy run its event dispatch for every statement and transaction of the engine (about 20 us
        # per one-statement transaction, measured in docs/benchmarks.md).  Pool events ("connect") do not.
        engine.dialect.do_begin = _sqlite_begin
        return engine
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if os.environ.get("MAILSERVER_DB_NULLPOOL"):
        engine = create_engine(url, poolclass=NullPool)
    else:
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    if engine.dialect.driver == "psycopg":
        _tune_psycopg(engine)
    return engine


class PlainReaders:
    """One plain SQLite connection per thread for the one-statement reads made outside any transaction (the checks'
    account versions, ``storage/checkstate.versions_sqlite``).

    Such a read from the engine's pool pays for a checkout and a check-in with its reset (a ROLLBACK), about twice
    the statement itself (15 against 5 us in all, docs/benchmarks.md); these connections are opened once per thread
    (the pools' threads live as long as the server), in autocommit mode (each statement reads its own snapshot of
    the latest commit, as a pooled connection in autocommit does) and with ``query_only`` on, so nothing can write
    through them.  :meth:`close` (``Store.dispose``, with the engine's) closes them all.
    """

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def for_url(url: str) -> "PlainReaders | None":
        """For a SQLite file database; None otherwise (PostgreSQL, an in-memory database)."""
        if not is_sqlite(url) or "///" not in url:
            return None
        path = url.split("///", 1)[1].split("?", 1)[0]
        return PlainReaders(path) if path and path != ":memory:" else None

    def connection(self) -> sqlite3.Connection | None:
        """This thread's connection (opened at its first use); None once closed."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                return None
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA query_only=ON")
                conn.execute("PRAGMA busy_timeout=30000")
            except BaseException:
                conn.close()
                raise
            self._all.append(conn)
        self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


# ------------------------------------------------------------------------------------------ PostgreSQL (psycopg 3)
#
# Every command psycopg sends is a round trip to the server, and a round trip costs the server process more CPU than
# the statement it carries (a send, a poll, a wake-up, the GIL given up and taken back, and the PostgreSQL backend's
# own work on the same cores).  Before these hooks an IMAP operation sent 11.5 commands, of which only 4.7 were its
# statements: the pool's pre-ping (an empty query at every checkout), psycopg's BEGIN before the first statement of
# every transaction, read-only ones included, and their COMMIT or ROLLBACK (a ROLLBACK also makes psycopg forget every
# prepared statement of the connection and send DEALLOCATE ALL).  Two hooks remove those:
#
# * Liveness at checkout without a round trip (:func:`_pg_checkout`, instead of ``pool_pre_ping``): an idle
#   connection whose server went away (restart, ``pg_terminate_backend``, an idle timeout) has data or an EOF
#   waiting on its socket, so a socket that polls readable (or a connection psycopg knows is closed) gets the real
#   ping, and a connection that fails it is replaced (``DisconnectionError``: the pool connects anew).  A healthy
#   idle connection has nothing to read: no ping.
# * BEGIN only when a transaction writes (:class:`_LazyBeginCursor`): every transaction starts in psycopg's
#   autocommit mode, so its plain SELECTs run without BEGIN; the first statement that is not a plain SELECT (an
#   INSERT/UPDATE/DELETE, SET LOCAL, SAVEPOINT, a SELECT ... FOR UPDATE, pg_notify, an advisory lock, nextval ...)
#   switches the connection back to transactions, so psycopg sends BEGIN right before it and COMMIT/ROLLBACK at the
#   end as before.  Under READ COMMITTED (the only level used) each statement reads its own snapshot whether or not
#   a BEGIN came first, so the reads that ran before the first write see exactly what they would have seen inside
#   the transaction, and everything from the first write to the commit is one transaction as before: atomicity, row
#   locks and the notify-in-transaction guarantee (storage/pgnotify.py) are unchanged.  The check is in the cursor
#   class (``cursor_factory``), so statements sent on a raw DBAPI cursor (storage/messages.py's UID reservation) are
#   seen too.  A connection the application itself put in AUTOCOMMIT (``isolation_level``) is left alone.

#: Words in a SELECT that make it more than a read (locks kept to the commit, side effects): it opens the
#: transaction like a write.
_NOT_PLAIN = ("for update", "for share", "for no key update", "for key share", "pg_notify", "notify", "advisory",
              "nextval", "setval", "set_config", "pg_terminate", "pg_cancel", "txid_current",
              "pg_current_xact", "into")
_plain_cache: dict[str, bool] = {}


def plain_read(statement) -> bool:
    """Whether ``statement`` is a SELECT that only reads (may run outside a transaction under READ COMMITTED)."""
    if not isinstance(statement, str):
        if isinstance(statement, bytes):
            statement = statement.decode("utf-8", "replace")
        else:  # psycopg.sql.Composed and the like: not worth guessing
            return False
    known = _plain_cache.get(statement)
    if known is not None:
        return known
    low = statement.lstrip(" \t\r\n(").lower()
    plain = low.startswith("select") and ";" not in low and not any(w in low for w in _NOT_PLAIN)
    if len(_plain_cache) > 4096:
        _plain_cache.clear()
    _plain_cache[statement] = plain
    return plain


def _cursor_classes():
    import psycopg

    class _LazyBeginCursor(psycopg.Cursor):
        """A cursor that opens the connection's deferred transaction before the first statement that is not a plain
        read (see the notes above)."""

        def execute(self, query, params=None, **kw):
            conn = self.connection
            if conn.autocommit and getattr(conn, _LAZY, False) and not plain_read(query):
                _open_transaction(conn)
            return super().execute(query, params, **kw)

        def executemany(self, query, params_seq, **kw):
            conn = self.connection
            if conn.autocommit and getattr(conn, _LAZY, False):
                _open_transaction(conn)
            return super().executemany(query, params_seq, **kw)

        def copy(self, statement, params=None, **kw):
            conn = self.connection
            if conn.autocommit and getattr(conn, _LAZY, False):
                _open_transaction(conn)
            return super().copy(statement, params, **kw)

    class _LazyBeginServerCursor(psycopg.ServerCursor):
        """A named (server-side) cursor needs a transaction: it always opens the deferred one."""

        def execute(self, query, params=None, **kw):
            conn = self.connection
            if conn.autocommit and getattr(conn, _LAZY, False):
                _open_transaction(conn)
            return super().execute(query, params, **kw)

    return _LazyBeginCursor, _LazyBeginServerCursor


#: Attribute of a psycopg connection: True while its autocommit mode is ours (a transaction whose BEGIN waits for
#: its first write), not the application's.
_LAZY = "_mailserver_lazy_begin"


def _open_transaction(conn) -> None:
    conn.autocommit = False  # idle: allowed; psycopg sends BEGIN before the statement about to run
    setattr(conn, _LAZY, False)


def _pg_readable(fd: int) -> bool:
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _tune_psycopg(engine: Engine) -> None:
    import psycopg
    from sqlalchemy import exc

    cursor_class, server_cursor_class = _cursor_classes()
    idle = psycopg.pq.TransactionStatus.IDLE

    @event.listens_for(engine, "connect")
    def _pg_connect(dbapi_conn, _record):
        dbapi_conn.cursor_factory = cursor_class
        dbapi_conn.server_cursor_factory = server_cursor_class

    @event.listens_for(engine, "checkout")
    def _pg_checkout(dbapi_conn, _record, _proxy):
        if dbapi_conn.closed or dbapi_conn.broken:
            raise exc.DisconnectionError("connection closed")
        if not _pg_readable(dbapi_conn.fileno()):
            return  # idle and nothing from the server: alive as far as a ping could tell without waiting
        try:  # something came while it was idle (an error before the server closed it, or a notice): ask
            dbapi_conn.execute(";")
            if dbapi_conn.info.transaction_status != idle:
                dbapi_conn.rollback()
        except psycopg.Error as e:
            raise exc.DisconnectionError(f"connection lost while idle: {e}") from e

    @event.listens_for(engine, "begin")
    def _pg_begin(conn):
        dbapi_conn = conn.connection.driver_connection
        if not dbapi_conn.autocommit:
            if dbapi_conn.info.transaction_status == idle:
                dbapi_conn.autocommit = True
                setattr(dbapi_conn, _LAZY, True)
        # else: autocommit already, either ours from the previous transaction (still flagged) or the application's

    @event.listens_for(engine, "checkin")
    def _pg_checkin(dbapi_conn, _record):
        # Leave the connection as SQLAlchemy knows it (its own isolation level handling expects autocommit off).
        if dbapi_conn is not None and getattr(dbapi_conn, _LAZY, False):
            setattr(dbapi_conn, _LAZY, False)
            if not dbapi_conn.closed and dbapi_conn.info.transaction_status == idle:
                dbapi_conn.autocommit = False

    dialect = engine.dialect
    set_level = dialect.set_isolation_level

    def set_isolation_level(dbapi_conn, level):
        # The application chooses the mode from here on (AUTOCOMMIT or a level): not ours any more.
        if getattr(dbapi_conn, _LAZY, False):
            setattr(dbapi_conn, _LAZY, False)
            if dbapi_conn.info.transaction_status == idle:
                dbapi_conn.autocommit = False
        set_level(dbapi_conn, level)

    dialect.set_isolation_level = set_isolation_level
