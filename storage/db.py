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

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Reads run with the same BEGIN; IMMEDIATE only when the caller asked for a write transaction.
            mode = conn.info.get("sqlite_begin", "DEFERRED")
            # A write that no reply promises to keep (Store.transaction(durable=False)) commits without the WAL
            # fsync (synchronous=NORMAL: still atomic, and ordered before every later FULL commit, which syncs
            # the frames before it too); the level is the connection's, so set it whenever it changes.
            sync = conn.info.get("sqlite_sync", "FULL")
            if conn.info.get("sqlite_sync_now", "FULL") != sync:
                conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                conn.info["sqlite_sync_now"] = sync
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kwargs = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": pool_size}
    if os.environ.get("MAILSERVER_DB_NULLPOOL"):
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, **kwargs)
