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


def test_a_delivery_batch_holds_the_mailbox_row_lock_for_three_round_trips(pg, tmp_path):
    """From the UID reservation (the mailbox row's lock, which every other delivery to the mailbox waits for) to the
    COMMIT: the reservation, one pipeline (blob references, message rows, account usage, pg_notify), the COMMIT.
    Counted in libpq's own protocol trace: each Sync the client sends ends one round trip."""
    from storage.blobs import DatabaseBlobStore
    from storage.records import Delivery
    from storage.store import Store
    from tests.harness import hasher

    store = Store(pg, DatabaseBlobStore(pg))
    store.add_domain("example.test")
    account = store.add_account("a@example.test", hasher().hash("x"))
    store.create_mailbox(account.id, "Other")
    refs = [store.blobs.put(b"Subject: m%d\r\n\r\nbody\r\n" % i) for i in range(3)]
    trace = tmp_path / "libpq.trace"
    with pg.connect() as conn:  # the pool's one connection: the delivery below runs on it
        driver = conn.connection.driver_connection
    with open(trace, "w") as f:
        driver.pgconn.trace(f.fileno())
        try:
            changed = store.deliver_batch([Delivery(account.id, refs[0], {"subject": "a"}),
                                           Delivery(account.id, refs[1], {"subject": "b"}, mailbox="Other"),
                                           Delivery(account.id, refs[2], {"subject": "c"})])
        finally:
            driver.pgconn.untrace()
    assert [r.ok for r in changed.value] == [True] * 3
    # (time, F|B, length, message, fields...): a run of frontend messages is one round trip
    sent = [w[1:5] + [""] * (5 - len(w)) for w in (line.split("\t") for line in trace.read_text().splitlines())]
    first = next(i for i, w in enumerate(sent) if w[0] == "F" and "UPDATE mailboxes" in w[3])
    commit = next(i for i, w in enumerate(sent) if w[0] == "F" and w[2] == "Query" and w[3].strip() == "\"COMMIT\"")
    window = sent[first:commit]
    trips = sum(1 for i, w in enumerate(window) if w[0] == "F" and (i == 0 or window[i - 1][0] == "B"))
    # two mailboxes: two reservations, then the one pipeline, then the COMMIT
    assert trips == 3, window
    assert any("pg_notify" in w[3] for w in window)
