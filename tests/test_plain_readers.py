"""storage/db.PlainReaders: the per-thread plain SQLite connections of the one-statement reads outside a transaction
(the checks' account versions): they see every commit at once, cannot write, and are closed with the store."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from storage import checkstate
from storage.db import PlainReaders
from tests import harness


@pytest.fixture
def store(tmp_path):
    with harness.migrated_store(tmp_path, domains=("example.test",)) as s:
        yield s
        s.dispose()


def test_only_sqlite_files_get_plain_readers(tmp_path):
    assert PlainReaders.for_url(f"sqlite:///{tmp_path}/x.sqlite3").path == f"{tmp_path}/x.sqlite3"
    assert PlainReaders.for_url("sqlite://") is None
    assert PlainReaders.for_url("sqlite:///:memory:") is None
    assert PlainReaders.for_url("postgresql+psycopg://postgres@127.0.0.1/test") is None


def test_a_version_bump_committed_elsewhere_is_seen_by_the_next_read(store):
    acct = store.add_account("a@example.test", "x")
    before = store.check_versions([acct.id])[acct.id]
    assert store.check_versions([acct.id])[acct.id] == before  # the same thread's connection, reused
    with store.transaction() as conn:
        checkstate.bump(conn, acct.id, "rules")
    after = store.check_versions([acct.id])[acct.id]
    assert after != before and after.rules != before.rules


def test_each_thread_has_its_own_connection_and_none_can_write(store):
    acct = store.add_account("a@example.test", "x")
    conns = []

    def read():
        store.check_versions([acct.id])
        conns.append(store.plain_readers.connection())

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read()
    assert len({id(c) for c in conns}) == 4
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        conns[-1].execute("DELETE FROM accounts")
    assert store.get_account("a@example.test") is not None


def test_dispose_closes_them_and_later_reads_use_the_pool(store):
    acct = store.add_account("a@example.test", "x")
    store.check_versions([acct.id])
    conn = store.plain_readers.connection()
    store.plain_readers.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    assert store.plain_readers.connection() is None
    assert acct.id in store.check_versions([acct.id])  # falls back to a pooled connection
