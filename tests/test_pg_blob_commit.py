"""DatabaseBlobStore on PostgreSQL: a body's own commit is not flushed (synchronous_commit off for that one
statement's transaction); the setting never outlives it, so the delivery commit naming the body is flushed as
before and flushes the body with it (storage/blobs.py).  Needs MAILSERVER_TEST_DATABASE_URL."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import event

from tests import harness

pytestmark = pytest.mark.skipif(not harness.test_database_url(), reason="MAILSERVER_TEST_DATABASE_URL not set")


@pytest.fixture
def pg():
    from storage import migrate
    from storage.db import make_engine

    base = harness.test_database_url()
    url = harness.fresh_pg_url(base)
    eng = make_engine(url, pool_size=1)  # one pooled connection: whatever a statement left set, the next one sees
    try:
        migrate.upgrade(eng)
        yield eng
    finally:
        eng.dispose()
        harness.drop_pg_schema(base, url)


def _setting(eng) -> str:
    with eng.connect() as conn:
        return conn.exec_driver_sql("SELECT current_setting('synchronous_commit')").scalar()


def test_the_body_statement_commits_unflushed_and_leaves_the_connection_as_it_was(pg):
    from storage.blobs import _PG_PERSIST, DatabaseBlobStore

    assert _setting(pg) == "on"
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # The statement's own transaction sees the setting off (it is what its commit reads) ...
        seen = conn.exec_driver_sql(_PG_PERSIST + " RETURNING current_setting('synchronous_commit')",
                                    {"id": "0" * 64, "size": 1, "data": b"x", "created": 1.0}).scalar()
        assert seen == "off"
        # ... and the connection's next transaction is back to the server's setting.
        assert conn.exec_driver_sql("SELECT current_setting('synchronous_commit')").scalar() == "on"
    blobs = DatabaseBlobStore(pg)
    data = b"Subject: hi\r\n\r\nbody\r\n"
    ref = blobs.put(data)
    assert ref.id == hashlib.sha256(data).hexdigest() and blobs.read(ref.id) == data
    assert _setting(pg) == "on"
    assert blobs.put(data).id == ref.id and blobs.read(ref.id) == data  # the same content again: one row, kept
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), min(refcount) FROM blobs").one() == (2, 0)


def test_a_delivery_naming_the_body_still_commits_flushed(pg, tmp_path):
    from storage.blobs import DatabaseBlobStore
    from storage.records import Delivery
    from storage.store import Store
    from tests.harness import hasher

    store = Store(pg, DatabaseBlobStore(pg))
    store.add_domain("example.test")
    account = store.add_account("a@example.test", hasher().hash("x"))
    at_commit = []

    @event.listens_for(pg, "commit")
    def _commit(conn):
        at_commit.append(conn.exec_driver_sql("SELECT current_setting('synchronous_commit')").scalar())

    data = b"Subject: hi\r\n\r\nbody\r\n"
    ref = store.blobs.put(data)
    changed = store.deliver_batch([Delivery(account.id, ref, {"subject": "hi"}, mailbox="INBOX")])
    assert changed.value[0].ok and at_commit == ["on"]
    assert store.read_blob(ref.id) == data
