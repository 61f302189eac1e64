"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (scale-out).

SQLite notes (see shared notes): every write transaction starts with ``BEGIN IMMEDIATE`` so that it takes the write lock up
front (a deferred transaction that upgrades fails with "database is locked" regardless of busy_timeout); WAL with
``synchronous=FULL`` so a commit that returned is on disk before we answer "250" or "OK".
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


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
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kwargs = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": pool_size}
    if os.environ.get("MAILSERVER_DB_NULLPOOL"):
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, **kwargs)
