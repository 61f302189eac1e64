"""PostgreSQL: a write transaction sends its change events with pg_notify inside itself, so they commit with the data.

A real LISTEN connection checks what arrives.  Arrival is bounded, never timed: after each step a sentinel
notification is committed from another connection, and PostgreSQL delivers notifications in commit order, so
everything the step sent has arrived once the sentinel has.
"""

from __future__ import annotations

import json
import uuid

import pytest

from storage import mailboxes, migrate, pgnotify
from storage.blobs import FileBlobStore
from storage.changes import EXISTS, FLAGS, MAILBOX_CREATE, Change
from storage.db import make_engine
from storage.models import FLAG_DELETED, FLAG_SEEN
from storage.store import Changed, Delivery, QuotaExceeded, Store
from tests import harness

pytestmark = pytest.mark.postgres

PARSED = {"subject": "hi", "from_addr": "a@b", "header_size": 10}


class Listener:
    """A LISTEN connection that collects the changes one store sent."""

    def __init__(self, url: str, store: Store):
        import psycopg

        self.dsn = pgnotify._psycopg_dsn(url)
        self.origin = pgnotify.origin_for(store.engine)
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.channel = pgnotify.engine_channel(store.engine)
        self.conn.execute(f'LISTEN "{self.channel}"')
        self.pids: set[int] = set()

    def received(self) -> list[Change]:
        """The store's changes delivered so far (waits for a sentinel committed after them)."""
        import psycopg

        sentinel = "sentinel-" + uuid.uuid4().hex
        with psycopg.connect(self.dsn, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, %s)", (self.channel, json.dumps({"o": sentinel, "c": []})))
        out: list[Change] = []
        for n in self.conn.notifies(timeout=10):
            origin, changes = pgnotify.decode(n.payload)
            if origin == sentinel:
                return out
            if origin == self.origin:  # other tests may share the database and the channel
                self.pids.add(n.pid)
                out.extend(changes)
        raise AssertionError("the sentinel notification did not arrive")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def pg(tmp_path):
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        store = Store(engine, FileBlobStore(tmp_path / "blobs"))
        store.add_domain("example.test")
        listener = Listener(url, store)
        try:
            yield store, listener
        finally:
            listener.close()
    finally:
        engine.dispose()
        harness.drop_pg_schema(base, url)


def _blob(store: Store, n: int):
    return store.blobs.put(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))


def test_each_write_notifies_exactly_the_changes_it_returns(pg):
    """Every kind of mutation: what LISTEN receives is the Changed.changes the caller publishes locally."""
    store, listen = pg
    acct = store.add_account("alice@example.test", "x")
    assert listen.received() == []  # a plain write (no change events) sends nothing
    inbox = store.get_mailbox(acct.id, "INBOX")
    steps = [
        lambda: store.create_mailbox(acct.id, "Projects/2026"),
        lambda: store.deliver_batch([Delivery(acct.id, _blob(store, i), PARSED) for i in range(3)]),
        lambda: store.append_many(acct.id, inbox.id, [(_blob(store, 9), PARSED, FLAG_SEEN, ("$Label1",), None)]),
        lambda: store.set_flags(inbox.id, [1, 2], "add", FLAG_DELETED),
        lambda: store.expunge(inbox.id),
        lambda: store.copy(inbox.id, [3], store.get_mailbox(acct.id, "Archive").id, move=True),
        lambda: store.rename_mailbox(acct.id, "Projects", "Work"),
        lambda: store.set_subscribed(acct.id, "Work", False),
        lambda: store.delete_mailbox(acct.id, "Work/2026"),
    ]
    for step in steps:
        changed = step()
        assert isinstance(changed, Changed) and changed.changes
        assert listen.received() == changed.changes


def test_a_batch_larger_than_one_payload_arrives_whole(pg):
    """Many changes in one transaction are split under PostgreSQL's payload limit; all of them arrive."""
    store, listen = pg
    acct = store.add_account("bob@example.test", "x")
    changed = store.deliver_batch([Delivery(acct.id, _blob(store, i), PARSED, keywords=("$Label1",) * 3)
                                   for i in range(300)])
    got = listen.received()
    assert len(got) == 300 and got == changed.changes
    assert all(c.kind == EXISTS for c in got)


def test_the_notification_is_sent_by_the_writing_transaction(pg):
    """Sent on the transaction's own connection, delivered only once it committed, together with its rows."""
    store, listen = pg
    acct = store.add_account("carol@example.test", "x")
    with store.transaction() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        changed = store.announce(conn, mailboxes.create_mailbox(conn, acct.id, "Inside"))
        assert listen.received() == []  # nothing before the commit
    assert listen.received() == changed.changes
    assert listen.pids == {pid}
    assert store.get_mailbox(acct.id, "Inside") is not None


def test_a_transaction_that_rolls_back_sends_nothing(pg):
    store, listen = pg
    acct = store.add_account("dave@example.test", "x")
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.announce(conn, mailboxes.create_mailbox(conn, acct.id, "Doomed"))
            raise RuntimeError("fails before the commit")
    assert listen.received() == []
    assert store.get_mailbox(acct.id, "Doomed") is None
    # A store method that fails (over quota) sends nothing either, and the next write still does.
    store.set_quota("dave@example.test", 1)
    inbox = store.get_mailbox(acct.id, "INBOX")
    with pytest.raises(QuotaExceeded):
        store.append_many(acct.id, inbox.id, [(_blob(store, 1), PARSED, 0, (), None)])
    assert listen.received() == []
    changed = store.set_flags(inbox.id, [1], "add", FLAG_SEEN)  # no such message: no change, nothing sent
    assert changed.changes == [] and listen.received() == []
    changed = store.create_mailbox(acct.id, "After")
    assert [c.kind for c in listen.received()] == [MAILBOX_CREATE]


def test_an_oversized_change_is_sent_without_keywords_instead_of_failing_the_write(pg):
    """pg_notify refuses payloads over 8000 bytes; the write must still commit (the rows keep the keywords)."""
    store, listen = pg
    acct = store.add_account("erin@example.test", "x")
    res = store.deliver_batch([Delivery(acct.id, _blob(store, 1), PARSED)]).value[0]
    many = tuple(f"$Keyword{i:04d}" for i in range(1000))
    listen.received()
    changed = store.set_flags(res.mailbox_id, [res.uid], "add", 0, many)
    got = listen.received()
    assert [(c.kind, c.uid, c.keywords) for c in got] == [(FLAGS, res.uid, ())]
    assert store.get_messages(res.mailbox_id, [res.uid])[0].keywords == changed.changes[0].keywords == many


def test_the_bridge_drops_its_own_notifications_unparsed_and_publishes_the_others():
    """A process hears its own NOTIFYs too: those are dropped (before any JSON parsing), the others' are published
    to the local hub; no database needed."""

    class Engine:  # only an origin key here
        pass

    class Reactor:
        def callFromThread(self, f, *args):
            f(*args)

    class Hub:
        def __init__(self):
            self.got = []

        def publish_remote(self, changes):
            self.got.extend(changes)

    hub = Hub()
    bridge = pgnotify.PgNotifyBridge(Reactor(), Engine(), hub)
    change = Change(EXISTS, 7, 3, uid=1, modseq=2, keywords=("$Junk",))
    for payload in pgnotify.encode_batches([change], bridge.origin):
        bridge._received(payload)
    assert hub.got == [] and bridge.received == 0
    for payload in pgnotify.encode_batches([change], "another process"):
        bridge._received(payload)
    assert hub.got == [change] and bridge.received == 1
    bridge._received("not json")  # logged and ignored
    assert bridge.received == 1
