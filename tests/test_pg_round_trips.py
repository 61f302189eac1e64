"""PostgreSQL connection handling of storage/db.py: no BEGIN for reads, BEGIN before the first write (also on a raw
DBAPI cursor), the application's AUTOCOMMIT left alone, and an idle connection the server ended replaced at checkout
without a ping per checkout (MAILSERVER_TEST_DATABASE_URL)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from storage.db import make_engine, plain_read
from tests import harness

pytestmark = pytest.mark.skipif(not harness.test_database_url(), reason="MAILSERVER_TEST_DATABASE_URL not set")

IDLE, INTRANS = 0, 2


@pytest.fixture
def engine():
    base = harness.test_database_url()
    url = harness.fresh_pg_url(base)
    eng = make_engine(url, pool_size=2)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    yield eng
    eng.dispose()
    harness.drop_pg_schema(base, url)


def _status(conn) -> int:
    return int(conn.connection.driver_connection.info.transaction_status)


def _rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, v FROM t ORDER BY id")).all()


def test_reads_send_no_begin(engine):
    with engine.begin() as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert _status(conn) == IDLE  # no transaction was opened for the read
        conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
        assert _status(conn) == INTRANS  # the first write opened it
        conn.execute(text("SELECT count(*) FROM t")).scalar()
    assert _rows(engine) == [(1, "a")]


def test_write_transaction_still_atomic(engine):
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
            conn.execute(text("INSERT INTO t VALUES (2, 'b')"))
            raise RuntimeError("abort")
    assert _rows(engine) == []


def test_raw_cursor_write_opens_the_transaction(engine):
    """storage/messages.py reserves UIDs on the transaction's raw DBAPI cursor: that write must be in the
    transaction too (a rollback undoes it)."""
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            cur = conn.connection.cursor()
            cur.execute("INSERT INTO t VALUES (%s, %s)", (1, "raw"))
            cur.close()
            assert _status(conn) == INTRANS
            raise RuntimeError("abort")
    assert _rows(engine) == []


def test_select_for_update_keeps_its_lock(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
    with engine.begin() as conn:
        conn.execute(text("SELECT v FROM t WHERE id = 1 FOR UPDATE")).scalar()
        assert _status(conn) == INTRANS  # the row lock lasts until the commit
        with engine.connect() as other:
            other.exec_driver_sql("SET lock_timeout = '100ms'")
            with pytest.raises(Exception, match="lock"):
                other.execute(text("UPDATE t SET v = 'b' WHERE id = 1"))


def test_application_autocommit_left_alone(engine):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
        assert _status(conn) == IDLE  # committed on its own, as AUTOCOMMIT asks
    with engine.connect() as conn:  # and the next user of the pooled connection gets transactions again
        conn.execute(text("INSERT INTO t VALUES (2, 'b')"))
        assert _status(conn) == INTRANS
        conn.rollback()
    assert _rows(engine) == [(1, "a")]


def test_terminated_idle_connection_replaced_at_checkout(engine):
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with make_engine(harness.test_database_url(), pool_size=1).connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        admin.commit()
        deadline = time.monotonic() + 10
        while admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    time.sleep(0.1)
    with engine.connect() as conn:  # the pool's connection is dead: checkout noticed and connected anew
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid


def test_plain_read():
    assert plain_read("SELECT a FROM t WHERE id = %(id)s")
    assert plain_read("  (SELECT 1) UNION (SELECT 2)")
    for sql in ("INSERT INTO t VALUES (1)", "SELECT * FROM t FOR UPDATE SKIP LOCKED", "SELECT pg_notify('c', 'p')",
                "SELECT pg_try_advisory_xact_lock(1)", "SELECT nextval('s')", "WITH d AS (DELETE FROM t) SELECT 1",
                "SET LOCAL synchronous_commit = off", "SAVEPOINT sa_1", "SELECT 1; DELETE FROM t",
                "SELECT * INTO t2 FROM t"):
        assert not plain_read(sql), sql


def test_pg_login_failures_clear_keeps_the_ip():
    """mailserver/clusterstate_pg.py's one-statement clear: the account's failures go, the address's stay."""
    from types import SimpleNamespace

    from mailserver.clusterstate_pg import PgLoginFailures
    from storage import migrate

    base = harness.test_database_url()
    url = harness.fresh_pg_url(base)
    eng = make_engine(url, pool_size=2)
    try:
        migrate.upgrade(eng)
        limits = SimpleNamespace(auth_failure_window=600, auth_max_failures_per_ip=10,
                                 auth_max_failures_per_account=10)
        f = PgLoginFailures(None, eng, None, None, limits)
        for t in range(3):
            f._add_blocking(f._params("198.51.100.7", "a@x", float(t)))
        f._add_blocking(f._params("198.51.100.8", "a@x", 3.0))
        assert f._counts_blocking(f._params("198.51.100.7", "a@x", 4.0)) == (3, 4)
        assert f._clear_blocking(f._params("198.51.100.7", "a@x", 4.0)) == (3, 0)
        assert f._counts_blocking(f._params("198.51.100.7", "a@x", 5.0)) == (3, 0)
        assert f._counts_blocking(f._params("198.51.100.8", "a@x", 5.0)) == (1, 0)
    finally:
        eng.dispose()
        harness.drop_pg_schema(base, url)


def test_a_transaction_not_flushed_sets_synchronous_commit_off_for_its_commit_only(tmp_path):
    """``Store.transaction(durable=False)`` commits with synchronous_commit off (set in its pg_notify statement when
    it notifies, by SET LOCAL when it wrote without notifying, not at all when it only read: no BEGIN then);
    durable transactions keep the server's setting."""
    from sqlalchemy import event

    from storage import migrate
    from storage.blobs import FileBlobStore
    from storage.changes import EXISTS, Change
    from storage.store import Changed, Store

    base = harness.test_database_url()
    url = harness.fresh_pg_url(base)
    eng = make_engine(url, pool_size=2)
    try:
        migrate.upgrade(eng)
        store = Store(eng, FileBlobStore(tmp_path / "blobs"))
        seen = []

        @event.listens_for(eng, "commit")
        def _at_commit(conn):
            seen.append((_status(conn), conn.exec_driver_sql("SELECT current_setting('synchronous_commit')").scalar()))

        def write(conn):
            conn.exec_driver_sql("CREATE TEMPORARY TABLE w (i integer) ON COMMIT DROP")

        with store.transaction(durable=False) as conn:  # writes and notifies
            write(conn)
            store.announce(conn, Changed(None, [Change(EXISTS, 1, 1, uid=1)]))
        with store.transaction(durable=False) as conn:  # writes, nothing to notify
            write(conn)
        with store.transaction(durable=False) as conn:  # only reads
            conn.exec_driver_sql("SELECT 1").scalar()
        with store.transaction() as conn:  # durable
            write(conn)
        assert seen == [(INTRANS, "off"), (INTRANS, "off"), (IDLE, "on"), (INTRANS, "on")]
    finally:
        eng.dispose()
        harness.drop_pg_schema(base, url)
